import { spawn, dispatch, reply, assertNever, Supervision, type ActorRef, type Parent, type ReplyTo } from '../../src/runtime/actor';
import { describeError } from '../../src/errors';
import type { OutboxRow } from '../../src/outbox/types';
import { chatRatePerMs, type PipelineDeps } from './deps';
import type { ShardManagerMsg } from './shard-manager/shard-manager';

/**
 * Claimer: claims due rows of the owned shards in batches (one transaction per batch,
 * all shards at once) and hands them to the shard manager. Runs when woken by an
 * enqueue, when a batch came back full, and every poll interval (legacy producers that
 * only INSERT). Also renews this process's leases and reaps expired ones.
 */
export type ClaimerMsg =
  /**
   * New owned shards. With `replyTo`, answers once no claim for the old set is running:
   * a claim still in flight for a shard being handed off would otherwise land after the
   * handoff, and the new owner's claims could skip its locked rows and overtake them.
   */
  | { type: 'own'; shards: number[]; replyTo?: ReplyTo<void> }
  | { type: 'wake'; shard?: number }
  | { type: 'tick' }
  | { type: 'claimed'; rows: OutboxRow[]; limit: number; error?: string }
  | { type: 'polled'; due: boolean; error?: string }
  | { type: 'renew' }
  /** The renewal that started at `startedAt` (ms) was answered at `answeredAt`; its extension vouches for the rows' leases. */
  | { type: 'renewed'; startedAt: number; answeredAt: number; error?: string }
  | { type: 'reap' }
  | { type: 'reaped'; rows: number; error?: string }
  /** Stop claiming (shutdown, handoff); answers once no claim is running. */
  | { type: 'pause'; replyTo: ReplyTo<void> }
  | { type: 'resume' };

/** Rows of the first claim for shards just taken while nothing is buffered (see startClaim). */
const FIRST_CLAIM = 100;

export interface ClaimerState {
  shards: number[];
  claiming: boolean;
  again: boolean;
  /** Shards were just added: the next claim is a short one if nothing is buffered. */
  fresh: boolean;
  paused: boolean;
  waiters: Array<ReplyTo<void>>;
  timers: NodeJS.Timeout[];
  failures: number;
  /** A poll, renewal or reap is running (each runs outside the mailbox; one at a time). */
  polling: boolean;
  renewing: boolean;
  reaping: boolean;
}

export function spawnClaimer(parent: Parent, deps: PipelineDeps, shardManager: ActorRef<ShardManagerMsg>): ActorRef<ClaimerMsg> {
  const { settings, repo, book, log, metrics, clock, claimLeases } = deps;
  const mClaimed = metrics.counter('outbox_claimed_total', 'Rows claimed from the outbox');
  const mClaims = metrics.counter('outbox_claims_total', 'Claim transactions', ['result']);
  const mBuffered = metrics.gauge('outbox_buffered_rows', 'Claimed rows held in memory');
  const mReaped = metrics.counter('outbox_reaped_total', 'Rows whose lease expired, made claimable again');

  const capOf = (chatId: number): number => Math.max(1, Math.ceil(chatRatePerMs(settings, chatId) * 1000 * settings.chatBufferSeconds));

  const startClaim = (state: ClaimerState, self: ActorRef<ClaimerMsg>): void => {
    if (state.paused || state.shards.length === 0) return;
    if (state.claiming) {
      state.again = true;
      return;
    }
    // Shards just taken and nothing buffered (a start, a takeover): a short claim first, so sending starts after one
    // short statement; a full batch returned asks for the next claim at once, at the full size. Only then: a buffer
    // that drained in the middle of a backlog (a pipeline outrunning its claims) is refilled with full batches.
    const first = state.fresh && book.total === 0;
    const limit = Math.min(first ? Math.min(settings.claimBatch, FIRST_CLAIM) : settings.claimBatch, settings.maxBuffered - book.total);
    if (limit <= 0) return;
    state.claiming = true;
    state.again = false;
    state.fresh = false;
    repo.claim({ shards: state.shards, limit, leaseMs: settings.claimLeaseMs, buffered: book.perChat(), perChatCap: capOf }).then(
      (rows) => dispatch(self, { type: 'claimed', rows, limit }),
      (e: unknown) => dispatch(self, { type: 'claimed', rows: [], limit, error: describeError(e) }),
    );
  };

  return spawn<ClaimerState, ClaimerMsg>(parent, {
    name: 'claimer',
    supervision: Supervision.restartWithBackoff({ minBackoffMs: 200, maxBackoffMs: 10_000 }),
    init: (ctx) => {
      const every = (ms: number, msg: ClaimerMsg): NodeJS.Timeout => setInterval(() => dispatch(ctx.self, msg), ms);
      return {
        shards: [],
        claiming: false,
        again: false,
        fresh: false,
        paused: false,
        waiters: [],
        failures: 0,
        polling: false,
        renewing: false,
        reaping: false,
        timers: [
          every(settings.pollMs, { type: 'tick' }),
          every(Math.max(500, Math.floor(settings.claimLeaseMs / 3)), { type: 'renew' }),
          every(Math.max(1_000, Math.floor(settings.claimLeaseMs / 4)), { type: 'reap' }),
        ],
      };
    },
    afterStop: (state) => state.timers.forEach((t) => clearInterval(t)),
    // Every database call runs outside the mailbox and reports back as a message.
    receive: (state, msg, ctx) => {
      switch (msg.type) {
        case 'own':
          if (msg.shards.some((x) => !state.shards.includes(x))) state.fresh = true;
          state.shards = [...msg.shards].sort((a, b) => a - b);
          if (msg.replyTo) {
            if (state.claiming) state.waiters.push(msg.replyTo);
            else reply(msg.replyTo, undefined);
          }
          startClaim(state, ctx.self);
          return state;
        case 'wake':
          if (msg.shard === undefined || state.shards.includes(msg.shard)) startClaim(state, ctx.self);
          return state;
        case 'tick':
          mBuffered.set(book.total);
          if (state.claiming || state.polling || state.paused || book.total >= settings.maxBuffered) return state;
          state.polling = true;
          repo.hasDue(state.shards).then(
            (due) => dispatch(ctx.self, { type: 'polled', due }),
            (e: unknown) => dispatch(ctx.self, { type: 'polled', due: false, error: describeError(e) }),
          );
          return state;
        case 'polled':
          state.polling = false;
          if (msg.error) log.warn({ err: msg.error }, 'outbox poll failed');
          else if (msg.due) startClaim(state, ctx.self);
          return state;
        case 'claimed': {
          state.claiming = false;
          if (msg.error) {
            state.failures++;
            mClaims.inc({ result: 'error' });
            log.warn({ err: msg.error, failures: state.failures }, 'claim failed; retrying at the next poll');
          } else {
            state.failures = 0;
            mClaims.inc({ result: msg.rows.length ? 'rows' : 'empty' });
            if (msg.rows.length) {
              mClaimed.inc(msg.rows.length);
              dispatch(shardManager, { type: 'rows', rows: msg.rows });
            }
          }
          // Rows are on their way to the shard manager: whoever waited for this claim may go on.
          state.waiters.splice(0).forEach((w) => reply(w, undefined));
          if (state.paused) return state;
          // A full batch means more is waiting; a wake during the claim may have brought more.
          if (!msg.error && (msg.rows.length >= msg.limit || state.again)) startClaim(state, ctx.self);
          return state;
        }
        case 'renew':
          if (state.renewing) return state;
          state.renewing = true;
          {
            const startedAt = clock.now();
            repo.renewLeases(settings.claimLeaseMs).then(
              () => dispatch(ctx.self, { type: 'renewed', startedAt, answeredAt: clock.now() }),
              (e: unknown) => dispatch(ctx.self, { type: 'renewed', startedAt, answeredAt: clock.now(), error: describeError(e) }),
            );
          }
          return state;
        case 'renewed':
          state.renewing = false;
          if (msg.error) log.warn({ err: msg.error }, 'lease renewal failed');
          else claimLeases.extended(msg.startedAt, msg.answeredAt);
          return state;
        case 'reap':
          if (state.reaping) return state;
          state.reaping = true;
          repo.reapExpired().then(
            (rows) => dispatch(ctx.self, { type: 'reaped', rows }),
            (e: unknown) => dispatch(ctx.self, { type: 'reaped', rows: 0, error: describeError(e) }),
          );
          return state;
        case 'reaped':
          state.reaping = false;
          if (msg.error) log.warn({ err: msg.error }, 'lease reaping failed');
          if (msg.rows > 0) {
            mReaped.inc(msg.rows);
            log.info({ rows: msg.rows }, 'expired leases reaped; rows claimable again');
            startClaim(state, ctx.self);
          }
          return state;
        case 'pause':
          state.paused = true;
          if (state.claiming) state.waiters.push(msg.replyTo);
          else reply(msg.replyTo, undefined);
          return state;
        case 'resume':
          state.paused = false;
          startClaim(state, ctx.self);
          return state;
        default:
          return assertNever(msg);
      }
    },
  });
}
