import type { KV } from 'nats';
import { describeError } from '../errors';
import type { Logger } from '../log';
import { encodeValue, leaseClock } from './kv';
import { KvLease, readClusterView, type ClusterView, type LeaseValue } from './lease';
import { memberKey, shardKey } from './shard-plan';

/**
 * The shard owner's KV I/O (actors/cluster/shard-owner.ts runs each outside its mailbox and
 * gets the result back as a message).
 */

/** Heartbeats the member key, then reads who is alive and who holds which shard. */
export async function heartbeatAndView(kv: KV, value: LeaseValue, o: { shardCount: number; leaseTtlMs: number }): Promise<ClusterView> {
  try {
    await kv.put(memberKey(value.holder), encodeValue(value));
  } catch (e) {
    // A failed write may say JetStream cannot take writes now: nobody's silence counts meanwhile.
    leaseClock(kv).trouble(e);
    throw e;
  }
  return readClusterView(kv, { shardCount: o.shardCount, listTimeoutMs: Math.max(200, Math.floor(o.leaseTtlMs / 12)) });
}

/** Tries to lease each shard; returns the leases won (a failure is logged and counts as not won). */
export async function acquireShards(kv: KV, shards: number[], value: () => LeaseValue, fenceAfterMs: number, log: Logger): Promise<Array<[number, KvLease]>> {
  const take = async (s: number): Promise<[number, KvLease] | undefined> => {
    const lease = new KvLease(kv, shardKey(s), value(), fenceAfterMs);
    try {
      return (await lease.acquire()) ? [s, lease] : undefined;
    } catch (e) {
      log.warn({ shard: s, err: describeError(e) }, 'lease acquisition failed');
      return undefined;
    }
  };
  return (await Promise.all(shards.map(take))).filter((x) => x !== undefined);
}

/** Deletes leases (only where still ours); never rejects. */
export async function releaseAll(leases: Iterable<KvLease | undefined>): Promise<void> {
  await Promise.all([...leases].map((l) => (l ? l.release().catch(() => undefined) : Promise.resolve())));
}

/** Deletes the member key: the process left the cluster. Never rejects. */
export async function deleteMember(kv: KV, holder: string): Promise<void> {
  await kv.delete(memberKey(holder)).catch(() => undefined);
}
