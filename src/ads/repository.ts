import type { Knex } from '../db/knex';
import type { BumpTrigger } from '../db/models/bump-run';
import { withDeadlockRetry } from '../db/retry';
import { deadLetterPayload, type DeadLetter } from './view-events';

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

  /** Resolves when the database answers a trivial query (the gateway's readiness check). */
  async ping(): Promise<void> {
    await this.db.raw('SELECT 1');
  }

  /** Whether an ad with this id exists (active or not). */
  async adExists(adId: number): Promise<boolean> {
    const row: unknown = await this.db('advertisements').where({ id: adId }).first('id');
    return !!row;
  }

  /** The ad's persisted view count (views still in the counters' batches not included); undefined when the ad does not exist. */
  async viewsCount(adId: number): Promise<number | undefined> {
    const row = await this.db('advertisements').where({ id: adId }).first<{ views_count: number | string } | undefined>('views_count');
    return row ? Number(row.views_count) : undefined;
  }

  /**
   * Takes the named lease in `ads_leases` when it is free or expired, or renews it when
   * `owner` holds it, for `ttlMs` from now by the database clock. Returns the holder
   * after the write: `owner` when this call took or renewed it.
   */
  async takeLease(name: string, owner: string, ttlMs: number): Promise<string | undefined> {
    // Assignments run left to right: `owner` is already the new value when `expires_at` is computed.
    await this.db.raw(
      `INSERT INTO ads_leases (name, owner, expires_at) VALUES (?, ?, NOW(3) + INTERVAL ? MICROSECOND)
       ON DUPLICATE KEY UPDATE
         owner = IF(owner = VALUES(owner) OR expires_at < NOW(3), VALUES(owner), owner),
         expires_at = IF(owner = VALUES(owner), VALUES(expires_at), expires_at)`,
      [name, owner, ttlMs * 1000],
    );
    const [rows] = (await this.db.raw('SELECT owner FROM ads_leases WHERE name = ?', [name])) as unknown as [Array<{ owner: string }>];
    return rows[0]?.owner;
  }

  /** Deletes the named lease if `owner` holds it (another holder's lease is left alone). */
  async releaseLease(name: string, owner: string): Promise<void> {
    await this.db.raw('DELETE FROM ads_leases WHERE name = ? AND owner = ?', [name, owner]);
  }

  /** Unread messages of one user, and the watermark the cache compares events with. */
  async loadUnread(userId: number): Promise<UnreadEntry> {
    const [rows] = (await this.db.raw('SELECT COALESCE(SUM(is_read = 0), 0) AS n, COALESCE(MAX(id), 0) AS w FROM messages WHERE recipient_id = ?', [
      userId,
    ])) as unknown as [Array<{ n: number | string; w: number | string }>];
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
    const [ins] = (await db.raw('INSERT INTO bump_runs (`trigger`, instance_id, started_at) VALUES (?, ?, NOW(3))', [o.trigger, o.instanceId])) as unknown as [
      { insertId: number },
    ];
    const runId = ins.insertId;
    const [rows] = (await db.raw("SELECT DATE_FORMAT(started_at, '%Y-%m-%d %H:%i:%s.%f') AS s FROM bump_runs WHERE id = ?", [runId])) as unknown as [
      Array<{ s: string }>,
    ];
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

  /**
   * Writes one batch of views in one transaction: locks the batch's ads (sorted, FOR UPDATE)
   * to see which exist, inserts the views of existing ads, increments their counts by the
   * rows actually inserted, and writes every dead letter (the ones given, plus AD_NOT_FOUND
   * for views of missing ads). Returns how many views were new and the dead letters written.
   * A deadlock or lock timeout runs the whole transaction again (nothing of it was committed).
   */
  async writeViews(
    views: ReadonlyArray<{ adId: number; visitor: string; window: number; subject?: string; seq?: number; ts?: number }>,
    deadIn: readonly DeadLetter[] = [],
  ): Promise<{ counted: number; dead: DeadLetter[] }> {
    const sorted = [...views].sort((a, b) => a.adId - b.adId || (a.visitor < b.visitor ? -1 : a.visitor > b.visitor ? 1 : 0) || a.window - b.window);
    const adIds = [...new Set(sorted.map((v) => v.adId))];
    return withDeadlockRetry(() =>
      this.db.transaction(async (trx) => {
        const dead = [...deadIn];
        let counted = 0;
        if (adIds.length > 0) {
          // Every value was validated (safe integers, 32 lowercase hex characters): literals are safe and
          // spare knex's placeholder substitution over 15,000 bindings.
          const [found] = (await trx.raw(`SELECT id FROM advertisements WHERE id IN (${adIds.join(',')}) ORDER BY id FOR UPDATE`)) as unknown as [
            Array<{ id: number | string }>,
          ];
          const exists = new Set(found.map((r) => Number(r.id)));
          const good = sorted.filter((v) => exists.has(v.adId));
          for (const v of sorted) {
            if (exists.has(v.adId)) continue;
            dead.push({
              reason: 'AD_NOT_FOUND',
              detail: `ad ${v.adId} does not exist`,
              adId: v.adId,
              subject: (v.subject ?? '').slice(0, 255),
              seq: v.seq ?? null,
              payload: deadLetterPayload(JSON.stringify({ ad_id: v.adId, visitor: v.visitor, ts: v.ts ?? null })),
            });
          }
          if (good.length > 0) {
            const values = good.map((v) => `(${v.adId},0x${v.visitor},${v.window})`).join(',');
            const [inserted] = (await trx.raw(`INSERT IGNORE INTO ad_views (ad_id, visitor_hash, window_no) VALUES ${values} RETURNING ad_id`)) as unknown as [
              Array<{ ad_id: number }>,
            ];
            if (inserted.length > 0) {
              const perAd = new Map<number, number>();
              for (const r of inserted) perAd.set(r.ad_id, (perAd.get(r.ad_id) ?? 0) + 1);
              const ids = [...perAd.keys()].sort((a, b) => a - b);
              const cases = ids.map((id) => `WHEN ${id} THEN ${perAd.get(id)}`).join(' ');
              await trx.raw(`UPDATE advertisements SET views_count = views_count + CASE id ${cases} ELSE 0 END WHERE id IN (${ids.join(',')})`);
              counted = inserted.length;
            }
          }
        }
        for (let i = 0; i < dead.length; i += 500) {
          const rows = dead.slice(i, i + 500).map((d) => ({
            reason: d.reason,
            detail: d.detail.slice(0, 255),
            ad_id: d.adId,
            subject: d.subject.slice(0, 255),
            stream_seq: d.seq,
            payload: d.payload,
          }));
          await trx('ad_view_dead_letters').insert(rows);
        }
        return { counted, dead };
      }),
    );
  }
}
