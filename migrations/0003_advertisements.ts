import type { Knex } from 'knex';

/**
 * Ads of the marketplace. `views_count` is written only by the view counter (batched,
 * deduplicated); `bumped_at` only by the bump actor. The bump query walks
 * `ix_ads_bump (is_active, auto_bump, bumped_at)`.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    CREATE TABLE advertisements (
      id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
      owner_id BIGINT UNSIGNED NOT NULL,
      title VARCHAR(255) NOT NULL,
      is_active TINYINT(1) NOT NULL DEFAULT 1,
      auto_bump TINYINT(1) NOT NULL DEFAULT 0,
      bumped_at DATETIME(3) NULL,
      views_count BIGINT UNSIGNED NOT NULL DEFAULT 0,
      created_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
      INDEX ix_ads_owner (owner_id),
      INDEX ix_ads_bump (is_active, auto_bump, bumped_at)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci`);
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTableIfExists('advertisements');
}
