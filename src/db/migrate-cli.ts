import { loadConfig, redactUrl } from '../config';
import { createDb } from './knex';
import { migrateLatest } from './migrate';
import { verifyShardCount } from './schema-check';

/** `npm run migrate`: applies pending migrations to DATABASE_URL and checks SHARD_COUNT. */
async function main(): Promise<void> {
  const config = loadConfig();
  const db = createDb({ url: config.databaseUrl, poolMax: 1 });
  try {
    const applied = await migrateLatest(db);
    console.log(JSON.stringify({ msg: 'migrations applied', database: redactUrl(config.databaseUrl), applied }));
    await verifyShardCount(db, config.shardCount);
  } finally {
    await db.destroy();
  }
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? e.message : String(e));
  process.exit(1);
});
