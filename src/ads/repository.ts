import type { Knex } from '../db/knex';

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
}
