import { randomBytes } from 'node:crypto';
import { createDb, type Knex } from '../../src/db/knex';
import { migrateLatest } from '../../src/db/migrate';
import { createLogger, type Logger } from '../../src/log';

export const ROOT_DATABASE_URL = process.env.TEST_DATABASE_URL ?? 'mysql://root@127.0.0.1:3306/test';
export const NATS_URL = process.env.TEST_NATS_URL ?? 'nats://127.0.0.1:4222';

/** A fresh database per test file (unique name), migrated; `drop()` removes it. */
export interface TestDb {
  name: string;
  url: string;
  db: Knex;
  drop: () => Promise<void>;
}

export async function createTestDb(prefix = 't', opts: { migrate?: boolean } = {}): Promise<TestDb> {
  const name = `${prefix}_${Date.now().toString(36)}_${randomBytes(3).toString('hex')}`;
  const root = createDb({ url: ROOT_DATABASE_URL, poolMax: 1 });
  try {
    await root.raw(`CREATE DATABASE \`${name}\` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci`);
  } finally {
    await root.destroy();
  }
  const url = ROOT_DATABASE_URL.replace(/\/[^/]*$/, `/${name}`);
  const db = createDb({ url });
  if (opts.migrate !== false) await migrateLatest(db);
  let dropped = false;
  return {
    name,
    url,
    db,
    drop: async () => {
      if (dropped) return;
      dropped = true;
      await db.destroy();
      const r = createDb({ url: ROOT_DATABASE_URL, poolMax: 1 });
      try {
        await r.raw(`DROP DATABASE IF EXISTS \`${name}\``);
      } finally {
        await r.destroy();
      }
    },
  };
}

/** A unique token for subjects, stream names and instance ids in one test. */
export function uniq(prefix = 'x'): string {
  return `${prefix}${Date.now().toString(36)}${randomBytes(3).toString('hex')}`;
}

/** A logger that keeps its lines in memory (assert on them) and prints nothing. */
export function captureLogger(level = 'debug'): { log: Logger; lines: () => Array<Record<string, unknown>>; text: () => string } {
  const chunks: string[] = [];
  const log = createLogger({ level, destination: { write: (s: string) => void chunks.push(s) } });
  return {
    log,
    text: () => chunks.join(''),
    lines: () =>
      chunks
        .join('')
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as Record<string, unknown>),
  };
}

/** Resolves when `cond()` is true, polling every `everyMs`; rejects after `timeoutMs`. */
export async function waitFor(cond: () => boolean | Promise<boolean>, timeoutMs = 10_000, everyMs = 20, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await cond()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
