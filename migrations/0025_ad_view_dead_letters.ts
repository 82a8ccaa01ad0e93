import type { Knex } from 'knex';

/**
 * Views the counter refused, one row each, so no acknowledged view disappears without a
 * trace: `reason` is a stable code (see docs/integrity.md), `detail` one sentence,
 * `payload` the first 1 KiB of the offending JSON (the view itself, or the whole message
 * when it could not be read), `subject` and `stream_seq` where it came from. The counter
 * writes these rows in the same transaction as the good views of the batch, then acks.
 * Operators read them with SQL; nothing deletes them (prune by `created_at`).
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    CREATE TABLE ad_view_dead_letters (
      id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
      reason VARCHAR(32) NOT NULL,
      detail VARCHAR(255) NOT NULL,
      ad_id BIGINT UNSIGNED NULL,
      subject VARCHAR(255) NOT NULL,
      stream_seq BIGINT UNSIGNED NULL,
      payload VARBINARY(1024) NULL,
      created_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
      INDEX ix_avdl_created (created_at),
      INDEX ix_avdl_reason (reason, created_at)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci`);
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTableIfExists('ad_view_dead_letters');
}
