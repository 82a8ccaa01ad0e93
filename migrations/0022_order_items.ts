import type { Knex } from 'knex';

/**
 * The lines of an order: one row per product, with the quantity and the unit price at
 * order time (the product's price may change later). Deleting an order deletes its
 * lines; a product that was ever ordered cannot be deleted. The key columns take the
 * exact type of `orders.id` / `products.id`, so the foreign keys also work over legacy
 * tables with INT ids; a legacy `order_items` table is kept and completed.
 */
const COLUMNS: Array<[name: string, ddl: string]> = [
  ['quantity', 'INT UNSIGNED NOT NULL DEFAULT 1'],
  ['price', 'DECIMAL(12,2) NOT NULL DEFAULT 0'],
];

async function idType(knex: Knex, table: string): Promise<string> {
  const [rows] = (await knex.raw(
    "SELECT COLUMN_TYPE AS t FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND COLUMN_NAME = 'id'",
    [table],
  )) as [Array<{ t: string }>];
  const t = rows[0]?.t;
  if (!t) throw new Error(`0022_order_items: table ${table} has no id column; apply 0020/0021 first`);
  return t;
}

export async function up(knex: Knex): Promise<void> {
  if (await knex.schema.hasTable('order_items')) {
    for (const [name, ddl] of COLUMNS) {
      if (!(await knex.schema.hasColumn('order_items', name))) await knex.raw(`ALTER TABLE order_items ADD COLUMN \`${name}\` ${ddl}`);
    }
    return;
  }
  const orderId = await idType(knex, 'orders');
  const productId = await idType(knex, 'products');
  await knex.raw(`
    CREATE TABLE order_items (
      id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
      order_id ${orderId} NOT NULL,
      product_id ${productId} NOT NULL,
      quantity INT UNSIGNED NOT NULL DEFAULT 1,
      price DECIMAL(12,2) NOT NULL,
      UNIQUE INDEX uq_order_items_order_product (order_id, product_id),
      INDEX ix_order_items_product (product_id),
      CONSTRAINT fk_order_items_order FOREIGN KEY (order_id) REFERENCES orders (id) ON DELETE CASCADE,
      CONSTRAINT fk_order_items_product FOREIGN KEY (product_id) REFERENCES products (id) ON DELETE RESTRICT
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci`);
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTableIfExists('order_items');
}
