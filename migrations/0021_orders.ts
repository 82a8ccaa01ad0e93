import type { Knex } from 'knex';

/**
 * Customer orders. `telegram_notifications.order_id` points here (no foreign key: legacy
 * producers write that table). A legacy `orders` table is kept; missing columns are added.
 */
const COLUMNS: Array<[name: string, ddl: string]> = [
  ['customer_chat_id', 'BIGINT NULL'],
  ['customer_user_id', 'BIGINT NULL'],
  ['total', 'DECIMAL(12,2) NOT NULL DEFAULT 0'],
  ['status', "VARCHAR(32) NOT NULL DEFAULT 'new'"],
  ['created_at', 'DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3)'],
];

export async function up(knex: Knex): Promise<void> {
  if (await knex.schema.hasTable('orders')) {
    for (const [name, ddl] of COLUMNS) {
      if (!(await knex.schema.hasColumn('orders', name))) await knex.raw(`ALTER TABLE orders ADD COLUMN \`${name}\` ${ddl}`);
    }
    return;
  }
  await knex.raw(`
    CREATE TABLE orders (
      id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
      customer_chat_id BIGINT NULL,
      customer_user_id BIGINT NULL,
      total DECIMAL(12,2) NOT NULL DEFAULT 0,
      status VARCHAR(32) NOT NULL DEFAULT 'new',
      created_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
      updated_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
      INDEX ix_orders_status_created (status, created_at),
      INDEX ix_orders_customer_user (customer_user_id, created_at),
      INDEX ix_orders_customer_chat (customer_chat_id, created_at)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci`);
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTableIfExists('orders');
}
