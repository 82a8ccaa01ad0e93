import { createConnection } from 'mysql2/promise';
import type { Knex } from './knex';

/** MariaDB's "Unknown database" (ER_BAD_DB_ERROR). */
const ER_BAD_DB_ERROR = 1049;

/** The database name in a mysql:// URL ('' when none). */
export function databaseName(url: string): string {
  return decodeURIComponent(new URL(url.replace(/^mariadb:/, 'mysql:')).pathname.replace(/^\//, ''));
}

/**
 * One round trip on the pool. A missing database is created when `createIfMissing`
 * (the default DATABASE_URL of a development setup); with an explicit URL a missing
 * database is an error to fix, not something to paper over.
 */
export async function checkDatabase(db: Knex, url: string, createIfMissing: boolean): Promise<'ok' | 'created'> {
  try {
    await db.raw('SELECT 1');
    return 'ok';
  } catch (e) {
    if ((e as { errno?: number }).errno !== ER_BAD_DB_ERROR) throw e;
    const name = databaseName(url);
    if (!createIfMissing)
      throw new Error(`database ${JSON.stringify(name)} does not exist; create it (CREATE DATABASE \`${name}\` CHARACTER SET utf8mb4) or fix the name`, {
        cause: e,
      });
    await createDatabase(url, name);
    await db.raw('SELECT 1');
    return 'created';
  }
}

async function createDatabase(url: string, name: string): Promise<void> {
  const u = new URL(url.replace(/^mariadb:/, 'mysql:'));
  const conn = await createConnection({
    host: u.hostname,
    port: u.port ? Number(u.port) : 3306,
    user: decodeURIComponent(u.username || 'root'),
    password: decodeURIComponent(u.password),
    connectTimeout: 4_000,
  });
  try {
    await conn.query(`CREATE DATABASE IF NOT EXISTS \`${name.replace(/`/g, '``')}\` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci`);
  } finally {
    await conn.end();
  }
}
