import type { KV } from 'nats';
import { spawn, dispatch, reply, assertNever, Supervision, type ActorRef, type Parent, type ReplyTo } from '../../src/runtime/actor';
import { describeError } from '../../src/errors';
import type { Logger } from '../../src/log';
import type { Metrics } from '../../src/metrics';
import { fenceAfterMs as fenceTime, type ClusterView, type KvLease, type LeaseValue } from '../../src/cluster/lease';
import { acquireShards, deleteMember, heartbeatAndView, releaseAll } from '../../src/cluster/shard-io';
import { Formation, planShards, wantedShards, type ShardPlan } from '../../src/cluster/shard-plan';
import { HeldShards, type ShardLeaseBoard, type ShardOwnerStatus, type Takeover } from '../../src/cluster/held-shards';
import { ShardKeeper } from '../../src/cluster/shard-keeper';
import type { OwnResult } from '../pipeline/pipeline';

/**
 * Shard owner: this process's seat in the cluster. Every tick it heartbeats its member key, reads who
 * is alive and who holds which shard, computes the balanced assignment, hands off surplus shards
 * gracefully (drain, release rows, delete the lease) and, once the cluster has formed, takes free shards
 * that are its own (create the lease, fence the shard in the database, reclaim a dead owner's rows).
 * The keeper (src/cluster/shard-keeper.ts) renews the leases outside the mailbox and fences shards whose
 * renewal is late: a fenced shard stays ours and in the pipeline with its rows, its senders hold back, and
 * its first successful renewal lets them go on, so a JetStream election only pauses and moves no shard
 * (docs/deploy.md, "Leases and fencing"). I/O runs outside the mailbox, each step reporting as a message.
 */
export type ShardOwnerMsg =
  | { type: 'tick' }
  | { type: 'status'; replyTo: ReplyTo<ShardOwnerStatus> }
  /** The renewer made fenced shards valid again: un-fence them at once (no heartbeat and view first). */
  | { type: 'resume' }
  /** Shutdown: hand every shard back and leave the cluster; the reply comes once the keys are deleted. */
  | { type: 'leave'; replyTo: ReplyTo<void> }
  /** Internal, the steps of a tick: heartbeat written and view read; surplus drained and released; leases won. */
  | { type: 'viewed'; view: ClusterView }
  | { type: 'handedOff'; surplus: number[]; result: OwnResult }
  | { type: 'acquired'; got: Array<[number, KvLease]> }
  /** Internal: the pipeline owns `held` now (after acquiring `got`, or to re-sync). */
  | { type: 'owned'; result: OwnResult; held: number[]; got: number[] }
  | { type: 'tickFailed'; error: unknown }
  | { type: 'left' };

export type { ShardOwnerStatus, Takeover };

/** How the pipeline is driven; the real one is Pipeline.own/fence. */
export interface OwnedShards {
  own(shards: number[]): Promise<OwnResult>;
  fence(shards: number[]): Promise<{ released: number }>;
}

export interface ShardOwnerDeps {
  kv: KV;
  pipeline: OwnedShards;
  log: Logger;
  metrics: Metrics;
  holder: string; // `<instance>:<boot id>`, the same as the outbox's claimed_by
  instance: string;
  shardCount: number;
  leaseTtlMs: number;
  formationMs: number;
  /** Where the senders read the leases held before each send (absent: tests of the owner alone). */
  board?: ShardLeaseBoard;
}

export interface ShardOwnerState {
  /** The leases held, and the ones not sent for now (renewal late); the renewer resumes them. */
  held: HeldShards;
  /** Renews and fences `held` on its own timers, outside the mailbox. */
  keeper: ShardKeeper;
  members: string[];
  map: Map<number, string>;
  takeovers: Takeover[];
  /** What the pipeline last confirmed it owns; re-synced when it differs from the leases held. */
  pipelineOwned: number[];
  /** Shards lost and released in the pipeline since the pipeline call in flight began: its answer predates that. */
  released: Set<number>;
  timers: NodeJS.Timeout[];
  leaving: boolean;
  /** A tick is in flight (one at a time); `plan`: its assignment, once the view is read. */
  ticking: boolean;
  plan: ShardPlan | null;
  /** A tick was asked for while one was in flight: run it right after. */
  tickAgain: boolean;
  /** Who asked to leave: it starts once the tick in flight is done (its pipeline calls come first). */
  leaveAsked: Array<ReplyTo<void>> | null;
  formation: Formation;
}

export function spawnShardOwner(parent: Parent, deps: ShardOwnerDeps): ActorRef<ShardOwnerMsg> {
  const { kv, pipeline, log, metrics, holder, instance, shardCount, leaseTtlMs, formationMs } = deps;
  const fenceAfterMs = fenceTime(leaseTtlMs);
  const value = (): LeaseValue => ({ holder, instance, since: Date.now() });
  const mOwned = metrics.gauge('cluster_shards_owned', 'Shards whose lease this process holds');
  const mTakeovers = metrics.counter('cluster_takeovers_total', 'Shards taken over from a process that died or lost its lease');
  const mFenced = metrics.counter('cluster_fenced_total', 'Shards this process stopped sending for because it could not renew the lease');
  const mHandoffs = metrics.counter('cluster_handoffs_total', 'Shards handed to another process gracefully');
  /** Another process wrote these shards' keys (the keeper found out, outside the mailbox): the pipeline gives their rows back now. */
  const lost = async (state: ShardOwnerState, shards: number[]): Promise<void> => {
    state.pipelineOwned = state.pipelineOwned.filter((s) => !shards.includes(s));
    shards.forEach((s) => state.released.add(s));
    await pipeline.fence(shards).then(undefined, (e: unknown) => log.error({ err: describeError(e) }, 'fencing failed'));
  };
  /** Un-fences the shards a renewal made valid again: the pipeline still owns them, its senders go on by themselves. */
  const resumeValid = (state: ShardOwnerState): void => {
    const shards = state.held.resumeValid();
    if (shards.length) log.info({ shards: shards.length }, 'fenced shards valid again: sending for them');
  };

  /** Runs I/O outside the mailbox; its result comes back as the message it makes, a failure as 'tickFailed'. */
  const run = (self: ActorRef<ShardOwnerMsg>, work: () => Promise<ShardOwnerMsg>): void => {
    work().then(
      (m) => dispatch(self, m),
      (error: unknown) => dispatch(self, { type: 'tickFailed', error }),
    );
  };
  /** The pipeline owns exactly `held` (fences them in the database); `got`: just leased. */
  const own = (state: ShardOwnerState, self: ActorRef<ShardOwnerMsg>, held: number[], got: number[]): void => {
    state.released.clear();
    run(self, async () => ({ type: 'owned', result: await pipeline.own(held), held, got }));
  };

  /** After the handoff (if any): take the free shards that are ours. */
  const acquireStep = (state: ShardOwnerState, self: ActorRef<ShardOwnerMsg>, plan: ShardPlan): void => {
    const wanted = wantedShards(plan, holder, state.held.leases);
    if (wanted.length === 0 || state.leaveAsked || !state.formation.ready(plan, holder, Date.now())) syncStep(state, self);
    else run(self, async () => ({ type: 'acquired', got: await acquireShards(kv, wanted, value, fenceAfterMs, log) }));
  };

  /** A shard leased but not fenced in the database (a failed write) would be sent by nobody: retry. */
  const syncStep = (state: ShardOwnerState, self: ActorRef<ShardOwnerMsg>): void => {
    const held = state.held.owned();
    if (state.leaveAsked || held.join() === [...state.pipelineOwned].sort((a, b) => a - b).join()) finish(state, self);
    else own(state, self, held, []);
  };

  /** The tick is done: a leave waiting for it starts now, a tick asked for meanwhile runs. */
  const finish = (state: ShardOwnerState, self: ActorRef<ShardOwnerMsg>): void => {
    state.ticking = false;
    state.plan = null;
    if (state.leaveAsked) startLeave(state, self);
    else {
      mOwned.set(state.held.sendingCount);
      if (state.tickAgain) dispatch(self, { type: 'tick' });
      state.tickAgain = false;
    }
  };

  /** Drain, then delete the leases and the member key; the reply goes out with 'left'. */
  const startLeave = (state: ShardOwnerState, self: ActorRef<ShardOwnerMsg>): void => {
    const leases = [...state.held.leases.values()];
    void (async () => {
      await pipeline.own([]).catch((e: unknown) => log.warn({ err: describeError(e) }, 'drain on leave failed'));
      await releaseAll(leases);
      await deleteMember(kv, holder);
    })().then(() => dispatch(self, { type: 'left' }));
  };

  return spawn<ShardOwnerState, ShardOwnerMsg>(parent, {
    name: 'shard-owner',
    supervision: Supervision.restartWithBackoff({ minBackoffMs: 200, maxBackoffMs: 5_000 }),
    init: (ctx) => {
      const held = new HeldShards();
      const resumable = () => void dispatch(ctx.self, { type: 'resume' });
      const state: ShardOwnerState = {
        held,
        // A fenced shard's gauge follows at the next tick's end (ticks fail at once during an election).
        keeper: new ShardKeeper({ held, leaseTtlMs, fenceAfterMs, log, fenced: (s) => mFenced.inc(s.length), lost: (s) => lost(state, s), resumable }),
        members: [],
        map: new Map(),
        takeovers: [],
        pipelineOwned: [],
        released: new Set(),
        timers: [],
        leaving: false,
        ticking: false,
        plan: null,
        tickAgain: false,
        leaveAsked: null,
        formation: new Formation(formationMs, formationMs + leaseTtlMs, (f) => log.info(f, 'cluster formed: taking shards')),
      };
      // Every TTL/12 (500 ms by default): how soon a silent holder is noticed is part of the takeover time.
      state.timers.push(setInterval(() => dispatch(ctx.self, { type: 'tick' }), Math.max(100, Math.floor(leaseTtlMs / 12))));
      deps.board?.attach(state.held);
      state.keeper.start();
      setImmediate(() => dispatch(ctx.self, { type: 'tick' }));
      return state;
    },
    afterStop: (state) => (state.timers.forEach((t) => clearInterval(t)), state.keeper.stop(), deps.board?.detach(state.held)),
    receive: (state, msg, ctx) => {
      const self = ctx.self;
      switch (msg.type) {
        case 'tick':
        case 'resume':
          if (state.leaving) return state;
          if (state.ticking) state.tickAgain = true;
          else {
            state.ticking = true;
            // A resume skips the heartbeat and view: the renewal proved the leases ours, the pipeline only has to take them back.
            if (msg.type === 'resume') {
              resumeValid(state);
              syncStep(state, self);
            } else run(self, async () => ({ type: 'viewed', view: await heartbeatAndView(kv, value(), { shardCount, leaseTtlMs }) }));
          }
          return state;
        case 'viewed': {
          // Fenced shards resume here too: the renewer made them valid again.
          resumeValid(state);
          const plan = planShards(shardCount, holder, msg.view, state.held.leases.keys());
          state.members = plan.members;
          state.map = plan.map;
          state.plan = plan;
          if (plan.surplus.length === 0 || state.leaveAsked) {
            acquireStep(state, self, plan);
            return state;
          }
          // Graceful handoff: stop claiming, finish or give back in-flight rows, then free the lease.
          const keep = state.held.owned().filter((s) => !plan.surplus.includes(s));
          const leases = plan.surplus.map((s) => state.held.leases.get(s));
          state.released.clear();
          run(self, async () => {
            const result = await pipeline.own(keep);
            await releaseAll(leases);
            return { type: 'handedOff', surplus: plan.surplus, result };
          });
          return state;
        }
        case 'handedOff':
          state.pipelineOwned = msg.result.owned.filter((s) => !state.released.has(s));
          state.held.drop(msg.surplus);
          mHandoffs.inc(msg.surplus.length);
          log.info({ shards: msg.surplus, releasedRows: msg.result.released }, 'shards handed off');
          if (state.plan) acquireStep(state, self, state.plan);
          else finish(state, self);
          return state;
        case 'acquired': {
          // Held from now on (a leave asked meanwhile releases them with the rest).
          for (const [s, l] of msg.got) state.held.leases.set(s, l);
          if (msg.got.length === 0 || state.leaveAsked) {
            syncStep(state, self);
            return state;
          }
          const got = msg.got.map(([s]) => s);
          own(state, self, state.held.owned(), got);
          return state;
        }
        case 'owned': {
          const r = msg.result;
          // A shard lost while the call ran was released after it: its answer predates that.
          state.pipelineOwned = r.owned.filter((s) => !state.released.has(s));
          if (msg.got.length === 0) {
            if (r.owned.length !== msg.held.length)
              log.warn({ leased: msg.held.length, fenced: r.owned.length }, 'some leased shards are not fenced in the database yet; retrying next tick');
            finish(state, self);
            return state;
          }
          // Shards whose fencing row still named another process: it died or lost its lease.
          state.takeovers = [...r.previousOwners.map((p) => ({ shard: p.shard, from: p.owner, at: Date.now() })).reverse(), ...state.takeovers].slice(0, 100);
          mTakeovers.inc(r.previousOwners.length);
          const silent = msg.got.filter((s) => state.held.leases.get(s)?.acquiredBy === 'taken-over');
          log.info(
            { shards: msg.got.sort((a, b) => a - b), takenOver: r.previousOwners.map((p) => p.shard), fromSilentHolder: silent, reclaimedRows: r.reclaimed },
            'shards acquired',
          );
          syncStep(state, self);
          return state;
        }
        case 'tickFailed':
          log.warn({ err: describeError(msg.error) }, 'cluster tick failed');
          finish(state, self);
          return state;
        case 'status':
          reply(msg.replyTo, {
            holder,
            ...state.held.status(),
            members: state.members,
            map: Object.fromEntries(state.map),
            takeovers: state.takeovers.slice(0, 20),
          });
          return state;
        case 'leave':
          // The renewer stops; a tick in flight finishes its pipeline calls first (they must not overtake the drain).
          state.leaving = true;
          state.timers.forEach((t) => clearInterval(t));
          state.keeper.stop();
          if (state.leaveAsked) state.leaveAsked.push(msg.replyTo);
          else {
            state.leaveAsked = [msg.replyTo];
            if (!state.ticking) startLeave(state, self);
          }
          return state;
        case 'left':
          state.held.leases.clear();
          mOwned.set(0);
          state.leaveAsked?.forEach((r) => reply(r, undefined));
          state.leaveAsked = null;
          return state;
        default:
          return assertNever(msg);
      }
    },
  });
}
