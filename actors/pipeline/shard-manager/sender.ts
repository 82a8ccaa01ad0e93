import { spawn, dispatch, reply, query, assertNever, Supervision, type ActorRef, type Parent, type ReplyTo } from '../../../src/runtime/actor';
import { describeError } from '../../../src/errors';
import { SlidingWindow, type Reservation } from '../../../src/limits/window';
import { backoffDelay } from '../../../src/limits/backoff';
import { partCost, textParts, type Part } from '../../../src/outbox/plan';
import { splitMessage } from '../../../src/outbox/split';
import type { OutboxRow, Outcome, Progress } from '../../../src/outbox/types';
import type { OutcomeEvent } from '../../../src/nats/payloads';
import { chatLimitOf, chatRatePerMs, type PipelineDeps } from '../deps';
import {
  TelegramApiError,
  TelegramMigrated,
  TelegramParseError,
  TelegramPermanent,
  TelegramRateLimited,
  TelegramTooLong,
  TelegramTransient,
  TelegramUnauthorized,
} from '../../../src/telegram/errors';
import type { OutcomeWriterMsg } from '../outcome-writer';

/**
 * Sender: one per owned shard. Keeps a FIFO queue per chat (row id order, retries
 * included: a later message never overtakes one waiting on a retry), enforces each
 * chat's sliding window, and asks the process's GlobalGate for bot-wide slots; the gate
 * serves chats with the longest backlog first. Sends run concurrently across chats,
 * one at a time per chat. Outcomes go to the outcome writer.
 */
export type SenderMsg =
  | { type: 'rows'; rows: OutboxRow[] }
  | { type: 'recover' }
  | { type: 'recovered'; rows: OutboxRow[]; gen: number }
  | { type: 'chatReady'; chatId: number; gen: number }
  | { type: 'planned'; chatId: number; rowId: number; parts: Part[] | null; error?: string; gen: number }
  | { type: 'granted'; chatId: number; reservation: Reservation; gen: number }
  | { type: 'sendDone'; chatId: number; rowId: number; result: SendResult; gen: number }
  /** Stop sending, let in-flight sends finish, give back every row not sent. */
  | { type: 'drain'; replyTo: ReplyTo<{ released: number }> }
  | { type: 'status'; replyTo: ReplyTo<SenderStatus> };

type SendResult = { ok: true; answeredAt: number; chatRes: Reservation; globalRes: Reservation } | { ok: false; error: TelegramApiError; answeredAt: number; chatRes: Reservation; globalRes: Reservation };

export interface SenderStatus {
  shard: number;
  chats: number;
  queued: number;
  inFlight: number;
  /** Chats paused by a 429, and until when (ms epoch). */
  rateLimited: Array<{ chatId: number; until: number }>;
  waitingRetry: number;
  sent: number;
  failed: number;
  retried: number;
  throttled: number;
  draining: boolean;
}

interface Job {
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

interface Chat {
  id: number;
  queue: Job[];
  window: SlidingWindow;
  /** Not before this instant: a 429's retry_after or a retry backoff. */
  pausedUntil: number;
  pauseKind: 'none' | 'rate' | 'retry';
  phase: 'idle' | 'planning' | 'waiting' | 'bidding' | 'sending';
  cancelBid: (() => void) | undefined;
  /** The row the pending bid was made for (a row with a smaller id may arrive meanwhile). */
  bidRowId: number;
  timer: NodeJS.Timeout | undefined;
}

export interface SenderState {
  shard: number;
  gen: number;
  chats: Map<number, Chat>;
  inFlight: number;
  sent: number;
  failed: number;
  retried: number;
  throttled: number;
  draining: { replyTo: ReplyTo<{ released: number }>; done: boolean } | null;
  recovering: boolean;
  /** Rows that arrived while recovering; merged after. */
  early: OutboxRow[];
  /** Ids of rows queued in this sender. */
  live: Set<number>;
  /**
   * Rows finished here recently (id → when, in finishing order). After a (re)start the
   * recovery reload and the claimer's hand-over can carry the same row; once it was sent and
   * left its queue, only this tells the second copy apart: a copy fetched before the row
   * finished is stale, one fetched after it is a new claim (an operator's retry-failed).
   */
  finished: Map<number, number>;
}

/** How long a finished row is remembered: longer than any claim or reload takes. */
const SEEN_FINISHED_MS = 60_000;

export interface SenderOptions {
  shard: number;
  outcomes: ActorRef<OutcomeWriterMsg>;
  /** Recent 429s across this process, to tell a bot-wide flood from one chat's. */
  floodTracker: FloodTracker;
}

/** Two or more chats throttled within `windowMs` means the bot, not a chat, is flooded. */
export class FloodTracker {
  private recent: Array<{ chatId: number; at: number }> = [];
  constructor(private readonly windowMs = 2_000) {}
  record(chatId: number, at: number): boolean {
    this.recent = this.recent.filter((r) => r.at > at - this.windowMs && r.chatId !== chatId);
    this.recent.push({ chatId, at });
    return this.recent.length >= 2;
  }
}

let generations = 0;

export function spawnSender(parent: Parent, deps: PipelineDeps, opts: SenderOptions): ActorRef<SenderMsg> {
  const { settings, gate, recipients, telegram, planner, book, clock, log, metrics } = deps;
  const shardLabel = { shard: String(opts.shard) };
  const mSent = metrics.counter('telegram_sent_total', 'Notifications Telegram accepted (all parts)', ['shard']);
  const mFailed = metrics.counter('telegram_failed_total', 'Notifications that failed for good', ['shard', 'code']);
  const mRetried = metrics.counter('telegram_retries_total', 'Transient failures retried', ['shard']);
  const mThrottled = metrics.counter('telegram_rate_limited_total', '429 answers received', ['shard']);
  const mCalls = metrics.counter('telegram_calls_total', 'Telegram API calls', ['method', 'result']);
  const mLatency = metrics.histogram('notification_delivery_seconds', 'From claim to accepted, per notification', [], [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300]);
  const mEndToEnd = metrics.histogram('notification_age_seconds', 'From created_at to accepted, per notification', [], [0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 3600]);
  const mCallLatency = metrics.histogram('telegram_call_seconds', 'Telegram API call latency', ['method'], [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 15]);

  const perMessageMs = (chatId: number) => 1 / chatRatePerMs(settings, chatId);

  const emit = (outcome: Outcome, event?: OutcomeEvent): void => {
    if (!dispatch(opts.outcomes, { type: 'outcome', outcome, event })) log.error({ id: outcome.id }, 'outcome writer is stopped: outcome kept in the database lease only');
  };

  const ensureChat = (state: SenderState, chatId: number): Chat => {
    let c = state.chats.get(chatId);
    if (!c) {
      c = { id: chatId, queue: [], window: new SlidingWindow(chatLimitOf(settings, chatId)), pausedUntil: 0, pauseKind: 'none', phase: 'idle', cancelBid: undefined, bidRowId: 0, timer: undefined };
      state.chats.set(chatId, c);
    }
    return c;
  };

  const addRows = (state: SenderState, rows: OutboxRow[], self: ActorRef<SenderMsg>): void => {
    const touched = new Set<Chat>();
    const now = clock.now();
    for (const row of rows) {
      const finishedAt = state.finished.get(row.id);
      if (state.live.has(row.id) || (finishedAt !== undefined && row.fetchedAt <= finishedAt)) continue;
      state.live.add(row.id);
      const c = ensureChat(state, row.chatId);
      const job: Job = { row, parts: null, done: row.progress?.done ?? 0, attempts: row.attempts, retryCount: row.retryCount, plain: row.plainText, notes: [], claimedAt: now, firstSentAt: null };
      // Keep id order: rows of one chat arrive in order, but recovery can interleave.
      let i = c.queue.length;
      while (i > 0 && c.queue[i - 1]!.row.id > row.id) i--;
      c.queue.splice(i, 0, job);
      book.add(opts.shard, row.chatId, 1);
      touched.add(c);
    }
    for (const c of touched) schedule(state, c, self);
  };

  const finishJob = (state: SenderState, c: Chat, job: Job): void => {
    const i = c.queue.indexOf(job);
    if (i >= 0) c.queue.splice(i, 1);
    book.add(opts.shard, c.id, -1);
    const now = clock.now();
    state.live.delete(job.row.id);
    state.finished.delete(job.row.id);
    state.finished.set(job.row.id, now);
    for (const [id, at] of state.finished) {
      if (now - at < SEEN_FINISHED_MS) break;
      state.finished.delete(id);
    }
  };

  const failJob = (state: SenderState, c: Chat, job: Job, code: string, reason: string): void => {
    state.failed++;
    mFailed.inc({ ...shardLabel, code });
    const now = clock.now();
    emit(
      { id: job.row.id, kind: 'failed', at: now, attempts: job.attempts, retryCount: job.retryCount, code, reason, notes: job.notes.join('; ') || undefined, progress: progressOf(job) },
      { id: job.row.id, chat_id: job.row.chatId, status: 'failed', error_code: code, error: reason, attempts: job.attempts, latency_ms: now - job.row.createdAt },
    );
    finishJob(state, c, job);
  };

  const progressOf = (job: Job): Progress | undefined => (job.done > 0 || job.plain ? { done: job.done, total: job.parts?.length ?? 0, ...(job.plain ? { plain: true } : {}) } : undefined);

  /** Moves a chat forward: fail what cannot be sent, plan, wait for its window, bid. */
  const schedule = (state: SenderState, c: Chat, self: ActorRef<SenderMsg>): void => {
    if (c.phase !== 'idle' || state.recovering) return;
    for (;;) {
      const job = c.queue[0];
      if (!job) {
        state.chats.delete(c.id);
        return maybeFinishDrain(state);
      }
      if (state.draining) return maybeFinishDrain(state);
      const dead = recipients.unreachable(job.row.chatId);
      if (dead) {
        failJob(state, c, job, 'TG_PERMANENT', `recipient ${dead.status} since ${new Date(dead.since).toISOString()}: ${dead.reason} (not sent)`);
        continue;
      }
      if (!job.parts) {
        c.phase = 'planning';
        const gen = state.gen;
        const rowId = job.row.id;
        planner
          .plan({ ...job.row, plainText: job.plain })
          .then(
            (parts) => dispatch(self, { type: 'planned', chatId: c.id, rowId, parts, gen }),
            (e: unknown) => dispatch(self, { type: 'planned', chatId: c.id, rowId, parts: null, error: describeError(e), gen }),
          );
        return;
      }
      if (job.done >= job.parts.length) {
        // Everything was accepted before (e.g. progress recorded, outcome lost): done.
        succeed(state, c, job);
        continue;
      }
      const cost = Math.min(partCost(job.parts[job.done]!), c.window.current.count);
      const now = clock.now();
      const at = Math.max(c.pausedUntil, c.window.availableAt(now, cost));
      if (at > now) {
        if (at === Infinity) return; // a send of this chat is still settling; its sendDone reschedules
        c.phase = 'waiting';
        const gen = state.gen;
        c.timer = setTimeout(() => dispatch(self, { type: 'chatReady', chatId: c.id, gen }), at - now);
        return;
      }
      c.pauseKind = 'none';
      c.phase = 'bidding';
      c.bidRowId = job.row.id;
      const gen = state.gen;
      c.cancelBid = gate.request({
        priority: job.row.priority,
        backlogMs: c.queue.length * perMessageMs(c.id),
        readySince: now,
        cost,
        grant: (reservation) => {
          if (!dispatch(self, { type: 'granted', chatId: c.id, reservation, gen })) gate.cancel(reservation);
        },
      });
      return;
    }
  };

  const succeed = (state: SenderState, c: Chat, job: Job): void => {
    const now = clock.now();
    state.sent++;
    mSent.inc(shardLabel);
    mLatency.observe((now - job.claimedAt) / 1000);
    mEndToEnd.observe(Math.max(0, now - job.row.createdAt) / 1000);
    emit(
      { id: job.row.id, kind: 'sent', at: now, attempts: job.attempts + 1, retryCount: job.retryCount, notes: job.notes.join('; ') || undefined, progress: job.parts && job.parts.length > 1 ? progressOf(job) : undefined },
      { id: job.row.id, chat_id: job.row.chatId, status: 'sent', attempts: job.attempts + 1, latency_ms: now - job.row.createdAt },
    );
    finishJob(state, c, job);
  };

  const startSend = (state: SenderState, c: Chat, reservation: Reservation, self: ActorRef<SenderMsg>): void => {
    const job = c.queue[0]!;
    const part = job.parts![job.done]!;
    const cost = Math.min(partCost(part), c.window.current.count);
    const chatRes = c.window.reserve(cost);
    c.phase = 'sending';
    state.inFlight++;
    book.sending(opts.shard, 1);
    const target = recipients.target(job.row.chatId);
    const gen = state.gen;
    const started = clock.now();
    job.firstSentAt ??= started;
    const call = (): Promise<unknown> => {
      switch (part.method) {
        case 'sendMessage':
          return telegram.sendMessage(target, part.text, part.parseMode);
        case 'sendPhoto':
          return telegram.sendPhoto(target, part.item);
        case 'sendMediaGroup':
          return telegram.sendMediaGroup(target, part.items);
        default:
          return assertNever(part);
      }
    };
    let p: Promise<unknown>;
    try {
      p = call();
    } catch (e) {
      p = Promise.reject(e);
    }
    p.then(
      () => {
        const answeredAt = clock.now();
        mCalls.inc({ method: part.method, result: 'ok' });
        mCallLatency.observe({ method: part.method }, (answeredAt - started) / 1000);
        dispatch(self, { type: 'sendDone', chatId: c.id, rowId: job.row.id, result: { ok: true, answeredAt, chatRes, globalRes: reservation }, gen });
      },
      (e: unknown) => {
        const answeredAt = clock.now();
        const error = e instanceof TelegramApiError ? e : new TelegramTransient(part.method, 0, describeError(e), 'network');
        mCalls.inc({ method: part.method, result: error.code });
        mCallLatency.observe({ method: part.method }, (answeredAt - started) / 1000);
        if (!dispatch(self, { type: 'sendDone', chatId: c.id, rowId: job.row.id, result: { ok: false, error, answeredAt, chatRes, globalRes: reservation }, gen })) {
          gate.settle(reservation, answeredAt);
        }
      },
    );
  };

  const onSendDone = (state: SenderState, c: Chat, job: Job, result: SendResult, self: ActorRef<SenderMsg>): void => {
    const now = clock.now();
    if (result.ok) {
      job.done++;
      if (job.done >= job.parts!.length) succeed(state, c, job);
      else if (job.parts!.length > 1) emit({ id: job.row.id, kind: 'progress', progress: progressOf(job)! });
      return;
    }
    const err = result.error;
    if (err instanceof TelegramRateLimited) {
      state.throttled++;
      mThrottled.inc(shardLabel);
      c.pausedUntil = now + err.retryAfterMs;
      c.pauseKind = 'rate';
      if (opts.floodTracker.record(c.id, now)) {
        log.warn({ retryAfterSec: err.retryAfterSec }, 'bot-wide flood control: pausing all sends');
        gate.pause(now + err.retryAfterMs);
        deps.onBotFlood(now + err.retryAfterMs);
      } else log.info({ chatId: c.id, retryAfterSec: err.retryAfterSec }, 'chat rate-limited by Telegram; waiting');
      return;
    }
    if (err instanceof TelegramMigrated) {
      recipients.markMigrated(job.row.chatId, err.newChatId, err.description);
      deps.publishRecipientChanged(job.row.chatId, 'migrated', err.newChatId);
      job.notes.push(`group migrated to ${err.newChatId}`);
      return;
    }
    if (err instanceof TelegramParseError && !job.plain) {
      job.plain = true;
      job.notes.push(`parse error, sent as plain text: ${err.description}`.slice(0, 200));
      // Re-plan the remaining text parts as plain text; photo parts are unaffected.
      const rest = job.parts!.slice(job.done);
      if (rest.every((p) => p.method === 'sendMessage')) {
        const plain = textParts({ text: rest.map((p) => (p as { text: string }).text).join('\n'), parseMode: (rest[0] as { parseMode: string | null }).parseMode, plainText: true });
        job.parts = [...job.parts!.slice(0, job.done), ...plain];
      } else {
        job.parts = job.parts!.map((p, i) => (i >= job.done && p.method === 'sendMessage' ? textParts({ text: p.text, parseMode: p.parseMode, plainText: true })[0]! : p));
      }
      emit({ id: job.row.id, kind: 'progress', progress: progressOf(job)!, notes: job.notes.join('; ') });
      return;
    }
    if (err instanceof TelegramTooLong && err.what === 'text' && job.parts![job.done]!.method === 'sendMessage') {
      const part = job.parts![job.done] as Extract<Part, { method: 'sendMessage' }>;
      if (part.text.length > 16) {
        const halves = splitMessage(part.text, part.parseMode, Math.ceil(part.text.length / 2));
        job.parts = [...job.parts!.slice(0, job.done), ...halves.map((t) => ({ method: 'sendMessage' as const, text: t, parseMode: part.parseMode })), ...job.parts!.slice(job.done + 1)];
        job.notes.push('split again: Telegram counted the text as too long');
        return;
      }
    }
    if (err instanceof TelegramPermanent) {
      recipients.markUnreachable(job.row.chatId, err.reason, err.description, err.code);
      deps.publishRecipientChanged(job.row.chatId, err.reason, null);
      job.attempts++;
      failJob(state, c, job, err.code, err.description);
      return;
    }
    if (err instanceof TelegramUnauthorized) {
      // The token is wrong: no message can go out. Stop everyone, loudly; keep the rows.
      log.fatal({ err: err.message }, 'Telegram rejected the bot token (401): sending paused for 60 s; fix TELEGRAM_BOT_TOKEN');
      gate.pause(now + 60_000);
      c.pausedUntil = now + 60_000;
      c.pauseKind = 'retry';
      return;
    }
    if (err instanceof TelegramTransient) {
      job.attempts++;
      job.retryCount++;
      if (job.attempts >= settings.maxAttempts) {
        failJob(state, c, job, err.code, `${err.message} (after ${job.attempts} attempts)`);
        return;
      }
      state.retried++;
      mRetried.inc(shardLabel);
      const delay = backoffDelay(job.attempts, settings.retryBaseMs, settings.retryMaxMs);
      c.pausedUntil = now + delay;
      c.pauseKind = 'retry';
      emit({ id: job.row.id, kind: 'retry', attempts: job.attempts, retryCount: job.retryCount, nextAttemptAt: now + delay, code: err.code, reason: err.message, progress: progressOf(job) });
      return;
    }
    // Bad request (or a parse error after the plain-text fallback, or a caption too long): this message can never go out.
    job.attempts++;
    failJob(state, c, job, err.code, err.message);
  };

  const maybeFinishDrain = (state: SenderState): void => {
    if (!state.draining || state.draining.done || state.inFlight > 0) return;
    for (const c of state.chats.values()) if (c.phase === 'sending' || c.phase === 'planning') return;
    let released = 0;
    for (const c of state.chats.values()) {
      for (const job of c.queue) {
        emit({ id: job.row.id, kind: 'release' });
        released++;
      }
      if (c.timer) clearTimeout(c.timer);
      c.cancelBid?.();
    }
    state.chats.clear();
    book.clearShard(opts.shard);
    state.draining.done = true;
    reply(state.draining.replyTo, { released });
  };

  const stopChat = (c: Chat): void => {
    if (c.timer) clearTimeout(c.timer);
    c.timer = undefined;
    c.cancelBid?.();
    c.cancelBid = undefined;
  };

  return spawn<SenderState, SenderMsg>(parent, {
    name: `sender-${opts.shard}`,
    supervision: Supervision.restartWithBackoff({ minBackoffMs: 100, maxBackoffMs: 10_000 }),
    init: (ctx) => {
      const gen = ++generations;
      book.clearShard(opts.shard);
      // After a restart, rows this process holds for the shard are reloaded from the database.
      setImmediate(() => dispatch(ctx.self, { type: 'recover' }));
      return { shard: opts.shard, gen, chats: new Map(), inFlight: 0, sent: 0, failed: 0, retried: 0, throttled: 0, draining: null, recovering: true, early: [], live: new Set(), finished: new Map() };
    },
    afterStop: (state) => {
      for (const c of state.chats.values()) stopChat(c);
    },
    receive: async (state, msg, ctx) => {
      switch (msg.type) {
        case 'recover': {
          const gen = state.gen;
          // Rows finished from here on may still look claimed to the reload: they count as fetched now.
          const fetchedAt = clock.now();
          // Outcomes still queued must land first, or finished rows would look claimed.
          query(opts.outcomes, (replyTo) => ({ type: 'flush' as const, replyTo }), 30_000)
            .then(() => deps.repo.loadClaimed([opts.shard]))
            .then(
              (rows) => dispatch(ctx.self, { type: 'recovered', rows: rows.map((r) => ({ ...r, fetchedAt })), gen }),
              (e: unknown) => {
                log.error({ shard: opts.shard, err: describeError(e) }, 'could not reload claimed rows; they return after their lease');
                dispatch(ctx.self, { type: 'recovered', rows: [], gen });
              },
            );
          return state;
        }
        case 'recovered': {
          if (msg.gen !== state.gen) return state;
          state.recovering = false;
          if (msg.rows.length) log.info({ shard: opts.shard, rows: msg.rows.length }, 'sender recovered claimed rows');
          addRows(state, [...msg.rows, ...state.early], ctx.self);
          state.early = [];
          return state;
        }
        case 'rows':
          if (state.recovering) state.early.push(...msg.rows);
          else if (state.draining) for (const row of msg.rows) emit({ id: row.id, kind: 'release' });
          else addRows(state, msg.rows, ctx.self);
          return state;
        case 'chatReady': {
          const c = state.chats.get(msg.chatId);
          if (msg.gen !== state.gen || !c || c.phase !== 'waiting') return state;
          c.timer = undefined;
          c.phase = 'idle';
          schedule(state, c, ctx.self);
          return state;
        }
        case 'planned': {
          const c = state.chats.get(msg.chatId);
          if (msg.gen !== state.gen || !c || c.phase !== 'planning') return state;
          c.phase = 'idle';
          const job = c.queue.find((j) => j.row.id === msg.rowId);
          if (job) {
            if (msg.parts && msg.parts.length > 0) job.parts = msg.parts;
            else failJob(state, c, job, 'BAD_PAYLOAD', `nothing to send: ${msg.error ?? 'empty plan'}`);
          }
          schedule(state, c, ctx.self);
          return state;
        }
        case 'granted': {
          const c = state.chats.get(msg.chatId);
          if (msg.gen !== state.gen || !c || c.phase !== 'bidding' || state.draining) {
            gate.cancel(msg.reservation);
            if (c && c.phase === 'bidding') {
              c.phase = 'idle';
              maybeFinishDrain(state);
            }
            return state;
          }
          c.cancelBid = undefined;
          const head = c.queue[0];
          if (!head || head.row.id !== c.bidRowId || !head.parts) {
            // An earlier row of the chat arrived meanwhile: it goes first, after planning.
            gate.cancel(msg.reservation);
            c.phase = 'idle';
            schedule(state, c, ctx.self);
            return state;
          }
          // The chat's window may have been used meanwhile only by this chat: still free.
          startSend(state, c, msg.reservation, ctx.self);
          return state;
        }
        case 'sendDone': {
          const { result } = msg;
          gate.settle(result.globalRes, result.answeredAt);
          if (msg.gen !== state.gen) return state;
          state.inFlight--;
          book.sending(opts.shard, -1);
          const c = state.chats.get(msg.chatId);
          if (!c) return state;
          c.window.settle(result.chatRes, result.answeredAt);
          c.phase = 'idle';
          // Usually the head; a row with a smaller id may have been queued in front meanwhile.
          const job = c.queue.find((j) => j.row.id === msg.rowId);
          if (job) onSendDone(state, c, job, result, ctx.self);
          schedule(state, c, ctx.self);
          maybeFinishDrain(state);
          return state;
        }
        case 'drain':
          if (state.draining?.done) {
            reply(msg.replyTo, { released: 0 });
            return state;
          }
          state.draining = { replyTo: msg.replyTo, done: false };
          for (const c of state.chats.values()) {
            if (c.phase === 'waiting' || c.phase === 'bidding') {
              stopChat(c);
              c.phase = 'idle';
            }
          }
          for (const row of state.early) emit({ id: row.id, kind: 'release' });
          state.early = [];
          state.recovering = false;
          maybeFinishDrain(state);
          return state;
        case 'status': {
          const now = clock.now();
          let queued = 0;
          let waitingRetry = 0;
          const rateLimited: SenderStatus['rateLimited'] = [];
          for (const c of state.chats.values()) {
            queued += c.queue.length;
            if (c.pausedUntil > now && c.pauseKind === 'rate') rateLimited.push({ chatId: c.id, until: c.pausedUntil });
            if (c.pausedUntil > now && c.pauseKind === 'retry') waitingRetry++;
          }
          reply(msg.replyTo, { shard: opts.shard, chats: state.chats.size, queued, inFlight: state.inFlight, rateLimited, waitingRetry, sent: state.sent, failed: state.failed, retried: state.retried, throttled: state.throttled, draining: state.draining !== null });
          return state;
        }
        default:
          return assertNever(msg);
      }
    },
  });
}
