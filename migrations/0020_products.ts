import type { Knex } from 'knex';

/**
 * The shop's products: name, price and the path of the photo (resolved against
 * IMAGE_BASE_URL, or an absolute URL). If the legacy shop already has a `products`
 * table, it is kept and only the missing columns are added (nullable), so the shop's
 * own code keeps working.
 */
const COLUMNS: Array<[name: string, ddl: string]> = [
  ['name', "VARCHAR(255) NOT NULL DEFAULT ''"],
  ['price', 'DECIMAL(12,2) NOT NULL DEFAULT 0'],
  ['image_path', 'VARCHAR(1024) NULL'],
];

export async function up(knex: Knex): Promise<void> {
  if (await knex.schema.hasTable('products')) {
    for (const [name, ddl] of COLUMNS) {
      if (!(await knex.schema.hasColumn('products', name))) await knex.raw(`ALTER TABLE products ADD COLUMN \`${name}\` ${ddl}`);
    }
    return;
  }
  await knex.raw(`
    CREATE TABLE products (
      id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
      name VARCHAR(255) NOT NULL,
      price DECIMAL(12,2) NOT NULL,
      image_path VARCHAR(1024) NULL,
      created_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
      updated_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci`);
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTableIfExists('products');
}
