import { spawn, dispatch, reply, query, assertNever, Supervision, type ActorContext, type ActorRef, type Parent, type ReplyTo } from '../../src/runtime/actor';
import { describeError } from '../../src/errors';
import type { PipelineDeps } from './deps';
import { spawnClaimer, type ClaimerMsg } from './claimer';
import { spawnOutcomeWriter, OutcomeQueue, type OutcomeWriterMsg } from './outcome-writer';
import { spawnShardManager, type Drained, type ShardManagerMsg } from './shard-manager/shard-manager';
import type { HandoffRecord } from '../../src/cluster/handoff';
import type { SenderStatus } from './shard-manager/sender';
import type { WindowSeed } from '../../src/limits/chat-limits';

/**
 * The delivery pipeline's supervisor: outcome writer, shard manager (→ senders) and
 * claimer. Shutdown runs in a fixed order: stop claiming → drain senders (in-flight
 * sends finish, unsent rows are given back) → flush outcomes.
 */
export type PipelineMsg =
  /**
   * The shards this process owns from now on. Shards no longer listed are drained and
   * handed back; new ones are fenced in the database (shard_owners) before claiming.
   */
  | { type: 'own'; shards: number[]; replyTo?: ReplyTo<OwnResult> }
  | { type: 'wake'; shard?: number }
  | { type: 'status'; replyTo: ReplyTo<PipelineStatus> }
  /** Hand shards to another process: stop claiming them, drain, give rows back. */
  | { type: 'release'; shards: number[]; replyTo: ReplyTo<{ released: number }> }
  | { type: 'shutdown'; replyTo: ReplyTo<{ released: number }> }
  /** Internal: an ownership change's I/O is done (sent by this actor to itself). */
  | { type: 'changed'; shards: number[]; seeds: Map<number, WindowSeed>; result: OwnResult; replyTo?: ReplyTo<OwnResult> };

/** Messages that change which shards are owned: handled one at a time, in arrival order. */
type OwnershipMsg = Extract<PipelineMsg, { type: 'own' | 'release' | 'shutdown' }>;

export interface OwnResult {
  owned: number[];
  released: number;
  /** Rows another process held in the newly owned shards, made claimable again. */
  reclaimed: number;
  /** Newly owned shards whose fencing row named another process (a takeover, not a handoff). */
  previousOwners: Array<{ shard: number; owner: string }>;
}

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
  /**
   * Fenced shards whose rows may still be held by their old sender or be on their way back
   * to the table: resolves when they are not. `own` waits for it before taking one back.
   */
  settling: Map<number, Promise<void>>;
  /** An `own` is doing its I/O; ownership messages that arrive meanwhile wait in `queued`. */
  changing: boolean;
  queued: OwnershipMsg[];
}

export function spawnPipeline(parent: Parent, deps: PipelineDeps): ActorRef<PipelineMsg> {
  // Outlives restarts of the writer and of this supervisor: accepted sends are never forgotten.
  const queue = new OutcomeQueue();
  const timeout = deps.settings.drainTimeoutMs;
  return spawn<PipelineState, PipelineMsg>(parent, {
    name: 'pipeline',
    supervision: Supervision.restartWithBackoff({ minBackoffMs: 500, maxBackoffMs: 30_000 }),
    init: (ctx) => {
      const writer = spawnOutcomeWriter(ctx.self, deps, queue);
      const shardManager = spawnShardManager(ctx.self, deps, writer);
      const claimer = spawnClaimer(ctx.self, deps, shardManager);
      return { writer, shardManager, claimer, shards: [], settling: new Map(), changing: false, queued: [] };
    },
    receive,
  });

  async function receive(state: PipelineState, msg: PipelineMsg, ctx: ActorContext<PipelineMsg>): Promise<PipelineState> {
    switch (msg.type) {
      case 'own': {
        if (state.changing) {
          state.queued.push(msg);
          return state;
        }
        // The I/O runs outside the mailbox (status and wake-ups are answered meanwhile); ownership
        // messages that arrive before it reports back wait in `queued`, so changes stay in order.
        state.changing = true;
        const want = [...new Set(msg.shards)].sort((a, b) => a - b);
        const removed = state.shards.filter((s) => !want.includes(s));
        const added = want.filter((s) => !state.shards.includes(s));
        const keep = state.shards.filter((s) => !removed.includes(s));
        state.shards = keep;
        const settling = added.flatMap((s) => state.settling.get(s) ?? []);
        for (const s of added) state.settling.delete(s);
        const replyTo = msg.replyTo;
        void changeOwnership(state, keep, removed, added, settling).then((c) => dispatch(ctx.self, { type: 'changed', ...c, ...(replyTo ? { replyTo } : {}) }));
        return state;
      }
      case 'changed': {
        state.shards = msg.shards;
        // Senders first, so claimed rows always find their shard's sender.
        dispatch(state.shardManager, { type: 'own', shards: state.shards, seeds: msg.seeds });
        dispatch(state.claimer, { type: 'own', shards: state.shards });
        if (msg.replyTo) reply(msg.replyTo, msg.result);
        state.changing = false;
        // What waited, in arrival order; an `own` among it starts the next change and the rest wait again.
        while (!state.changing && state.queued.length > 0) state = await receive(state, state.queued.shift()!, ctx);
        return state;
      }
      case 'wake':
        dispatch(state.claimer, msg.shard === undefined ? { type: 'wake' } : { type: 'wake', shard: msg.shard });
        return state;
      case 'status': {
        const replyTo = msg.replyTo;
        void query<ShardManagerMsg, SenderStatus[]>(state.shardManager, (r) => ({ type: 'status', replyTo: r }), 3_000)
          .catch(() => [] as SenderStatus[])
          .then((shards) =>
            reply(replyTo, {
              shards,
              buffered: deps.book.total,
              outcomesQueued: queue.items.length,
              outcomesWritten: queue.written,
              gate: {
                limitPerWindow: deps.gate.limit.count,
                windowMs: deps.gate.limit.windowMs,
                occupied: deps.gate.occupied(),
                waiting: deps.gate.waiting,
                pausedUntil: deps.gate.pausedUntilMs,
              },
            }),
          );
        return state;
      }
      case 'release': {
        if (state.changing) {
          state.queued.push(msg);
          return state;
        }
        // Fencing: stop claiming and sending for these shards now, without waiting on anyone.
        const keep = state.shards.filter((s) => !msg.shards.includes(s));
        state.shards = keep;
        // Rows of a claim still in flight find no sender and are given back at once.
        const claimsDone = query(state.claimer, (r: ReplyTo<void>): ClaimerMsg => ({ type: 'own', shards: keep, replyTo: r }), timeout).catch((e: unknown) =>
          deps.log.warn({ err: describeError(e) }, 'claimer did not confirm the new shard set'),
        );
        const replyTo = msg.replyTo;
        const drained = query<ShardManagerMsg, { released: number }>(
          state.shardManager,
          (r) => ({ type: 'release', shards: msg.shards, replyTo: r }),
          timeout,
        ).then(
          (res) => reply(replyTo, res),
          (e: unknown) => {
            deps.log.warn({ err: describeError(e) }, 'shard release timed out');
            reply(replyTo, { released: 0 });
          },
        );
        // Settled once the old senders are drained and the rows of the last claim (at the shard
        // manager by the time the claimer answers) are given back.
        const shards = msg.shards;
        const settled = Promise.all([claimsDone, drained])
          .then(() => query(state.shardManager, (r: ReplyTo<void>): ShardManagerMsg => ({ type: 'settled', shards, replyTo: r }), timeout))
          .catch((e: unknown) => deps.log.warn({ err: describeError(e), shards }, 'fenced shards did not settle in time'));
        for (const s of shards) state.settling.set(s, settled);
        return state;
      }
      case 'shutdown': {
        if (state.changing) {
          state.queued.push(msg);
          return state;
        }
        const replyTo = msg.replyTo;
        const run = async (): Promise<number> => {
          await query(state.claimer, (r: ReplyTo<void>): ClaimerMsg => ({ type: 'pause', replyTo: r }), timeout).catch((e: unknown) =>
            deps.log.warn({ err: describeError(e) }, 'claimer did not pause'),
          );
          const { released, windows } = await query<ShardManagerMsg, Drained>(state.shardManager, (r) => ({ type: 'drainAll', replyTo: r }), timeout).catch(
            (): Drained => ({ released: 0, windows: new Map() }),
          );
          await query<OutcomeWriterMsg, { written: number }>(state.writer, (r) => ({ type: 'flush', replyTo: r }), timeout).catch((e: unknown) =>
            deps.log.error({ err: describeError(e) }, 'final outcome flush failed'),
          );
          // As at a handoff: shards whose chat windows were handed over are marked released; for the
          // others the next owner (or this process restarted) waits a full window per chat.
          const saved = await deps.handoff.save(deps.repo.owner, windows).catch(() => new Set<number>());
          await deps.repo
            .dropShards(state.shards.filter((s) => saved.has(s)))
            .catch((e: unknown) => deps.log.warn({ err: describeError(e) }, 'could not clear shard fencing rows'));
          return released;
        };
        void run().then((released) => reply(replyTo, { released }));
        return state;
      }
      default:
        return assertNever(msg);
    }
  }

  /**
   * An ownership change's I/O, outside the mailbox: drain and hand back the removed shards,
   * wait for re-taken ones to settle, fence the added ones in the database. Never rejects;
   * what it could not do is logged and left out of the shards it reports.
   */
  async function changeOwnership(
    children: Pick<PipelineState, 'claimer' | 'shardManager'>,
    keep: number[],
    removed: number[],
    added: number[],
    settling: Array<Promise<void>>,
  ): Promise<{ shards: number[]; seeds: Map<number, WindowSeed>; result: OwnResult }> {
    let released = 0;
    let reclaimed = 0;
    let shards = keep;
    const previousOwners: OwnResult['previousOwners'] = [];
    const seeds = new Map<number, WindowSeed>();
    try {
      if (removed.length) {
        // No claim for the removed shards may still be running when their senders drain.
        await query(children.claimer, (replyTo: ReplyTo<void>): ClaimerMsg => ({ type: 'own', shards: keep, replyTo }), timeout).catch((e: unknown) =>
          deps.log.warn({ err: describeError(e) }, 'claimer did not confirm the new shard set'),
        );
        const r = await query<ShardManagerMsg, Drained>(children.shardManager, (replyTo) => ({ type: 'release', shards: removed, replyTo }), timeout).catch(
          (): Drained => ({ released: 0, windows: new Map() }),
        );
        released = r.released;
        // Only a shard whose chat windows were handed over is marked released: for the others the
        // database still names us, and the next owner waits a full window per chat (as after a crash).
        const saved = await deps.handoff.save(deps.repo.owner, r.windows).catch(() => new Set<number>());
        const handed = removed.filter((s) => saved.has(s));
        await deps.repo.dropShards(handed).catch((e: unknown) => deps.log.warn({ err: describeError(e) }, 'could not clear shard fencing rows'));
      }
      if (added.length) {
        // A shard fenced a moment ago (the watchdog, then the first renewal resumes it) may still
        // have rows claimed by us in its old sender. Claiming for it now would take later rows of
        // those chats (the claim lets our own claimed rows be overtaken: they are meant to be
        // queued in front, in this shard's sender), and a new sender's reload would take rows the
        // old one still sends. So the old sender finishes first (docs/architecture.md, "Per-chat order").
        if (settling.length) await Promise.all(settling);
        try {
          const records = await deps.handoff.load(added).catch(() => new Map<number, HandoffRecord>());
          const t = await deps.repo.takeShards(added);
          const now = Date.now();
          reclaimed = t.reclaimed;
          for (const [shard, owner] of t.previous) if (owner && owner !== deps.repo.owner) previousOwners.push({ shard, owner });
          for (const shard of added) seeds.set(shard, seedFor(shard, records.get(shard), t.previous.get(shard) ?? null, deps.repo.owner, now));
          shards = [...keep, ...added].sort((a, b) => a - b);
        } catch (e) {
          deps.log.error({ err: describeError(e), shards: added }, 'could not fence new shards in the database; not claiming them');
        }
      }
    } catch (e) {
      deps.log.error({ err: describeError(e) }, 'ownership change failed; keeping the shards it did not touch');
    }
    return { shards, seeds, result: { owned: shards, released, reclaimed, previousOwners } };
  }
}

/**
 * What a new owner assumes about a shard's chat windows: the previous owner's handoff
 * record when it left one after it last owned the shard; a full window from now when the
 * database still names another owner (it died or was fenced without handing over);
 * nothing when the shard was released cleanly (or never owned). The limits a record's
 * chats learned are taken over in both of the first two cases.
 */
export function seedFor(_shard: number, record: HandoffRecord | undefined, previous: string | null, self: string, now: number): WindowSeed {
  // The database still names another owner: it did not hand over (a crash, a fence, a failed record).
  const learned = record?.learned ? { learned: record.learned } : {};
  if (previous && previous !== self) return { kind: 'blind', at: now, ...learned };
  if (record) return { kind: 'exact', at: record.at, chats: record.chats, complete: record.complete, ...learned };
  return { kind: 'free' };
}
