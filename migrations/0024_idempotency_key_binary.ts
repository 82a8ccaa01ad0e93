import type { Knex } from 'knex';

/**
 * Idempotency keys compare byte for byte. 0001 gave the column the table's
 * `utf8mb4_unicode_ci`, under which `Inv-XYZ` = `inv-xyz`, `cafe` = `café` and
 * `tok1` = `tok1 ` in the UNIQUE index: a second notification with such a key was
 * answered as a duplicate of another one and never stored. `utf8mb4_nopad_bin` compares
 * code points with no trailing-space padding (`utf8mb4_bin` in MariaDB is PAD SPACE, so
 * `tok1` = `tok1 ` there). Making a collation stricter cannot create duplicates, so this
 * runs on any existing table; re-running it changes nothing.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw('ALTER TABLE telegram_notifications MODIFY COLUMN idempotency_key VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin NULL');
}

export async function down(knex: Knex): Promise<void> {
  // Back to 0001's collation; fails (ER_DUP_ENTRY) if keys now differ only in case, accents or trailing spaces.
  await knex.raw('ALTER TABLE telegram_notifications MODIFY COLUMN idempotency_key VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci NULL');
}
