import type { Knex } from 'knex';

/**
 * Unique views: one row per (ad, visitor hash, dedup window). The view counter inserts
 * with INSERT IGNORE and increments `advertisements.views_count` only by the rows it
 * actually inserted, so a redelivered or repeated view never counts twice.
 * `visitor_hash` is a salted SHA-256 prefix of the client IP (+ optional visitor id):
 * raw IPs are never stored. `window_no` = floor(view time in ms / VIEW_DEDUP_WINDOW_MS).
 * No foreign key: a check per row would cost more than the rows it rejects; views of
 * unknown ads are refused at the gateway and never increment anything.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    CREATE TABLE ad_views (
      ad_id BIGINT UNSIGNED NOT NULL,
      visitor_hash BINARY(16) NOT NULL,
      window_no INT UNSIGNED NOT NULL,
      created_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
      PRIMARY KEY (ad_id, visitor_hash, window_no),
      INDEX ix_av_window (window_no)
    ) ENGINE=InnoDB`);
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTableIfExists('ad_views');
}
