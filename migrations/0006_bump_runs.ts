import type { Knex } from 'knex';

/**
 * One row per bump run (timer or manual). A timer run is due when the last *finished*
 * timer run started at least BUMP_INTERVAL ago (database time), so a restart inside the
 * interval does not bump again and a process back from downtime runs at once.
 * `ads_leases` holds named database leases (the bump singleton until the KV leases of
 * the scale-out work replace it).
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    CREATE TABLE bump_runs (
      id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
      \`trigger\` ENUM('timer','manual') NOT NULL,
      instance_id VARCHAR(128) NOT NULL,
      started_at DATETIME(3) NOT NULL,
      finished_at DATETIME(3) NULL,
      bumped INT UNSIGNED NOT NULL DEFAULT 0,
      INDEX ix_br_due (\`trigger\`, finished_at, started_at)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci`);
  await knex.raw(`
    CREATE TABLE ads_leases (
      name VARCHAR(64) NOT NULL PRIMARY KEY,
      owner VARCHAR(128) NOT NULL,
      expires_at DATETIME(3) NOT NULL
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci`);
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTableIfExists('ads_leases');
  await knex.schema.dropTableIfExists('bump_runs');
}
