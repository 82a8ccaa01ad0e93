import type { Knex } from 'knex';

/**
 * Fencing for shard ownership. The KV lease decides who owns a shard; this row is what
 * the claim query checks, so a process that lost its lease (and has not noticed yet)
 * cannot claim the shard's rows. `epoch` grows on every change of owner.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    CREATE TABLE shard_owners (
      shard SMALLINT UNSIGNED NOT NULL PRIMARY KEY,
      owner VARCHAR(128) NULL,
      epoch BIGINT UNSIGNED NOT NULL DEFAULT 0,
      acquired_at DATETIME(3) NULL,
      INDEX ix_so_owner (owner)
    ) ENGINE=InnoDB`);
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTableIfExists('shard_owners');
}
