import { dispatch, type ActorRef } from '../../../src/runtime/actor';
import { describeError } from '../../../src/errors';
import { forgetJob, jobOf, stopChat, type ChatQueue as Chat, type Job } from '../../../src/outbox/chat-queues';
import type { SendMetrics } from '../../../src/outbox/send-metrics';
import type { PipelineDeps } from '../deps';
import type { SenderMsg, SenderOptions } from './sender';
import type { SenderState } from './sender-work';

/** How often a chat (a row's claim lease) or a shard (its lease) held back looks again (a renewal resumes it; a lost lease drains it). */
export const GUARD_RECHECK_MS = 100;

/**
 * The sender's lease checks (src/outbox/send-guard.ts): before each send, the shard's lease
 * and the row's claim lease; rows whose claim lease cannot be vouched for are asked of the
 * database. `moves`: the sender's own `schedule` and `maybeFinishDrain`.
 */
export function senderLeases(
  deps: PipelineDeps,
  opts: SenderOptions,
  m: SendMetrics,
  moves: { schedule: (state: SenderState, c: Chat, self: ActorRef<SenderMsg>) => void; maybeFinishDrain: (state: SenderState) => void },
) {
  const { clock, log, book } = deps;
  const shardLabel = { shard: String(opts.shard) };
  const { schedule, maybeFinishDrain } = moves;

  /**
   * Whether the chat's head job may go out now, asked right before bidding and again right
   * before the dispatch: the shard's lease (the cluster's, as last renewed) and the row's
   * claim lease must both still hold by this process's own knowledge. A frozen process's
   * timers fire before its lease watchdog: this is what keeps it from sending on waking.
   * When not, the chat waits and looks again (a row's lease is asked of the database).
   */
  const vouched = (state: SenderState, c: Chat, job: Job, now: number, self: ActorRef<SenderMsg>): boolean => {
    const shardOk = deps.shardLease.maySendFor(opts.shard, now);
    const claimOk = shardOk && deps.claimLeases.vouches(job.lease, now);
    if (shardOk && claimOk) return true;
    m.heldBack.inc({ ...shardLabel, lease: shardOk ? 'claim' : 'shard' });
    c.phase = 'waiting';
    const gen = state.gen;
    if (shardOk) {
      state.unsure.set(job.row.id, c.id);
      verify(state, self);
      c.timer = setTimeout(() => dispatch(self, { type: 'chatReady', chatId: c.id, gen }), GUARD_RECHECK_MS);
      return false;
    }
    // The shard's lease: one look for the whole shard (a JetStream election holds every chat of it back for seconds).
    state.shardHeld.add(c.id);
    state.shardTimer ??= setTimeout(() => dispatch(self, { type: 'shardCheck', gen }), GUARD_RECHECK_MS);
    return false;
  };

  /** The shard's lease looked at again: valid, its held chats go on (in the order they were held); not yet, a look later. */
  const onShardCheck = (state: SenderState, self: ActorRef<SenderMsg>): void => {
    state.shardTimer = undefined;
    if (state.shardHeld.size === 0) return;
    if (!deps.shardLease.maySendFor(opts.shard, clock.now())) {
      const gen = state.gen;
      state.shardTimer = setTimeout(() => dispatch(self, { type: 'shardCheck', gen }), GUARD_RECHECK_MS);
      return;
    }
    const held = [...state.shardHeld];
    state.shardHeld.clear();
    for (const id of held) {
      const c = state.chats.get(id);
      // A drain or a reschedule may have moved it meanwhile; only a chat still waiting (on no timer of its own) goes on.
      if (!c || c.phase !== 'waiting' || c.timer) continue;
      c.phase = 'idle';
      schedule(state, c, self);
    }
  };

  /** Asks the database which unsure rows are still ours, and for how long (the answer comes back as 'verified'). */
  const verify = (state: SenderState, self: ActorRef<SenderMsg>): void => {
    if (state.verifying || state.unsure.size === 0) return;
    state.verifying = true;
    const ids = [...state.unsure.keys()];
    const gen = state.gen;
    const startedAt = clock.now();
    deps.repo.claimLeft(ids).then(
      (left) => dispatch(self, { type: 'verified', ids, left, startedAt, answeredAt: clock.now(), gen }),
      (e: unknown) => {
        log.warn({ shard: opts.shard, err: describeError(e) }, 'could not check the claim leases of held rows; asking again');
        setTimeout(() => dispatch(self, { type: 'verified', ids: [], left: new Map(), startedAt, answeredAt: clock.now(), gen }), 1_000);
      },
    );
  };

  /**
   * The database's answer for unsure rows: a row still ours gets the lease left; a row no
   * longer ours (freed by the reaper, maybe claimed again by someone) leaves the queue
   * without an outcome, unless a newer copy arrived since the question was asked.
   */
  const onVerified = (state: SenderState, ids: number[], left: Map<number, number>, startedAt: number, answeredAt: number, self: ActorRef<SenderMsg>): void => {
    state.verifying = false;
    for (const id of ids) {
      const chatId = state.unsure.get(id);
      state.unsure.delete(id);
      const c = chatId === undefined ? undefined : state.chats.get(chatId);
      const job = c ? jobOf(c, id) : undefined;
      if (!c || !job) continue;
      const ms = left.get(id);
      if (ms !== undefined) job.lease = { from: startedAt, ownMs: ms, seenAt: answeredAt };
      else if (job.lease.seenAt < startedAt && !(c.phase === 'sending' && c.queue[0] === job)) {
        log.warn({ id, chatId: c.id, shard: opts.shard }, 'a held row is no longer claimed by this process (its lease ran out): not sent from here');
        forgetJob(c, state.rows, job);
        book.add(opts.shard, c.id, -1);
        if (c.phase === 'waiting' || c.phase === 'idle') {
          stopChat(c);
          c.phase = 'idle';
          schedule(state, c, self);
        }
      }
    }
    verify(state, self);
    maybeFinishDrain(state);
  };

  return { vouched, onShardCheck, onVerified };
}
