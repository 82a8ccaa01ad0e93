import knexFactory, { type Knex } from 'knex';
import { Model } from 'objection';

export type { Knex } from 'knex';

export interface DbOptions {
  url: string;
  poolMax?: number;
  /** knex's own warnings and errors (default: console); the composition root passes knexLog(log). */
  log?: Knex.Logger;
}

/**
 * A knex pool on MariaDB/MySQL. Every connection runs in UTC so that DATETIME
 * values written by us, by NOW(3) and by legacy producers mean the same instant.
 */
export function createDb(opts: DbOptions): Knex {
  const u = new URL(opts.url.replace(/^mariadb:/, 'mysql:'));
  const db = knexFactory({
    client: 'mysql2',
    ...(opts.log ? { log: opts.log } : {}),
    connection: {
      host: u.hostname,
      port: u.port ? Number(u.port) : 3306,
      user: decodeURIComponent(u.username || 'root'),
      password: decodeURIComponent(u.password),
      database: decodeURIComponent(u.pathname.replace(/^\//, '')) || 'shop_notify',
      timezone: 'Z',
      dateStrings: false,
      supportBigNumbers: true,
      bigNumberStrings: false,
      charset: 'utf8mb4',
    },
    pool: {
      min: 0,
      max: opts.poolMax ?? 8,
      afterCreate: (conn: { query: (sql: string, cb: (err: Error | null) => void) => void }, done: (err: Error | null, conn: unknown) => void) => {
        conn.query("SET time_zone = '+00:00'", (err) => done(err, conn));
      },
    },
  });
  Model.knex(db);
  return db;
}

/** Counts statements sent by one knex instance (for benchmarks and the status endpoint). */
export function countStatements(db: Knex): { readonly count: number } {
  const counter = { count: 0 };
  db.on('query', () => {
    counter.count++;
  });
  return counter;
}
