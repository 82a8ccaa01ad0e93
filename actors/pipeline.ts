import { spawn, dispatch, reply, query, assertNever, Supervision, type ActorRef, type Parent, type ReplyTo } from '../src/runtime/actor';
import { describeError } from '../src/errors';
import type { PipelineDeps } from '../src/pipeline/deps';
import { spawnClaimer, type ClaimerMsg } from './claimer';
import { spawnOutcomeWriter, OutcomeQueue, type OutcomeWriterMsg } from './outcome-writer';
import { spawnShardManager, type ShardManagerMsg } from './shard-manager';
import type { SenderStatus } from './sender';

/**
 * The delivery pipeline's supervisor: outcome writer, shard manager (→ senders) and
 * claimer. Shutdown runs in a fixed order: stop claiming → drain senders (in-flight
 * sends finish, unsent rows are given back) → flush outcomes.
 */
export type PipelineMsg =
  | { type: 'own'; shards: number[] }
  | { type: 'wake'; shard?: number }
  | { type: 'status'; replyTo: ReplyTo<PipelineStatus> }
  /** Hand shards to another process: stop claiming them, drain, give rows back. */
  | { type: 'release'; shards: number[]; replyTo: ReplyTo<{ released: number }> }
  | { type: 'shutdown'; replyTo: ReplyTo<{ released: number }> };

export interface PipelineStatus {
  shards: SenderStatus[];
  buffered: number;
  outcomesQueued: number;
  outcomesWritten: number;
  gate: { limitPerWindow: number; windowMs: number; occupied: number; waiting: number; pausedUntil: number };
}

export interface PipelineState {
  writer: ActorRef<OutcomeWriterMsg>;
  shardManager: ActorRef<ShardManagerMsg>;
  claimer: ActorRef<ClaimerMsg>;
  shards: number[];
}

export function spawnPipeline(parent: Parent, deps: PipelineDeps): ActorRef<PipelineMsg> {
  // Outlives restarts of the writer and of this supervisor: accepted sends are never forgotten.
  const queue = new OutcomeQueue();
  const timeout = Math.max(5_000, deps.settings.claimLeaseMs);
  return spawn<PipelineState, PipelineMsg>(parent, {
    name: 'pipeline',
    supervision: Supervision.restartWithBackoff({ minBackoffMs: 500, maxBackoffMs: 30_000 }),
    init: (ctx) => {
      const writer = spawnOutcomeWriter(ctx.self, deps, queue);
      const shardManager = spawnShardManager(ctx.self, deps, writer);
      const claimer = spawnClaimer(ctx.self, deps, shardManager);
      return { writer, shardManager, claimer, shards: [] };
    },
    receive: async (state, msg) => {
      switch (msg.type) {
        case 'own':
          state.shards = msg.shards;
          // Senders first, so claimed rows always find their shard's sender.
          dispatch(state.shardManager, { type: 'own', shards: msg.shards });
          dispatch(state.claimer, { type: 'own', shards: msg.shards });
          return state;
        case 'wake':
          dispatch(state.claimer, msg.shard === undefined ? { type: 'wake' } : { type: 'wake', shard: msg.shard });
          return state;
        case 'status': {
          const replyTo = msg.replyTo;
          query<ShardManagerMsg, SenderStatus[]>(state.shardManager, (r) => ({ type: 'status', replyTo: r }), 3_000)
            .catch(() => [] as SenderStatus[])
            .then((shards) =>
              reply(replyTo, {
                shards,
                buffered: deps.book.total,
                outcomesQueued: queue.items.length,
                outcomesWritten: queue.written,
                gate: { limitPerWindow: deps.gate.limit.count, windowMs: deps.gate.limit.windowMs, occupied: deps.gate.occupied(), waiting: deps.gate.waiting, pausedUntil: deps.gate.pausedUntilMs },
              }),
            );
          return state;
        }
        case 'release': {
          // Claims of the remaining shards go on; the released ones are drained.
          const keep = state.shards.filter((s) => !msg.shards.includes(s));
          state.shards = keep;
          dispatch(state.claimer, { type: 'own', shards: keep });
          const replyTo = msg.replyTo;
          query<ShardManagerMsg, { released: number }>(state.shardManager, (r) => ({ type: 'release', shards: msg.shards, replyTo: r }), timeout).then(
            (res) => reply(replyTo, res),
            (e: unknown) => {
              deps.log.warn({ err: describeError(e) }, 'shard release timed out');
              reply(replyTo, { released: 0 });
            },
          );
          return state;
        }
        case 'shutdown': {
          const replyTo = msg.replyTo;
          const run = async (): Promise<number> => {
            await query<ClaimerMsg, void>(state.claimer, (r) => ({ type: 'pause', replyTo: r }), timeout).catch((e: unknown) => deps.log.warn({ err: describeError(e) }, 'claimer did not pause'));
            const { released } = await query<ShardManagerMsg, { released: number }>(state.shardManager, (r) => ({ type: 'drainAll', replyTo: r }), timeout).catch(() => ({ released: 0 }));
            await query<OutcomeWriterMsg, { written: number }>(state.writer, (r) => ({ type: 'flush', replyTo: r }), timeout).catch((e: unknown) =>
              deps.log.error({ err: describeError(e) }, 'final outcome flush failed'),
            );
            return released;
          };
          run().then((released) => reply(replyTo, { released }));
          return state;
        }
        default:
          return assertNever(msg);
      }
    },
  });
}
