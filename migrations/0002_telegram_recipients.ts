import type { Knex } from 'knex';

/**
 * Chats that can no longer be reached (blocked, deactivated, kicked, not found) or that
 * moved (a group upgraded to a supergroup). Later notifications to an unreachable chat
 * fail at once without calling Telegram until an operator clears the row.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    CREATE TABLE telegram_recipients (
      chat_id BIGINT NOT NULL PRIMARY KEY,
      status ENUM('ok','blocked','deactivated','kicked','not_found','migrated') NOT NULL,
      reason VARCHAR(512) NULL,
      error_code VARCHAR(32) NULL,
      migrated_to_chat_id BIGINT NULL,
      unreachable_since DATETIME(3) NULL,
      updated_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
      INDEX ix_tr_status (status)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci`);
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTableIfExists('telegram_recipients');
}
