import { assignShards } from './assign';
import type { ClusterView } from './lease';

/** The KV key a process heartbeats to say it is alive. */
export const memberKey = (holder: string): string => `member.${holder.replace(/[^-/_=.a-zA-Z0-9]/g, '_')}`;
/** The KV key of a shard's lease. */
export const shardKey = (s: number): string => `shard.${s}`;

/** What one process's shard owner does at a tick, read from the cluster view (src/cluster/lease.ts). */
export interface ShardPlan {
  /** Live members, this process included. */
  members: string[];
  /** shard → holder as read, with the leases this process holds counted as its own. */
  map: Map<number, string>;
  /** The balanced assignment (src/cluster/assign.ts) every process computes from the same view. */
  target: Map<number, string>;
  /** Held shards the assignment gives to someone else: hand them off. */
  surplus: number[];
}

/** The assignment as this process sees it: the view, with its own heartbeat and its own leases in it. */
export function planShards(shardCount: number, holder: string, view: ClusterView, held: Iterable<number>): ShardPlan {
  const members = view.members.includes(holder) ? [...view.members] : [...view.members, holder];
  const map = new Map(view.shards);
  const mine = [...held];
  for (const s of mine) map.set(s, holder);
  const target = assignShards(shardCount, members, map);
  return { members, map, target, surplus: mine.filter((s) => target.get(s) !== holder) };
}

/**
 * Shards to take: ours by the assignment, not held yet, and free, still naming us (from
 * before a fence), or held by a holder silent for the TTL (those are left out of `map`).
 */
export function wantedShards(plan: ShardPlan, holder: string, held: { has(s: number): boolean }): number[] {
  return [...plan.target].filter(([s, m]) => m === holder && !held.has(s) && (!plan.map.has(s) || plan.map.get(s) === holder)).map(([s]) => s);
}

/**
 * How a process that has never held a shard joins a cluster that is forming. Processes started
 * together (a fleet restarted by a deploy) see each other's member keys only over their first
 * ticks; the first one to read the bucket would otherwise take every shard and then hand most of
 * them over again (each handover drains senders and makes the new owner wait a window per chat).
 * So a newcomer takes free shards only once the member list it reads has stayed the same for
 * `settleMs` (at most `maxMs` after its first view), or at once when another member already holds
 * shards (the cluster has formed: its free shards are a dead holder's, and waiting only delays them).
 */
export class Formation {
  private members: string | null = null;
  private since = 0;
  private first: number | null = null;
  private done = false;

  constructor(
    private readonly settleMs: number,
    private readonly maxMs: number,
    /** Hears once, when free shards may be taken. */
    private readonly formed: (f: { members: number; waitedMs: number }) => void = () => {},
  ) {}

  /** Whether this process may take free shards now, given the tick's plan. */
  ready(plan: Pick<ShardPlan, 'members' | 'map'>, holder: string, now: number): boolean {
    if (this.done) return true;
    const key = [...plan.members].sort().join('\n');
    this.first ??= now;
    if (key !== this.members) {
      this.members = key;
      this.since = now;
    }
    const othersHold = [...plan.map.values()].some((h) => h !== holder);
    if (othersHold || now - this.since >= this.settleMs || now - this.first >= this.maxMs) {
      this.done = true;
      this.formed({ members: plan.members.length, waitedMs: now - this.first });
    }
    return this.done;
  }
}
