import { spawn, dispatch, reply, query, assertNever, Supervision, type ActorRef, type Parent, type ReplyTo } from '../../../src/runtime/actor';
import { describeError } from '../../../src/errors';
import type { Reservation } from '../../../src/limits/window';
import { ChatLimiter, type ChatHandoff, type WindowSeed } from '../../../src/limits/chat-limits';
import type { FloodDetector } from '../../../src/limits/flood';
import type { Part } from '../../../src/outbox/plan';
import { RowLedger, jobOf, stopChat } from '../../../src/outbox/chat-queues';
import type { OutboxRow } from '../../../src/outbox/types';
import type { PipelineDeps } from '../deps';
import type { TelegramApiError } from '../../../src/telegram/errors';
import type { ThrottleScope } from '../../../src/telegram/policy';
import type { OutcomeWriterMsg } from '../outcome-writer';
import { senderWork, type SenderState } from './sender-work';

export type { SenderState };

/**
 * Sender: one per owned shard. Keeps a FIFO queue per chat (row id order, retries
 * included: a later message never overtakes one waiting on a retry), holds each chat to
 * its window (ChatLimiter: adaptive, outlives the queue, seeded at a handoff), and asks
 * the process's GlobalGate for bot-wide slots. What to do with each Telegram answer is
 * decided by src/telegram/policy.ts; the work on chats is in sender-work.ts, this file
 * keeps the messages and the state.
 */
export type SenderMsg =
  | { type: 'rows'; rows: OutboxRow[] }
  | { type: 'recover' }
  | { type: 'recovered'; rows: OutboxRow[]; gen: number }
  | { type: 'chatReady'; chatId: number; gen: number }
  | { type: 'planned'; chatId: number; rowId: number; parts: Part[] | null; error?: string; gen: number }
  | { type: 'granted'; chatId: number; reservation: Reservation; gen: number }
  | { type: 'sendDone'; chatId: number; rowId: number; result: SendResult; gen: number }
  /** The database's answer for rows whose claim lease this process could not vouch for: id → lease left (ms), only the rows still ours. */
  | { type: 'verified'; ids: number[]; left: Map<number, number>; startedAt: number; answeredAt: number; gen: number }
  /** Look at the shard's lease again for the chats it held back. */
  | { type: 'shardCheck'; gen: number }
  /** Stop sending, let in-flight sends finish, give back every row not sent; hand over the chats' windows. */
  | { type: 'drain'; replyTo: ReplyTo<DrainResult> }
  | { type: 'status'; replyTo: ReplyTo<SenderStatus> };

export interface DrainResult {
  released: number;
  /** The chats' windows (answer times still inside them, ms epoch) and learned limits. */
  windows: ChatHandoff;
}

export type SendResult =
  | { ok: true; sentAt: number; answeredAt: number; chatRes: Reservation; globalRes: Reservation }
  | { ok: false; error: TelegramApiError; sentAt: number; answeredAt: number; chatRes: Reservation; globalRes: Reservation };

export interface SenderStatus {
  shard: number;
  chats: number;
  queued: number;
  inFlight: number;
  /** Chats paused by a 429, and until when (ms epoch). */
  rateLimited: Array<{ chatId: number; until: number }>;
  /** Chats whose rate a 429 lowered below the configured one (per second), at most 20. */
  lowered: Array<{ chatId: number; rate: number; ceiling: number }>;
  waitingRetry: number;
  sent: number;
  failed: number;
  retried: number;
  throttled: number;
  throttledByScope: Record<ThrottleScope, number>;
  draining: boolean;
}
export interface SenderOptions {
  shard: number;
  outcomes: ActorRef<OutcomeWriterMsg>;
  /** Recent 429s across this process, to tell a bot-wide flood from one chat's. */
  flood: FloodDetector;
  /** What the previous owner of the shard left of its chats' windows. */
  seed?: WindowSeed;
}

let generations = 0;

export function spawnSender(parent: Parent, deps: PipelineDeps, opts: SenderOptions): ActorRef<SenderMsg> {
  const { settings, gate, book, clock, log } = deps;
  let starts = 0;
  const { addRows, schedule, startSend, onSendDone, onVerified, onShardCheck, maybeFinishDrain, failJob, status, emit } = senderWork(deps, opts);
  return spawn<SenderState, SenderMsg>(parent, {
    name: `sender-${opts.shard}`,
    supervision: Supervision.restartWithBackoff({ minBackoffMs: 100, maxBackoffMs: 10_000 }),
    init: (ctx) => {
      const gen = ++generations;
      book.clearShard(opts.shard);
      // After a restart, rows this process holds for the shard are reloaded from the database.
      setImmediate(() => dispatch(ctx.self, { type: 'recover' }));
      // After a crash the windows of the sends made before it are gone: wait a full window, as after a takeover.
      const limiter = new ChatLimiter(settings, starts++ === 0 ? opts.seed : { kind: 'blind', at: clock.now() }, deps.lowered);
      return {
        shard: opts.shard,
        gen,
        chats: new Map(),
        limiter,
        rows: new RowLedger(deps.sentHere),
        inFlight: 0,
        counts: { sent: 0, failed: 0, retried: 0, throttled: { chat: 0, group: 0, global: 0 } },
        draining: null,
        recovering: true,
        early: [],
        lastTick: clock.now(),
        unsure: new Map(),
        verifying: false,
        shardHeld: new Set(),
        shardTimer: undefined,
      };
    },
    afterStop: (state) => {
      clearTimeout(state.shardTimer);
      for (const c of state.chats.values()) stopChat(c);
      state.limiter.close();
    },
    receive: (state, msg, ctx) => {
      const now = clock.now();
      if (now - state.lastTick >= 1_000) {
        state.lastTick = now;
        state.limiter.tick(now);
      }
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
        case 'recovered':
          if (msg.gen !== state.gen) return state;
          state.recovering = false;
          if (msg.rows.length) log.info({ shard: opts.shard, rows: msg.rows.length }, 'sender recovered claimed rows');
          addRows(state, [...msg.rows, ...state.early], ctx.self);
          state.early = [];
          return state;
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
          const job = jobOf(c, msg.rowId);
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
          gate.settle(result.globalRes, result.answeredAt, result.ok);
          if (msg.gen !== state.gen) return state;
          state.inFlight--;
          book.sending(opts.shard, -1);
          state.limiter.window(msg.chatId).settle(result.chatRes, result.answeredAt);
          if (result.ok) state.limiter.answered(msg.chatId, result.answeredAt);
          const c = state.chats.get(msg.chatId);
          if (!c) return state;
          c.phase = 'idle';
          // Usually the head; a row with a smaller id may have been queued in front meanwhile.
          const job = jobOf(c, msg.rowId);
          if (job) onSendDone(state, c, job, result);
          schedule(state, c, ctx.self);
          maybeFinishDrain(state);
          return state;
        }
        case 'shardCheck':
          if (msg.gen === state.gen) onShardCheck(state, ctx.self);
          return state;
        case 'verified':
          if (msg.gen !== state.gen) return state;
          onVerified(state, msg.ids, msg.left, msg.startedAt, msg.answeredAt, ctx.self);
          return state;
        case 'drain':
          if (state.draining?.done) {
            reply(msg.replyTo, { released: 0, windows: state.limiter.handoff(now) });
            return state;
          }
          state.draining = { replyTo: msg.replyTo, done: false };
          state.shardHeld.clear();
          clearTimeout(state.shardTimer);
          state.shardTimer = undefined;
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
        case 'status':
          reply(msg.replyTo, status(state));
          return state;
        default:
          return assertNever(msg);
      }
    },
  });
}
