import type { Knex } from 'knex';
import { migrations } from '../../migrations';

/** knex migration source over the explicit, append-only list in migrations/index.ts. */
class ListSource implements Knex.MigrationSource<string> {
  async getMigrations(): Promise<string[]> {
    return migrations.map((m) => m.name);
  }
  getMigrationName(name: string): string {
    return name;
  }
  async getMigration(name: string): Promise<Knex.Migration> {
    const m = migrations.find((x) => x.name === name);
    if (!m) throw new Error(`unknown migration ${name}`);
    return { up: m.up, down: m.down };
  }
}

const MIGRATION_CONFIG: Knex.MigratorConfig = {
  migrationSource: new ListSource(),
  tableName: 'knex_migrations',
  // DDL in MariaDB commits implicitly; per-migration transactions would only pretend.
  disableTransactions: true,
};

/** Applies every pending migration. Returns the names applied now. */
export async function migrateLatest(db: Knex): Promise<string[]> {
  const [, applied] = (await db.migrate.latest(MIGRATION_CONFIG)) as [number, string[]];
  return applied;
}

export async function migrateRollbackAll(db: Knex): Promise<void> {
  await db.migrate.rollback(MIGRATION_CONFIG, true);
}
