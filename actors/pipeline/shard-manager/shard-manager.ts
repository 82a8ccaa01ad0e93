import { spawn, dispatch, reply, query, stop, assertNever, Supervision, type ActorRef, type Parent, type ReplyTo } from '../../../src/runtime/actor';
import { describeError } from '../../../src/errors';
import type { OutboxRow } from '../../../src/outbox/types';
import type { PipelineDeps } from '../deps';
import type { OutcomeWriterMsg } from '../outcome-writer';
import { FloodDetector } from '../../../src/limits/flood';
import type { ChatHandoff, WindowSeed } from '../../../src/limits/chat-limits';
import { spawnSender, type DrainResult, type SenderMsg, type SenderStatus } from './sender';

/**
 * Shard manager: one sender actor per shard this process owns. Routes claimed rows to
 * their shard's sender; on losing shards, drains their senders (finish in-flight, give
 * rows back) before stopping them.
 *
 * A shard is *settling* while rows this process claimed for it may still be held by a
 * sender being drained or be on their way back to the table (orphans of a claim that
 * landed after the shard left). `settled` answers once that is over; the pipeline waits
 * for it before it takes such a shard back (docs/architecture.md, "Per-chat order").
 */
/** Rows given back, and per shard the chats' windows and learned limits for the next owner. */
export interface Drained {
  released: number;
  windows: Map<number, ChatHandoff>;
}

export type ShardManagerMsg =
  /** `seeds`: what the previous owners left of new shards' chat windows. */
  | { type: 'own'; shards: number[]; seeds?: Map<number, WindowSeed> }
  | { type: 'rows'; rows: OutboxRow[] }
  /** Drain and stop the senders of `shards` (handoff); answers when their rows are back. */
  | { type: 'release'; shards: number[]; replyTo: ReplyTo<Drained> }
  /** Drain every sender (shutdown). */
  | { type: 'drainAll'; replyTo: ReplyTo<Drained> }
  /** Answers once no drain or orphan release of `shards` is running (see the header). */
  | { type: 'settled'; shards: number[]; replyTo: ReplyTo<void> }
  /** A shard's settling ended: spawn the senders `own` had to put off. */
  | { type: 'respawn' }
  | { type: 'status'; replyTo: ReplyTo<SenderStatus[]> }
  | { type: 'owned'; replyTo: ReplyTo<number[]> };

export interface ShardManagerState {
  senders: Map<number, ActorRef<SenderMsg>>;
  flood: FloodDetector;
  /** The last `own`: shards that should have a sender. */
  want: Set<number>;
  seeds: Map<number, WindowSeed>;
  /** Per shard, the drains and orphan releases still running (chained). */
  settling: Map<number, Promise<void>>;
}

export function spawnShardManager(parent: Parent, deps: PipelineDeps, outcomes: ActorRef<OutcomeWriterMsg>): ActorRef<ShardManagerMsg> {
  const { log, repo, metrics } = deps;
  const owned = metrics.gauge('shards_owned', 'Shards this process sends for');

  const drain = async (senders: Array<[number, ActorRef<SenderMsg>]>, timeoutMs: number): Promise<Drained> => {
    const results = await Promise.allSettled(
      senders.map(([, ref]) => query<SenderMsg, DrainResult>(ref, (replyTo) => ({ type: 'drain' as const, replyTo }), timeoutMs)),
    );
    let released = 0;
    const windows = new Map<number, ChatHandoff>();
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

  /** Records work that must end before the shard may get a sender again. */
  const track = (state: ShardManagerState, self: ActorRef<ShardManagerMsg>, shard: number, work: Promise<unknown>): void => {
    const p: Promise<void> = Promise.all([state.settling.get(shard), work.catch(() => undefined)]).then(() => {
      if (state.settling.get(shard) !== p) return;
      state.settling.delete(shard);
      if (state.want.has(shard) && !state.senders.has(shard)) dispatch(self, { type: 'respawn' });
    });
    state.settling.set(shard, p);
  };

  /** A sender for every wanted shard that has none and is not settling. */
  const spawnWanted = (state: ShardManagerState, self: ActorRef<ShardManagerMsg>): void => {
    for (const shard of state.want) {
      if (state.senders.has(shard)) continue;
      if (state.settling.has(shard)) {
        // The pipeline waits for `settled` before taking a shard back, so this is a bug elsewhere:
        // a second sender would send rows the draining one still holds (and its name is taken).
        log.error({ shard }, 'shard owned again while its previous sender still drains: its sender starts once that is over');
        continue;
      }
      state.senders.set(shard, spawnSender(self, deps, { shard, outcomes, flood: state.flood, seed: state.seeds.get(shard) }));
      state.seeds.delete(shard);
    }
    owned.set(state.senders.size);
  };

  return spawn<ShardManagerState, ShardManagerMsg>(parent, {
    name: 'shard-manager',
    supervision: Supervision.restartWithBackoff({ minBackoffMs: 200, maxBackoffMs: 10_000 }),
    init: () => ({ senders: new Map(), flood: new FloodDetector(), want: new Set(), seeds: new Map(), settling: new Map() }),
    receive: (state, msg, ctx) => {
      switch (msg.type) {
        case 'own': {
          const want = new Set(msg.shards);
          state.want = want;
          for (const [shard, seed] of msg.seeds ?? []) state.seeds.set(shard, seed);
          for (const shard of state.seeds.keys()) if (!want.has(shard)) state.seeds.delete(shard);
          spawnWanted(state, ctx.self);
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
          for (const [shard, rows] of byShard) {
            const ref = state.senders.get(shard);
            if (ref && dispatch(ref, { type: 'rows', rows })) continue;
            // Claimed for a shard we no longer own: give them back now, not after the lease.
            const orphans = rows.map((r) => r.id);
            const released = repo
              .release(orphans)
              .catch((e: unknown) => log.warn({ err: describeError(e), rows: orphans.length }, 'could not release orphan rows; they return after their lease'));
            track(state, ctx.self, shard, released);
          }
          return state;
        }
        case 'release': {
          const list = msg.shards.map((s) => [s, state.senders.get(s)] as const).filter((x): x is [number, ActorRef<SenderMsg>] => x[1] !== undefined);
          for (const s of msg.shards) state.want.delete(s);
          for (const [s] of list) state.senders.delete(s);
          owned.set(state.senders.size);
          const replyTo = msg.replyTo;
          const drained = drain(list, deps.settings.drainTimeoutMs).then((d) => {
            for (const [s, ref] of list) {
              stop(ref);
              deps.book.clearShard(s);
            }
            reply(replyTo, d);
          });
          for (const [s] of list) track(state, ctx.self, s, drained);
          return state;
        }
        case 'settled': {
          const replyTo = msg.replyTo;
          void Promise.all(msg.shards.flatMap((s) => state.settling.get(s) ?? [])).then(() => reply(replyTo, undefined));
          return state;
        }
        case 'respawn':
          spawnWanted(state, ctx.self);
          return state;
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
