import { loadConfig, redactUrl } from '../config/core';
import { createLogger, knexLog } from '../log';
import { describeError } from '../errors';
import { checkDatabase } from './ensure';
import { createDb } from './knex';
import { migrateLatest } from './migrate';
import { verifyShardCount } from './schema-check';

/** `npm run migrate`: applies pending migrations to DATABASE_URL and checks SHARD_COUNT. JSON lines on stdout. */
async function main(): Promise<void> {
  const config = loadConfig();
  const log = createLogger({ level: config.logLevel });
  const db = createDb({ url: config.databaseUrl, poolMax: 1, log: knexLog(log) });
  try {
    // Like npm start: the default database is created if missing; an explicit one must exist.
    await checkDatabase(db, config.databaseUrl, !config.databaseUrlExplicit).catch((e: unknown) => {
      throw new Error(`DATABASE_URL: ${redactUrl(config.databaseUrl)}: ${describeError(e)}`);
    });
    const applied = await migrateLatest(db);
    log.info({ database: redactUrl(config.databaseUrl), applied }, 'migrations applied');
    await verifyShardCount(db, config.shardCount);
  } finally {
    await db.destroy();
  }
}

main().catch((e: unknown) => {
  process.stderr.write(
    `${JSON.stringify({ level: 60, time: new Date().toISOString(), msg: `migrate failed: ${describeError(e)}`, code: (e as { code?: string }).code })}\n`,
  );
  process.exit(1);
});
