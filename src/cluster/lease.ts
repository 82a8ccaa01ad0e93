import type { KV } from 'nats';
import { decodeValue, encodeValue, isWrongRevision } from './kv';

/** What a lease key holds. `holder` is the process's owner id (`<instance>:<boot id>`). */
export interface LeaseValue {
  holder: string;
  instance: string;
  since: number;
}

export type LeaseState =
  | { kind: 'held'; revision: number; renewedAt: number }
  | { kind: 'lost'; reason: 'taken' | 'expired' };

/**
 * A lease on one KV key: create it (fails if someone holds it), keep it by rewriting it
 * with compare-and-set on the revision well inside the bucket TTL, and give it up by
 * deleting it (only our own revision). A holder that cannot renew for `fenceAfterMs`
 * must stop acting on the lease before anyone else can take it (TTL > fenceAfterMs).
 *
 * Used for shard ownership, the budget coordinator and the ads singletons.
 */
export class KvLease {
  private revision = 0;
  private renewedAt = 0;

  constructor(
    private readonly kv: KV,
    readonly key: string,
    private readonly value: LeaseValue,
    /** Stop acting on the lease when the last successful write is older than this. */
    private readonly fenceAfterMs: number,
  ) {}

  /** True while the last successful write is recent enough to act on. */
  valid(now = Date.now()): boolean {
    return this.revision > 0 && now - this.renewedAt < this.fenceAfterMs;
  }

  get held(): boolean {
    return this.revision > 0;
  }

  /** The KV revision of our last successful write (0 when not held): grants name it so receivers can check them. */
  get currentRevision(): number {
    return this.revision;
  }

  /** Takes the lease if nobody holds it. */
  async acquire(): Promise<boolean> {
    const started = Date.now();
    try {
      this.revision = await this.kv.create(this.key, encodeValue(this.value));
      this.renewedAt = started;
      return true;
    } catch (e) {
      if (isWrongRevision(e)) return false;
      throw e;
    }
  }

  /** Rewrites the key (CAS). Returns false when someone else holds it now: stop at once. */
  async renew(): Promise<boolean> {
    if (this.revision === 0) return false;
    const started = Date.now();
    try {
      this.revision = await this.kv.update(this.key, encodeValue(this.value), this.revision);
      this.renewedAt = started;
      return true;
    } catch (e) {
      if (isWrongRevision(e)) {
        this.revision = 0;
        return false;
      }
      throw e;
    }
  }

  /** Gives the lease up (only if it is still ours). */
  async release(): Promise<void> {
    if (this.revision === 0) return;
    const rev = this.revision;
    this.revision = 0;
    try {
      await this.kv.delete(this.key, { previousSeq: rev });
    } catch (e) {
      if (!isWrongRevision(e)) throw e;
    }
  }

  /** Forget the lease locally (after fencing); the key ages out by itself. */
  forget(): void {
    this.revision = 0;
  }
}

/** Reads who holds a lease key now (undefined when free: missing, deleted or expired). */
export async function leaseHolder(kv: KV, key: string): Promise<LeaseValue | undefined> {
  const e = await kv.get(key);
  if (!e || e.operation !== 'PUT') return undefined;
  return decodeValue<LeaseValue>(e.value);
}

/** Who is alive and who holds which shard, read from the bucket now (keys age out with the TTL). */
export async function readClusterView(kv: KV): Promise<{ members: string[]; shards: Map<number, string> }> {
  const keys: string[] = [];
  for await (const k of await kv.keys()) keys.push(k);
  const members: string[] = [];
  const shards = new Map<number, string>();
  await Promise.all(
    keys.map(async (k) => {
      const v = await leaseHolder(kv, k);
      if (!v) return;
      if (k.startsWith('member.')) members.push(v.holder);
      else if (k.startsWith('shard.')) shards.set(Number(k.slice(6)), v.holder);
    }),
  );
  return { members: members.sort(), shards };
}
