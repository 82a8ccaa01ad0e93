import { isAppError } from './errors';

/**
 * What a log line may say about a failure: its class and codes, never its message when the
 * message is not ours. Driver errors carry the SQL with its values (message texts, chat ids,
 * keys) and library errors echo their input; an AppError's message is written by us.
 */
export function errorFields(e: unknown): Record<string, unknown> {
  if (isAppError(e)) {
    const cause = (e as { cause?: unknown }).cause;
    return { name: e.name, code: e.code, message: e.message, ...(cause !== undefined ? { cause: errorFields(cause) } : {}) };
  }
  if (typeof e !== 'object' || e === null) return { name: typeof e };
  const x = e as { name?: unknown; code?: unknown; errno?: unknown; sqlState?: unknown; api_error?: { err_code?: unknown } };
  const out: Record<string, unknown> = { name: typeof x.name === 'string' ? x.name : 'Error' };
  if (typeof x.code === 'string' || typeof x.code === 'number') out.code = x.code;
  if (typeof x.errno === 'number') out.errno = x.errno;
  if (typeof x.sqlState === 'string') out.sqlState = x.sqlState;
  if (x.api_error && typeof x.api_error.err_code === 'number') out.apiErrCode = x.api_error.err_code;
  return out;
}
