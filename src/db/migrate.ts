import type { Knex } from 'knex';
import { migrations } from '../../migrations';

/** knex migration source over the explicit, append-only list in migrations/index.ts. */
class ListSource implements Knex.MigrationSource<string> {
  getMigrations(): Promise<string[]> {
    return Promise.resolve(migrations.map((m) => m.name));
  }
  getMigrationName(name: string): string {
    return name;
  }
  getMigration(name: string): Promise<Knex.Migration> {
    const m = migrations.find((x) => x.name === name);
    if (!m) return Promise.reject(new Error(`unknown migration ${name}`));
    return Promise.resolve({ up: m.up, down: m.down });
  }
}

const MIGRATION_CONFIG: Knex.MigratorConfig = {
  migrationSource: new ListSource(),
  tableName: 'knex_migrations',
  // DDL in MariaDB commits implicitly; per-migration transactions would only pretend.
  disableTransactions: true,
};

/**
 * Applies every pending migration. Returns the names applied now. Processes started
 * together race for knex's migration lock: the losers wait for the winner, then find
 * nothing left to do.
 */
export async function migrateLatest(db: Knex, waitForLockMs = 120_000): Promise<string[]> {
  const deadline = Date.now() + waitForLockMs;
  for (;;) {
    try {
      const [, applied] = (await db.migrate.latest(MIGRATION_CONFIG)) as [number, string[]];
      return applied;
    } catch (e) {
      if (!/already locked/i.test((e as Error).message ?? '') || Date.now() > deadline) throw e;
      await new Promise((r) => setTimeout(r, 250 + Math.random() * 250));
    }
  }
}

export async function migrateRollbackAll(db: Knex): Promise<void> {
  await db.migrate.rollback(MIGRATION_CONFIG, true);
}
