import type { Knex } from 'knex';
import { AppError } from '../errors';

/**
 * Refuses to run when SHARD_COUNT disagrees with the modulus of the database's
 * generated `shard` column: two processes with different shard maps would both
 * believe they own the same rows.
 */
export async function verifyShardCount(db: Knex, shardCount: number): Promise<void> {
  const [rows] = (await db.raw(
    `SELECT GENERATION_EXPRESSION AS expr FROM information_schema.COLUMNS
      WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'telegram_notifications' AND COLUMN_NAME = 'shard'`,
  )) as [Array<{ expr: string | null }>];
  const expr = rows[0]?.expr;
  if (!expr) throw new AppError('SCHEMA_MISMATCH', 'telegram_notifications.shard is missing: run `npm run migrate`');
  const m = /(?:%|\bMOD)\s*(\d+)\s*$/i.exec(expr.replace(/[`()]/g, '').trim());
  const modulus = m ? Number(m[1]) : NaN;
  if (modulus !== shardCount) {
    throw new AppError(
      'SCHEMA_MISMATCH',
      `SHARD_COUNT=${shardCount} but the database computes shard as ${expr} (modulus ${modulus}); see README "Changing the shard count"`,
      { shardCount, modulus },
    );
  }
}
