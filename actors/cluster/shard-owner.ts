import type { KV } from 'nats';
import { spawn, dispatch, reply, assertNever, Supervision, type ActorRef, type Parent, type ReplyTo } from '../../src/runtime/actor';
import { describeError } from '../../src/errors';
import type { Logger } from '../../src/log';
import type { Metrics } from '../../src/metrics';
import { assignShards } from '../../src/cluster/assign';
import { KvLease, fenceAfterMs as fenceTime, readClusterView, type LeaseValue } from '../../src/cluster/lease';
import { encodeValue, leaseClock } from '../../src/cluster/kv';
import type { OwnResult } from '../pipeline/pipeline';

/**
 * Shard owner: this process's seat in the cluster. Every tick it heartbeats its member
 * key, reads who is alive and who holds which shard, computes the balanced assignment,
 * hands off surplus shards gracefully (drain, release rows, then delete the lease) and
 * takes free shards that are its own (create the lease, fence the shard in the database,
 * reclaim rows a dead owner held). Outside the mailbox, a renewer rewrites the leases
 * every TTL/12 and a watchdog stops sending for shards whose last renewal is older than
 * the fence time (TTL − max(500 ms, TTL/6)), before anyone else may take them. A fenced
 * shard stays ours: the renewer keeps trying, and the first successful renewal (a
 * compare-and-set, so nobody wrote the key meanwhile) resumes sending. A JetStream
 * leader election that nobody can write through therefore pauses at most, and moves
 * no shard (docs/deploy.md, "Leases and fencing").
 */
export type ShardOwnerMsg =
  | { type: 'tick' }
  | { type: 'status'; replyTo: ReplyTo<ShardOwnerStatus> }
  /** Shutdown: hand every shard back and leave the cluster. */
  | { type: 'leave'; replyTo: ReplyTo<void> };

export interface Takeover {
  shard: number;
  from: string;
  at: number;
}

export interface ShardOwnerStatus {
  holder: string;
  owned: number[];
  /** Owned shards this process does not send for now: the lease could not be renewed in time. */
  fenced: number[];
  members: string[];
  /** shard → holder, as last read from the KV bucket. */
  map: Record<number, string>;
  takeovers: Takeover[];
}

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
  /** `<instance>:<boot id>`, the same as the outbox's claimed_by. */
  holder: string;
  instance: string;
  shardCount: number;
  leaseTtlMs: number;
}

export interface ShardOwnerState {
  leases: Map<number, KvLease>;
  /** Held shards not sent for now (renewal late); the renewer resumes them. */
  fenced: Set<number>;
  members: string[];
  map: Map<number, string>;
  takeovers: Takeover[];
  /** What the pipeline last confirmed it owns; re-synced when it differs from the leases held. */
  pipelineOwned: number[];
  timers: NodeJS.Timeout[];
  leaving: boolean;
  since: number;
}

const memberKey = (holder: string) => `member.${holder.replace(/[^-/_=.a-zA-Z0-9]/g, '_')}`;
const shardKey = (s: number) => `shard.${s}`;

export function spawnShardOwner(parent: Parent, deps: ShardOwnerDeps): ActorRef<ShardOwnerMsg> {
  const { kv, pipeline, log, metrics, holder, instance, shardCount, leaseTtlMs } = deps;
  const fenceAfterMs = fenceTime(leaseTtlMs);
  const clock = leaseClock(kv);
  const value = (): LeaseValue => ({ holder, instance, since: Date.now() });
  const mOwned = metrics.gauge('cluster_shards_owned', 'Shards whose lease this process holds');
  const mTakeovers = metrics.counter('cluster_takeovers_total', 'Shards taken over from a process that died or lost its lease');
  const mFenced = metrics.counter('cluster_fenced_total', 'Shards this process stopped sending for because it could not renew the lease');
  const mHandoffs = metrics.counter('cluster_handoffs_total', 'Shards handed to another process gracefully');

  /** Runs outside the mailbox: a tick stuck on an unreachable NATS must not delay fencing. */
  const watchdog = (state: ShardOwnerState): void => {
    const now = Date.now();
    const late = [...state.leases].filter(([s, l]) => !state.fenced.has(s) && !l.valid(now)).map(([s]) => s);
    if (late.length === 0) return;
    for (const s of late) state.fenced.add(s);
    state.pipelineOwned = state.pipelineOwned.filter((s) => !state.fenced.has(s));
    mFenced.inc(late.length);
    mOwned.set(state.leases.size - state.fenced.size);
    log.warn({ shards: late, fenceAfterMs }, 'lease not renewed in time: stopped sending for these shards (still ours; resuming after the next renewal)');
    pipeline.fence(late).catch((e: unknown) => {
      log.error({ err: describeError(e) }, 'fencing failed');
    });
  };

  /** Runs outside the mailbox, every TTL/12: keeping what we hold matters more than anything else. */
  const renewAll = async (state: ShardOwnerState, self: ActorRef<ShardOwnerMsg>): Promise<void> => {
    if (state.leaving) return;
    const lost: number[] = [];
    const resumed: number[] = [];
    await Promise.all(
      [...state.leases].map(async ([s, l]) => {
        try {
          if (!(await l.renew())) lost.push(s);
          else if (state.fenced.has(s) && l.valid()) resumed.push(s);
        } catch {
          /* no answer: still ours; the watchdog fences it if this lasts */
        }
      }),
    );
    if (lost.length) {
      const notFenced = lost.filter((s) => state.leases.has(s) && !state.fenced.has(s));
      for (const s of lost) {
        state.leases.delete(s);
        state.fenced.delete(s);
      }
      state.pipelineOwned = state.pipelineOwned.filter((s) => !lost.includes(s));
      mOwned.set(state.leases.size - state.fenced.size);
      log.warn({ shards: lost }, 'another process holds these shards now: stopped sending for them');
      if (notFenced.length) {
        await pipeline.fence(notFenced).catch((e: unknown) => {
          log.error({ err: describeError(e) }, 'fencing failed');
        });
      }
    }
    if (resumed.length) dispatch(self, { type: 'tick' });
  };

  const tick = async (state: ShardOwnerState): Promise<void> => {
    try {
      await kv.put(memberKey(holder), encodeValue(value()));
    } catch (e) {
      clock.trouble(e);
      throw e;
    }
    // Fenced shards resume here too: the renewer made them valid again.
    for (const [s, l] of state.leases) if (state.fenced.has(s) && l.valid()) state.fenced.delete(s);
    const view = await readClusterView(kv, { shardCount, listTimeoutMs: Math.max(200, Math.floor(leaseTtlMs / 12)) });
    state.members = view.members;
    state.map = view.shards;
    if (!state.members.includes(holder)) state.members.push(holder);
    for (const s of state.leases.keys()) view.shards.set(s, holder);
    const target = assignShards(shardCount, state.members, view.shards);
    const mine = [...state.leases.keys()];
    const surplus = mine.filter((s) => target.get(s) !== holder);
    if (surplus.length) {
      // Graceful handoff: stop claiming, finish or give back in-flight rows, then free the lease.
      const keep = mine.filter((s) => !surplus.includes(s) && !state.fenced.has(s));
      const r = await pipeline.own(keep);
      state.pipelineOwned = r.owned;
      await Promise.all(
        surplus.map(async (s) => {
          await state.leases
            .get(s)
            ?.release()
            .catch(() => undefined);
        }),
      );
      for (const s of surplus) {
        state.leases.delete(s);
        state.fenced.delete(s);
      }
      mHandoffs.inc(surplus.length);
      log.info({ shards: surplus, releasedRows: r.released }, 'shards handed off');
    }
    // Free, still naming us (from before a fence), or held by a holder silent for the TTL (view.stale).
    const wanted = [...target]
      .filter(([s, m]) => m === holder && !state.leases.has(s) && (!view.shards.has(s) || view.shards.get(s) === holder))
      .map(([s]) => s);
    if (wanted.length) {
      const got: number[] = [];
      await Promise.all(
        wanted.map(async (s) => {
          const lease = new KvLease(kv, shardKey(s), value(), fenceAfterMs);
          try {
            if (await lease.acquire()) {
              state.leases.set(s, lease);
              got.push(s);
            }
          } catch (e) {
            log.warn({ shard: s, err: describeError(e) }, 'lease acquisition failed');
          }
        }),
      );
      if (got.length) {
        const r = await pipeline.own([...state.leases.keys()].filter((s) => !state.fenced.has(s)));
        state.pipelineOwned = r.owned;
        const now = Date.now();
        // Shards whose fencing row still named another process: it died or lost its lease.
        for (const p of r.previousOwners) state.takeovers.unshift({ shard: p.shard, from: p.owner, at: now });
        mTakeovers.inc(r.previousOwners.length);
        state.takeovers.length = Math.min(state.takeovers.length, 100);
        const silent = got.filter((s) => state.leases.get(s)?.acquiredBy === 'taken-over');
        log.info(
          { shards: got.sort((a, b) => a - b), takenOver: r.previousOwners.map((p) => p.shard), fromSilentHolder: silent, reclaimedRows: r.reclaimed },
          'shards acquired',
        );
      }
    }
    // A shard leased but not fenced in the database (a failed write) would be sent by nobody: retry.
    const held = [...state.leases.keys()].filter((s) => !state.fenced.has(s)).sort((a, b) => a - b);
    if (held.join() !== [...state.pipelineOwned].sort((a, b) => a - b).join()) {
      const r = await pipeline.own(held);
      state.pipelineOwned = r.owned;
      if (r.owned.length !== held.length)
        log.warn({ leased: held.length, fenced: r.owned.length }, 'some leased shards are not fenced in the database yet; retrying next tick');
    }
    mOwned.set(state.leases.size - state.fenced.size);
  };

  return spawn<ShardOwnerState, ShardOwnerMsg>(parent, {
    name: 'shard-owner',
    supervision: Supervision.restartWithBackoff({ minBackoffMs: 200, maxBackoffMs: 5_000 }),
    init: (ctx) => {
      const state: ShardOwnerState = {
        leases: new Map(),
        fenced: new Set(),
        members: [],
        map: new Map(),
        takeovers: [],
        pipelineOwned: [],
        timers: [],
        leaving: false,
        since: Date.now(),
      };
      // Every TTL/12 (500 ms by default): how soon a silent holder is noticed is part of the takeover time.
      state.timers.push(setInterval(() => dispatch(ctx.self, { type: 'tick' }), Math.max(100, Math.floor(leaseTtlMs / 12))));
      state.timers.push(setInterval(() => void renewAll(state, ctx.self), Math.max(50, Math.floor(leaseTtlMs / 12))));
      state.timers.push(
        setInterval(
          () => {
            watchdog(state);
          },
          Math.max(50, Math.floor(leaseTtlMs / 20)),
        ),
      );
      setImmediate(() => dispatch(ctx.self, { type: 'tick' }));
      return state;
    },
    afterStop: (state) => state.timers.forEach((t) => clearInterval(t)),
    receive: async (state, msg) => {
      switch (msg.type) {
        case 'tick':
          if (state.leaving) return state;
          try {
            await tick(state);
          } catch (e) {
            log.warn({ err: describeError(e) }, 'cluster tick failed');
          }
          return state;
        case 'status':
          reply(msg.replyTo, {
            holder,
            owned: [...state.leases.keys()].sort((a, b) => a - b),
            fenced: [...state.fenced].sort((a, b) => a - b),
            members: state.members,
            map: Object.fromEntries(state.map),
            takeovers: state.takeovers.slice(0, 20),
          });
          return state;
        case 'leave': {
          state.leaving = true;
          state.timers.forEach((t) => clearInterval(t));
          try {
            await pipeline.own([]);
          } catch (e) {
            log.warn({ err: describeError(e) }, 'drain on leave failed');
          }
          await Promise.all([...state.leases.values()].map((l) => l.release().catch(() => undefined)));
          state.leases.clear();
          await kv.delete(memberKey(holder)).catch(() => undefined);
          mOwned.set(0);
          reply(msg.replyTo, undefined);
          return state;
        }
        default:
          return assertNever(msg);
      }
    },
  });
}
