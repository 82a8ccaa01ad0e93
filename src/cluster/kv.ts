import type { KV, NatsConnection } from 'nats';
import { assertStreamMatches } from '../nats/streams';

/**
 * How long the bucket keeps a key after its last write: max(15 s, 3 × TTL), longer than any
 * election measured here (≤ 8 s) plus a renewal, so live holders' keys never age out; NOT
 * the lease timeout, but the last resort for a dead holder's key when the takeover by
 * compare-and-set cannot succeed (seen after node restarts on nats-server 2.9.10: a replica
 * answered reads with a revision the stream leader did not have, so every CAS failed). A lease is taken over when its
 * holder has been silent for the lease TTL while the taker could use the KV (see
 * LeaseClock); tying it to the bucket's max age would let a JetStream leader election
 * (4–6 s on nats-server 2.9, writes impossible for everyone) expire every lease at once.
 */
export function keyMaxAgeMs(leaseTtlMs: number): number {
  return Math.max(15_000, 3 * leaseTtlMs);
}

export interface ClusterBucketOptions {
  /** SHARD_LEASE_TTL_MS: a holder silent this long (while the KV works) loses its leases. */
  leaseTtlMs: number;
  /** NATS_REPLICAS. */
  replicas: number;
}

/**
 * Opens (or creates) the cluster's KV bucket with `replicas` replicas. Reopening an
 * existing bucket silently keeps its old options, so replicas or key age that differ
 * from ours are refused here (NATS_STREAM_MISMATCH, with the migration step) rather
 * than discovered as a split brain or a lost node later.
 */
export async function openClusterBucket(nc: NatsConnection, name: string, o: ClusterBucketOptions): Promise<KV> {
  const maxAge = keyMaxAgeMs(o.leaseTtlMs);
  // A short request timeout: a renewal stuck on a dead server must fail fast and be retried.
  const kv = await nc
    .jetstream({ timeout: Math.max(500, Math.min(2_000, Math.floor(o.leaseTtlMs / 4))) })
    .views.kv(name, { ttl: maxAge, history: 1, replicas: o.replicas });
  const status = await kv.status();
  assertStreamMatches(status.streamInfo.config, {
    stream: `KV_${name}`,
    what: `cluster KV bucket "${name}"`,
    replicas: o.replicas,
    maxAgeMs: maxAge,
    maxAgeVar: `SHARD_LEASE_TTL_MS=${o.leaseTtlMs} (keys kept max(15 s, 3 × SHARD_LEASE_TTL_MS))`,
  });
  // Read from the stream leader, not from any replica (nats.js's "direct" gets): after node
  // restarts a replica answered with a revision the leader did not have, so a takeover's
  // compare-and-set could never succeed. The leader's answer is what a CAS is checked against.
  (kv as unknown as { direct: boolean }).direct = false;
  clocks.set(kv, new LeaseClock(o.leaseTtlMs));
  return kv;
}

/**
 * This process's view of how long each lease key has gone without a write. A holder
 * renews every few hundred ms; a key whose revision stayed the same for the whole TTL,
 * counted only while this process itself could use the KV, belongs to a holder that
 * is dead or cut off (it fenced itself before that: fence time < TTL). Any failed KV
 * write of ours (heartbeat, renewal, creation) restarts the count for every key, so an
 * election that nobody can write through costs no one a lease.
 */
export class LeaseClock {
  private troubleAt = 0;
  private readonly seen = new Map<string, { revision: number; at: number }>();
  private readonly writes = new Map<string, number>();

  constructor(
    readonly ttlMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  /**
   * A KV write failed: when the failure says JetStream cannot take writes now (503 no
   * responders / no leader, JetStream temporarily unavailable: an election), restart every
   * count. A timeout says nothing about the others (a slow or lost request): no restart.
   */
  trouble(why?: unknown): void {
    if (!isUnavailable(why)) return;
    this.troubleAt = this.now();
  }

  /**
   * Notes the key's revision; returns for how long (ms) the newest revision seen has been
   * unchanged while the KV worked for us. An older revision than one already seen is a read
   * from a replica that lags behind (nats.js reads from any replica): it changes nothing.
   */
  observe(key: string, revision: number): number {
    const now = this.now();
    const s = this.seen.get(key);
    if (!s || revision > s.revision) {
      this.seen.set(key, { revision, at: now });
      return 0;
    }
    return now - Math.max(s.at, this.troubleAt);
  }

  /** The newest revision of `key` this process has seen (0 when none). */
  newest(key: string): number {
    return this.seen.get(key)?.revision ?? 0;
  }

  /** True once the key's holder has been silent for the whole TTL. */
  stale(key: string, revision: number): boolean {
    return this.observe(key, revision) >= this.ttlMs;
  }

  forget(key: string): void {
    this.seen.delete(key);
  }

  /** Records the start of a successful write of ours to `key`. */
  wrote(key: string, startedAt: number): void {
    this.writes.set(key, Math.max(startedAt, this.writes.get(key) ?? 0));
  }

  /**
   * May this process take back a key that still names it (a lease it stopped acting on)?
   * Only once the TTL has passed since its own last write: whatever it did under the old
   * lease (budget grants, sends) has run out by then, exactly as for any other taker.
   */
  mayRetake(key: string, revision: number): boolean {
    const last = this.writes.get(key);
    if (last === undefined) return this.stale(key, revision);
    return this.now() - last >= this.ttlMs;
  }
}

const clocks = new WeakMap<KV, LeaseClock>();

/** The clock of a bucket opened with openClusterBucket. */
export function leaseClock(kv: KV): LeaseClock {
  const c = clocks.get(kv);
  if (!c) throw new Error('leaseClock: open the bucket with openClusterBucket()');
  return c;
}

const enc = new TextEncoder();
const dec = new TextDecoder();

export function encodeValue(v: unknown): Uint8Array {
  return enc.encode(JSON.stringify(v));
}

export function decodeValue(data: Uint8Array): unknown {
  try {
    return JSON.parse(dec.decode(data));
  } catch {
    return undefined;
  }
}

/** 503 (no responders: the stream has no leader) or JetStream API error 10008 (temporarily unavailable). */
export function isUnavailable(e: unknown): boolean {
  const err = e as { code?: string; api_error?: { code?: number; err_code?: number }; message?: string } | undefined;
  return (
    err?.code === '503' ||
    err?.api_error?.code === 503 ||
    err?.api_error?.err_code === 10008 ||
    /^503$|no responders|temporarily unavailable/i.test(err?.message ?? '')
  );
}

/** nats.js reports a failed compare-and-set as JetStream API error 10071 ("wrong last sequence"). */
export function isWrongRevision(e: unknown): boolean {
  const err = e as { api_error?: { err_code?: number }; message?: string } | undefined;
  return err?.api_error?.err_code === 10071 || /wrong last sequence/i.test(err?.message ?? '');
}
