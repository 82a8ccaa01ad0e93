import type { Part } from './plan';
import { asPlainText, splitPart } from './replan';
import type { OutboxRow } from './types';
import { ClaimLeases, type LeaseEvidence } from './send-guard';

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
  /** What this process knows of the row's claim lease (the sender checks it before each send). */
  lease: LeaseEvidence;
}

/** `leaseMs`: the claim lease a fresh claim gave the row (a reload says what was left: `row.leaseLeftMs`). */
export function newJob(row: OutboxRow, now: number, leaseMs = Infinity): Job {
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
    lease: leaseEvidence(row, now, leaseMs),
  };
}

/** The claim lease a copy of a row shows: from the start of the claim or reload that fetched it. */
export function leaseEvidence(row: OutboxRow, now: number, leaseMs: number): LeaseEvidence {
  return { from: row.fetchedAt, ownMs: row.leaseLeftMs ?? leaseMs, seenAt: now };
}

/** Where a chat stands in its sender: what it waits for, if anything. */
export type ChatPhase = 'idle' | 'planning' | 'waiting' | 'bidding' | 'sending';

/** One chat in a sender: its FIFO of jobs (row-id order, retries included) and where it stands. */
export interface ChatQueue {
  id: number;
  queue: Job[];
  /** Not before this instant: a 429's retry_after or a retry backoff. */
  pausedUntil: number;
  pauseKind: 'none' | 'rate' | 'retry';
  phase: ChatPhase;
  cancelBid: (() => void) | undefined;
  /** The row the pending bid was made for (a row with a smaller id may arrive meanwhile). */
  bidRowId: number;
  timer: NodeJS.Timeout | undefined;
}

export function newChatQueue(id: number): ChatQueue {
  return { id, queue: [], pausedUntil: 0, pauseKind: 'none', phase: 'idle', cancelBid: undefined, bidRowId: 0, timer: undefined };
}

/**
 * Queues the rows the ledger admits, each in its chat's FIFO (created on first use).
 * Returns how many rows each chat received, so the caller counts them and moves those chats,
 * and the copies of rows this sender sent already (their `sent` outcome did not land: the
 * caller writes it again instead of sending). A copy of a row already queued is not queued
 * twice; it only refreshes what is known of the row's claim lease (claimed again after
 * the reaper freed it, or re-read).
 */
export function queueRows(
  chats: Map<number, ChatQueue>,
  ledger: RowLedger,
  rows: readonly OutboxRow[],
  now: number,
  leaseMs = Infinity,
): { touched: Map<ChatQueue, number>; sentAlready: OutboxRow[] } {
  const touched = new Map<ChatQueue, number>();
  const sentAlready: OutboxRow[] = [];
  for (const row of rows) {
    const verdict = ledger.admit(row);
    if (verdict === 'queued') {
      const job = chats.get(row.chatId)?.queue.find((j) => j.row.id === row.id);
      if (job) job.lease = ClaimLeases.newer(job.lease, leaseEvidence(row, now, leaseMs));
      continue;
    }
    if (verdict === 'sent') sentAlready.push(row);
    if (verdict !== 'new') continue;
    let c = chats.get(row.chatId);
    if (!c) chats.set(row.chatId, (c = newChatQueue(row.chatId)));
    insertInOrder(c.queue, newJob(row, now, leaseMs));
    touched.set(c, (touched.get(c) ?? 0) + 1);
  }
  return { touched, sentAlready };
}

/** Takes a job out of its chat's queue without an outcome: the row is no longer ours (the database said so). */
export function forgetJob(c: ChatQueue, ledger: RowLedger, job: Job): void {
  const i = c.queue.indexOf(job);
  if (i >= 0) c.queue.splice(i, 1);
  ledger.forget(job.row.id);
}

/** Takes a finished job out of its chat's queue and records it in the ledger's finished set (`sent`: Telegram took it). */
export function finishJob(c: ChatQueue, ledger: RowLedger, job: Job, now: number, sent = false): void {
  const i = c.queue.indexOf(job);
  if (i >= 0) c.queue.splice(i, 1);
  ledger.finish(job.row, now, sent);
}

/** A job of the chat's queue by row id: usually the head, but an earlier row may have been queued in front. */
export function jobOf(c: ChatQueue, rowId: number): Job | undefined {
  return c.queue.find((j) => j.row.id === rowId);
}

/** Re-plans the rest of a job as plain text (Telegram could not parse its HTML). */
export function fallBackToPlain(job: Job, note: string): void {
  job.parts = asPlainText(job.parts!, job.done);
  job.plain = true;
  job.notes.push(note);
}

/** Cuts the job's current text part in two (Telegram found it too long). */
export function splitCurrent(job: Job, note: string): void {
  job.parts = splitPart(job.parts!, job.done);
  job.notes.push(note);
}

/** Whether a chat waits for something that will come back by itself (a plan or a send's answer): a drain waits for it. */
export function anyAwaitingAnswer(chats: Iterable<ChatQueue>): boolean {
  for (const c of chats) if (c.phase === 'sending' || c.phase === 'planning') return true;
  return false;
}

/** Cancels what a chat waits for: its window timer and its pending bid for a global slot. */
export function stopChat(c: ChatQueue): void {
  if (c.timer) clearTimeout(c.timer);
  c.timer = undefined;
  c.cancelBid?.();
  c.cancelBid = undefined;
}

/** Totals over a sender's chats for its status: queued jobs, chats paused by a 429 (and until when), chats waiting to retry. */
export function queueTotals(
  chats: Iterable<ChatQueue>,
  now: number,
): { queued: number; waitingRetry: number; rateLimited: Array<{ chatId: number; until: number }> } {
  let queued = 0;
  let waitingRetry = 0;
  const rateLimited: Array<{ chatId: number; until: number }> = [];
  for (const c of chats) {
    queued += c.queue.length;
    if (c.pausedUntil > now && c.pauseKind === 'rate') rateLimited.push({ chatId: c.id, until: c.pausedUntil });
    if (c.pausedUntil > now && c.pauseKind === 'retry') waitingRetry++;
  }
  return { queued, waitingRetry, rateLimited };
}

/** How long a finished row is remembered: longer than any claim or reload takes. */
export const SEEN_FINISHED_MS = 60_000;

/** Inserts a job keeping row-id order: rows of one chat arrive in order, but recovery can interleave. */
export function insertInOrder(queue: Job[], job: Job): void {
  let i = queue.length;
  while (i > 0 && queue[i - 1]!.row.id > job.row.id) i--;
  queue.splice(i, 0, job);
}

/** What a sender does with a copy of a row: queue it, ignore it (queued already, or stale), or write its `sent` again. */
export type Admission = 'new' | 'queued' | 'stale' | 'sent';

/** How long a process remembers the rows Telegram took from it: longer than a handoff or takeover takes to bring a row back. */
export const SENT_HERE_MS = 120_000;

/**
 * The rows Telegram took from this process recently (id → when), shared by all its senders. A
 * sent row never comes back by right (an operator retries failed rows only): only because its
 * `sent` outcome did not land before the row was freed (a stall past the claim lease, a shard
 * taken over while its process was frozen), and a later sender of this process (the shard
 * owned again) may get it. It is not sent twice from here: its outcome is written again.
 * A row is known by its id and its `created_at`: an id alone can name another row after the
 * table was emptied (TRUNCATE restarts AUTO_INCREMENT), and that row must be sent.
 */
export class SentHere {
  private readonly at = new Map<number, { at: number; createdAt: number }>();

  /** When Telegram took this row (this id, created then) from this process, if it did lately. */
  sentAt(id: number, createdAt: number): number | undefined {
    const e = this.at.get(id);
    return e?.createdAt === createdAt ? e.at : undefined;
  }

  add(id: number, createdAt: number, now: number): void {
    this.at.delete(id);
    this.at.set(id, { at: now, createdAt });
    for (const [old, e] of this.at) {
      if (now - e.at < SENT_HERE_MS) break;
      this.at.delete(old);
    }
  }
}

/**
 * Which rows a sender holds and which it finished recently. After a (re)start the
 * recovery reload and the claimer's hand-over can carry the same row; once it was sent
 * and left its queue, only the finished set tells the second copy apart: a copy fetched
 * before the row finished is stale, one fetched after it is a new claim (an operator's
 * retry-failed) — unless Telegram took the row from this process (SentHere).
 */
export class RowLedger {
  /** Ids of rows queued in this sender. */
  readonly live = new Set<number>();
  /** Rows finished here recently (id → when, in finishing order). */
  private readonly finished = new Map<number, number>();

  constructor(private readonly sent: SentHere = new SentHere()) {}

  /** Takes the row in unless it is queued already, or this copy was fetched before the row finished here, or it was sent from this process. */
  admit({ id, fetchedAt, createdAt }: Pick<OutboxRow, 'id' | 'fetchedAt' | 'createdAt'>): Admission {
    if (this.live.has(id)) return 'queued';
    const sentAt = this.sent.sentAt(id, createdAt);
    if (sentAt !== undefined) return fetchedAt <= sentAt ? 'stale' : 'sent';
    const at = this.finished.get(id);
    if (at !== undefined && fetchedAt <= at) return 'stale';
    this.live.add(id);
    return 'new';
  }

  /** The row left the queue without an outcome (no longer ours): a later copy is a new claim. */
  forget(id: number): void {
    this.live.delete(id);
  }

  finish({ id, createdAt }: Pick<OutboxRow, 'id' | 'createdAt'>, now: number, sent = false): void {
    this.live.delete(id);
    if (sent) this.sent.add(id, createdAt, now);
    this.finished.delete(id);
    this.finished.set(id, now);
    for (const [old, at] of this.finished) {
      if (now - at < SEEN_FINISHED_MS) break;
      this.finished.delete(old);
    }
  }
}
