/**
 * Log fields for a failed database call. Never the error's message: mysql2 and knex put
 * the statement with its values in it (message text, keys, Telegram descriptions).
 */
export function dbErrorFields(e: unknown): { db_code?: string; errno?: number; sql_state?: string; error?: string } {
  const x = e as { code?: unknown; errno?: unknown; sqlState?: unknown; name?: unknown };
  const out: { db_code?: string; errno?: number; sql_state?: string; error?: string } = {};
  if (typeof x?.code === 'string') out.db_code = x.code;
  if (typeof x?.errno === 'number') out.errno = x.errno;
  if (typeof x?.sqlState === 'string') out.sql_state = x.sqlState;
  if (Object.keys(out).length === 0) out.error = e instanceof Error ? e.name : typeof e;
  return out;
}
