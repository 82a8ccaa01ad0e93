import type { KV } from 'nats';
import { decodeValue, encodeValue, isWrongRevision, leaseClock } from './kv';

/** What a lease key holds. `holder` is the process's owner id (`<instance>:<boot id>`). */
export interface LeaseValue {
  holder: string;
  instance: string;
  since: number;
}

/**
 * How long a holder may act after the start of its last successful write: the TTL
 * minus a margin for the watchdog's period and the fencing itself (max(500 ms, TTL/6);
 * 5 s of the default 6 s). Another process takes over only after seeing the key
 * unchanged for the whole TTL, so the holder has stopped by then.
 */
export function fenceAfterMs(leaseTtlMs: number): number {
  return leaseTtlMs - Math.max(500, Math.floor(leaseTtlMs / 6));
}

/** How the last successful acquire() got the key. */
export type Acquired = 'created' | 'retaken' | 'taken-over';

/**
 * A lease on one KV key. Rules (the argument is in docs/deploy.md, "Leases and fencing"):
 * - take: create the key; or compare-and-set over it when its holder has been silent for
 *   the TTL while this process could use the KV (LeaseClock) — a dead or cut-off holder —
 *   or when it still names us and our own last write is a TTL old;
 * - keep: rewrite it by compare-and-set on the revision, well inside the TTL;
 * - act only while the last successful write started less than `fenceAfterMs` ago
 *   (fenceAfterMs < TTL: a holder stops before anyone may take over). A fenced holder
 *   keeps trying; a later successful renewal proves nobody wrote the key in between;
 * - give up: delete it (only our own revision).
 *
 * Used for shard ownership, the budget coordinator and the cluster singletons.
 */
export class KvLease {
  private revision = 0;
  private renewedAt = 0;
  /** When the answer to the last successful write arrived (ms epoch): from then on `valid()` counts from `renewedAt`. */
  confirmedAt = 0;
  private renewing: Promise<boolean> | undefined;
  /** How the lease was last acquired. */
  acquiredBy: Acquired | undefined;
  /** The holder we took the key over from (acquiredBy 'taken-over'). */
  takenFrom: string | undefined;

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

  /** Milliseconds since the start of the last successful write (Infinity when never). */
  age(now = Date.now()): number {
    return this.revision > 0 ? now - this.renewedAt : Infinity;
  }

  /** Takes the lease if it is free, ours, or its holder is silent for the TTL. */
  async acquire(): Promise<boolean> {
    const clock = leaseClock(this.kv);
    const started = Date.now();
    try {
      this.revision = await this.kv.create(this.key, encodeValue(this.value));
      this.renewedAt = started;
      this.confirmedAt = Date.now();
      clock.wrote(this.key, started);
      this.acquiredBy = 'created';
      this.takenFrom = undefined;
      return true;
    } catch (e) {
      if (!isWrongRevision(e)) {
        clock.trouble(e);
        throw e;
      }
    }
    // A failed read is no sign that writes fail for everyone: it does not restart the counts.
    const entry = await this.kv.get(this.key);
    if (!entry || entry.operation !== 'PUT') return false; // changed meanwhile: next time
    const current = decodeValue(entry.value) as LeaseValue | undefined;
    const ours = current?.holder === this.value.holder;
    if (ours ? !clock.mayRetake(this.key, entry.revision) : !clock.stale(this.key, entry.revision)) return false;
    // Compare-and-set over the newest revision seen (the read may come from a lagging replica).
    const revision = Math.max(entry.revision, clock.newest(this.key));
    const again = Date.now();
    try {
      this.revision = await this.kv.update(this.key, encodeValue(this.value), revision);
    } catch (e) {
      if (isWrongRevision(e)) return false; // its holder renewed, or someone else was faster
      clock.trouble(e);
      throw e;
    }
    this.renewedAt = again;
    this.confirmedAt = Date.now();
    clock.wrote(this.key, again);
    this.acquiredBy = ours ? 'retaken' : 'taken-over';
    this.takenFrom = ours ? undefined : current?.holder;
    clock.forget(this.key);
    return true;
  }

  /**
   * Rewrites the key (CAS). Returns false when someone else holds it now: stop at once.
   * Throws when the KV did not answer (the lease is still ours; `valid()` says whether to act).
   * Concurrent calls share one write.
   */
  renew(): Promise<boolean> {
    this.renewing ??= this.doRenew().finally(() => {
      this.renewing = undefined;
    });
    return this.renewing;
  }

  private async doRenew(adopt = true): Promise<boolean> {
    if (this.revision === 0) return false;
    const started = Date.now();
    try {
      this.revision = await this.kv.update(this.key, encodeValue(this.value), this.revision);
      this.renewedAt = started;
      this.confirmedAt = Date.now();
      leaseClock(this.kv).wrote(this.key, started);
      return true;
    } catch (e) {
      if (isWrongRevision(e)) {
        if (adopt && (await this.adoptLostWrite())) return this.doRenew(false);
        this.revision = 0;
        return false;
      }
      leaseClock(this.kv).trouble(e);
      throw e;
    }
  }

  /**
   * A renewal whose answer was lost (a timeout; the server that took it died) may still have been
   * written: the key is then a revision ahead of ours and holds exactly our value (no other
   * writer writes our holder and our `since`), and our compare-and-set on the old revision fails
   * although nobody else wrote. Adopt that revision (true), so the next compare-and-set decides.
   * `renewedAt` stays at our last confirmed write: the lost one extends nothing.
   */
  private async adoptLostWrite(): Promise<boolean> {
    const entry = await this.kv.get(this.key);
    if (!entry || entry.operation !== 'PUT' || entry.revision <= this.revision) return false;
    const mine = encodeValue(this.value);
    if (entry.value.length !== mine.length || !entry.value.every((b, i) => b === mine[i])) return false;
    this.revision = entry.revision;
    return true;
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

  /** Forget the lease locally; the key stays until someone takes it over or it ages out. */
  forget(): void {
    this.revision = 0;
  }
}

/** Reads who holds a lease key now (undefined when free: missing or deleted). */
export async function leaseHolder(kv: KV, key: string): Promise<LeaseValue | undefined> {
  const e = await kv.get(key);
  if (!e || e.operation !== 'PUT') return undefined;
  return decodeValue(e.value) as LeaseValue | undefined;
}

export interface ClusterView {
  /** Live members (their heartbeat key was rewritten within the TTL). */
  members: string[];
  /** shard → holder, for every shard key whose holder is not known to be silent for the TTL. */
  shards: Map<number, string>;
  /** shard → holder, for shard keys whose holder has been silent for the TTL (free to take over). */
  stale: Map<number, string>;
}

/** Keys seen in the bucket's last complete listing, and the listing in flight (one at a time). */
const listings = new WeakMap<KV, { known: Set<string>; inFlight: Promise<string[]> | undefined }>();

/**
 * The bucket's keys. nats.js lists them through an ordered consumer that can stall for a
 * long time after a node of the cluster died or restarted (seen here: ticks stuck until
 * the dead holder's keys aged out); so a listing that fails or does not finish within
 * `timeoutMs` (then it is left running, one at a time) is replaced by the keys known from
 * the last complete one, plus `extra`.
 */
async function listKeys(kv: KV, timeoutMs: number, extra: readonly string[]): Promise<string[]> {
  let l = listings.get(kv);
  if (!l) listings.set(kv, (l = { known: new Set(), inFlight: undefined }));
  const state = l;
  state.inFlight ??= (async () => {
    const keys: string[] = [];
    for await (const k of await kv.keys()) keys.push(k);
    return keys;
  })().then(
    (keys) => {
      state.known = new Set(keys);
      state.inFlight = undefined;
      return keys;
    },
    (e: unknown) => {
      state.inFlight = undefined;
      throw e;
    },
  );
  let timer: NodeJS.Timeout | undefined;
  const fallback = new Promise<undefined>((resolve) => {
    timer = setTimeout(() => {
      resolve(undefined);
    }, timeoutMs);
  });
  try {
    // A listing that fails (its consumer could not be created: seen as TIMEOUT for a while after
    // a node restart) falls back the same way.
    const keys = await Promise.race([state.inFlight.catch(() => undefined), fallback]);
    return [...new Set([...(keys ?? state.known), ...extra])];
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Who is alive and who holds which shard, read from the bucket now. Keys of dead
 * processes stay in the bucket until taken over or aged out; a key whose revision this
 * process has seen unchanged for the TTL (LeaseClock) counts as its holder's silence.
 * `shardCount` names the shard keys to read even when the listing stalls.
 */
export async function readClusterView(kv: KV, opts: { shardCount?: number; listTimeoutMs?: number } = {}): Promise<ClusterView> {
  const clock = leaseClock(kv);
  const shardKeys = Array.from({ length: opts.shardCount ?? 0 }, (_, i) => `shard.${i}`);
  const keys = await listKeys(kv, opts.listTimeoutMs ?? 2_000, shardKeys);
  const members: string[] = [];
  const shards = new Map<number, string>();
  const stale = new Map<number, string>();
  await Promise.all(
    keys.map(async (k) => {
      const e = await kv.get(k);
      if (!e || e.operation !== 'PUT') return;
      const v = decodeValue(e.value) as LeaseValue | undefined;
      if (!v) return;
      const silent = clock.stale(k, e.revision);
      if (k.startsWith('member.')) {
        if (!silent) members.push(v.holder);
      } else if (k.startsWith('shard.')) {
        (silent ? stale : shards).set(Number(k.slice(6)), v.holder);
      }
    }),
  );
  return { members: members.sort(), shards, stale };
}
