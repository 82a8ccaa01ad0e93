import type { Part } from './plan';
import type { OutboxRow } from './types';

/** A row being delivered: its plan, how far it got, what happened on the way. */
export interface Job {
  row: OutboxRow;
  parts: Part[] | null;
  /** Parts accepted (from progress on reload). */
  done: number;
  attempts: number;
  retryCount: number;
  plain: boolean;
  notes: string[];
  claimedAt: number;
  firstSentAt: number | null;
}

export function newJob(row: OutboxRow, now: number): Job {
  return {
    row,
    parts: null,
    done: row.progress?.done ?? 0,
    attempts: row.attempts,
    retryCount: row.retryCount,
    plain: row.plainText,
    notes: [],
    claimedAt: now,
    firstSentAt: null,
  };
}

/** How long a finished row is remembered: longer than any claim or reload takes. */
export const SEEN_FINISHED_MS = 60_000;

/** Inserts a job keeping row-id order: rows of one chat arrive in order, but recovery can interleave. */
export function insertInOrder(queue: Job[], job: Job): void {
  let i = queue.length;
  while (i > 0 && queue[i - 1]!.row.id > job.row.id) i--;
  queue.splice(i, 0, job);
}

/**
 * Which rows a sender holds and which it finished recently. After a (re)start the
 * recovery reload and the claimer's hand-over can carry the same row; once it was sent
 * and left its queue, only the finished set tells the second copy apart: a copy fetched
 * before the row finished is stale, one fetched after it is a new claim (an operator's
 * retry-failed).
 */
export class RowLedger {
  /** Ids of rows queued in this sender. */
  readonly live = new Set<number>();
  /** Rows finished here recently (id → when, in finishing order). */
  private readonly finished = new Map<number, number>();

  /** Takes the row in unless it is queued already or this copy was fetched before the row finished here. */
  admit(id: number, fetchedAt: number): boolean {
    const at = this.finished.get(id);
    if (this.live.has(id) || (at !== undefined && fetchedAt <= at)) return false;
    this.live.add(id);
    return true;
  }

  finish(id: number, now: number): void {
    this.live.delete(id);
    this.finished.delete(id);
    this.finished.set(id, now);
    for (const [old, at] of this.finished) {
      if (now - at < SEEN_FINISHED_MS) break;
      this.finished.delete(old);
    }
  }
}
