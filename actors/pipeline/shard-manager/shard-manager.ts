import { spawn, dispatch, reply, query, stop, assertNever, Supervision, type ActorRef, type Parent, type ReplyTo } from '../../../src/runtime/actor';
import { describeError } from '../../../src/errors';
import type { OutboxRow } from '../../../src/outbox/types';
import type { PipelineDeps } from '../deps';
import type { OutcomeWriterMsg } from '../outcome-writer';
import { FloodDetector } from '../../../src/limits/flood';
import type { WindowSeed } from '../../../src/limits/chat-limits';
import { spawnSender, type DrainResult, type SenderMsg, type SenderStatus } from './sender';

/**
 * Shard manager: one sender actor per shard this process owns. Routes claimed rows to
 * their shard's sender; on losing shards, drains their senders (finish in-flight, give
 * rows back) before stopping them.
 */
/** Rows given back, and per shard the chats' windows for the next owner. */
export interface Drained {
  released: number;
  windows: Map<number, Record<string, number[]>>;
}

export type ShardManagerMsg =
  /** `seeds`: what the previous owners left of new shards' chat windows. */
  | { type: 'own'; shards: number[]; seeds?: Map<number, WindowSeed> }
  | { type: 'rows'; rows: OutboxRow[] }
  /** Drain and stop the senders of `shards` (handoff); answers when their rows are back. */
  | { type: 'release'; shards: number[]; replyTo: ReplyTo<Drained> }
  /** Drain every sender (shutdown). */
  | { type: 'drainAll'; replyTo: ReplyTo<Drained> }
  | { type: 'status'; replyTo: ReplyTo<SenderStatus[]> }
  | { type: 'owned'; replyTo: ReplyTo<number[]> };

export interface ShardManagerState {
  senders: Map<number, ActorRef<SenderMsg>>;
  flood: FloodDetector;
}

export function spawnShardManager(parent: Parent, deps: PipelineDeps, outcomes: ActorRef<OutcomeWriterMsg>): ActorRef<ShardManagerMsg> {
  const { log, repo, metrics } = deps;
  const owned = metrics.gauge('shards_owned', 'Shards this process sends for');

  const drain = async (senders: Array<[number, ActorRef<SenderMsg>]>, timeoutMs: number): Promise<Drained> => {
    const results = await Promise.allSettled(
      senders.map(([, ref]) => query<SenderMsg, DrainResult>(ref, (replyTo) => ({ type: 'drain' as const, replyTo }), timeoutMs)),
    );
    let released = 0;
    const windows = new Map<number, Record<string, number[]>>();
    results.forEach((r, i) => {
      if (r.status === 'fulfilled') {
        released += r.value.released;
        windows.set(senders[i]![0], r.value.windows);
      } else log.warn({ shard: senders[i]![0], err: describeError(r.reason) }, 'sender did not drain in time; its rows return after their lease');
    });
    // The released rows are outcomes queued at the writer: make them land.
    await query(outcomes, (replyTo) => ({ type: 'flush' as const, replyTo }), timeoutMs).catch(() => undefined);
    return { released, windows };
  };

  return spawn<ShardManagerState, ShardManagerMsg>(parent, {
    name: 'shard-manager',
    supervision: Supervision.restartWithBackoff({ minBackoffMs: 200, maxBackoffMs: 10_000 }),
    init: () => ({ senders: new Map(), flood: new FloodDetector() }),
    receive: (state, msg, ctx) => {
      switch (msg.type) {
        case 'own': {
          const want = new Set(msg.shards);
          for (const shard of want) {
            if (!state.senders.has(shard))
              state.senders.set(shard, spawnSender(ctx.self, deps, { shard, outcomes, flood: state.flood, seed: msg.seeds?.get(shard) }));
          }
          const gone = [...state.senders].filter(([s]) => !want.has(s));
          for (const [s, ref] of gone) {
            state.senders.delete(s);
            // Not drained: callers that need a handoff use 'release' first.
            stop(ref);
            deps.book.clearShard(s);
          }
          owned.set(state.senders.size);
          return state;
        }
        case 'rows': {
          const byShard = new Map<number, OutboxRow[]>();
          for (const r of msg.rows) {
            let list = byShard.get(r.shard);
            if (!list) byShard.set(r.shard, (list = []));
            list.push(r);
          }
          const orphans: number[] = [];
          for (const [shard, rows] of byShard) {
            const ref = state.senders.get(shard);
            if (!ref || !dispatch(ref, { type: 'rows', rows })) orphans.push(...rows.map((r) => r.id));
          }
          if (orphans.length) {
            // Claimed for a shard we no longer own: give them back now, not after the lease.
            repo
              .release(orphans)
              .catch((e: unknown) => log.warn({ err: describeError(e), rows: orphans.length }, 'could not release orphan rows; they return after their lease'));
          }
          return state;
        }
        case 'release': {
          const list = msg.shards.map((s) => [s, state.senders.get(s)] as const).filter((x): x is [number, ActorRef<SenderMsg>] => x[1] !== undefined);
          for (const [s] of list) state.senders.delete(s);
          owned.set(state.senders.size);
          const replyTo = msg.replyTo;
          void drain(list, deps.settings.drainTimeoutMs).then((drained) => {
            for (const [s, ref] of list) {
              stop(ref);
              deps.book.clearShard(s);
            }
            reply(replyTo, drained);
          });
          return state;
        }
        case 'drainAll': {
          const list = [...state.senders];
          const replyTo = msg.replyTo;
          void drain(list, deps.settings.drainTimeoutMs).then((drained) => reply(replyTo, drained));
          return state;
        }
        case 'status': {
          const replyTo = msg.replyTo;
          void Promise.allSettled(
            [...state.senders.values()].map((ref) => query<SenderMsg, SenderStatus>(ref, (r) => ({ type: 'status' as const, replyTo: r }), 2_000)),
          ).then((rs) =>
            reply(
              replyTo,
              rs.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : [])).sort((a, b) => a.shard - b.shard),
            ),
          );
          return state;
        }
        case 'owned':
          reply(
            msg.replyTo,
            [...state.senders.keys()].sort((a, b) => a - b),
          );
          return state;
        default:
          return assertNever(msg);
      }
    },
  });
}
