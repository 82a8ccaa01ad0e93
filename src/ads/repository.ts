import type { Knex } from '../db/knex';
import type { BumpTrigger } from '../db/models/bump-run';

/** A user's unread count and the highest message id the count saw. */
export interface UnreadEntry {
  count: number;
  /** Highest message id of the user when loaded: events up to it are already counted. */
  watermark: number;
}

/**
 * The ads tables' SQL, in one place (the pipeline's is in `src/outbox/repository.ts`).
 * Actors get this as a port, so their unit tests pass a fake.
 */
export class AdsRepository {
  constructor(private readonly db: Knex) {}

  /** Unread messages of one user, and the watermark the cache compares events with. */
  async loadUnread(userId: number): Promise<UnreadEntry> {
    const [rows] = (await this.db.raw('SELECT COALESCE(SUM(is_read = 0), 0) AS n, COALESCE(MAX(id), 0) AS w FROM messages WHERE recipient_id = ?', [userId])) as unknown as [
      Array<{ n: number | string; w: number | string }>,
    ];
    return { count: Number(rows[0]?.n ?? 0), watermark: Number(rows[0]?.w ?? 0) };
  }

  /** Milliseconds until the next timer bump run is due (≤ 0: due now), by the database clock. */
  async msUntilBumpDue(intervalMs: number): Promise<number> {
    const [rows] = (await this.db.raw(
      "SELECT TIMESTAMPDIFF(MICROSECOND, NOW(3), MAX(started_at) + INTERVAL ? MICROSECOND) AS us FROM bump_runs WHERE `trigger` = 'timer' AND finished_at IS NOT NULL",
      [intervalMs * 1000],
    )) as unknown as [Array<{ us: number | string | null }>];
    const us = rows[0]?.us;
    return us === null || us === undefined ? 0 : Number(us) / 1000;
  }

  /**
   * One bump run, recorded in `bump_runs`: every active auto-bump ad listed at least
   * `intervalMs` before the run started gets `bumped_at` = the start, in autocommitted
   * chunks of `chunk` rows (short row locks).
   */
  async runBump(o: { trigger: BumpTrigger; instanceId: string; intervalMs: number; chunk: number }): Promise<{ runId: number; bumped: number }> {
    const db = this.db;
    const [ins] = (await db.raw('INSERT INTO bump_runs (`trigger`, instance_id, started_at) VALUES (?, ?, NOW(3))', [o.trigger, o.instanceId])) as unknown as [{ insertId: number }];
    const runId = Number(ins.insertId);
    const [rows] = (await db.raw("SELECT DATE_FORMAT(started_at, '%Y-%m-%d %H:%i:%s.%f') AS s FROM bump_runs WHERE id = ?", [runId])) as unknown as [Array<{ s: string }>];
    const start = rows[0]!.s;
    let total = 0;
    for (;;) {
      const [res] = (await db.raw(
        `UPDATE advertisements SET bumped_at = ?
         WHERE is_active = 1 AND auto_bump = 1
           AND (bumped_at <= ? - INTERVAL ? MICROSECOND OR (bumped_at IS NULL AND created_at <= ? - INTERVAL ? MICROSECOND))
         LIMIT ?`,
        [start, start, o.intervalMs * 1000, start, o.intervalMs * 1000, o.chunk],
      )) as unknown as [{ affectedRows: number }];
      total += res.affectedRows;
      if (res.affectedRows < o.chunk) break;
    }
    await db.raw('UPDATE bump_runs SET finished_at = NOW(3), bumped = ? WHERE id = ?', [total, runId]);
    return { runId, bumped: total };
  }
}
