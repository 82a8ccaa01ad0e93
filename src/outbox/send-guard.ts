/**
 * What a sender asks right before each dispatch: may this process still send for these
 * rows now? Two leases decide it, each from this process's own knowledge (a frozen or
 * starved process must not trust timers that fired late):
 * - the shard lease (the cluster's KV lease): `ShardLeaseGuard`, answered by the shard
 *   owner's lease state (src/cluster/held-shards.ts); alone, a process always may;
 * - the claim lease of the row (`CLAIM_LEASE_MS`, extended by the claimer): `ClaimLeases`.
 * A no means "not now": the job waits (a fence drains it, a renewal resumes it).
 */
export interface ShardLeaseGuard {
  /** True while the shard's lease, as last renewed, is valid at `now` (ms epoch). Cheap and synchronous. */
  maySendFor(shard: number, now: number): boolean;
}

/** A process without a cluster owns every shard it was given: it always may. */
export const singleProcess: ShardLeaseGuard = { maySendFor: () => true };

/**
 * What this process knows about one row's claim: the lease ran from `from` for `ownMs`
 * (a claim: its start and CLAIM_LEASE_MS; a reload: its start and the lease the database
 * said was left), and the row was known to be ours at `seenAt` (when the copy arrived).
 */
export interface LeaseEvidence {
  from: number;
  ownMs: number;
  seenAt: number;
  /** The extension chain (ClaimLeases.epoch) that was seen to extend this row; set by `vouches`. */
  epoch?: number;
}

/** Successful extensions kept to find the first one after a row arrived (older rows are re-checked in the database). */
const HISTORY = 64;

/**
 * The claim leases of the rows this process holds, as far as it can vouch for them. One
 * UPDATE (the claimer's renewal) extends every row claimed by this process at the moment
 * it runs; the reaper frees a row whose lease ran out. A row is vouched for while its own
 * lease runs, or while it belongs to an unbroken chain of extensions: the first extension
 * that started after the row was known to be ours finished before the row's own lease ran
 * out (so it extended the row), and each later one finished before the previous one's
 * lease ran out. Every lease end is taken `marginMs` early (the time from the check to the
 * request on the wire, clock drift). Once a chain breaks (a stall, a database outage) no
 * later extension vouches for the rows of the old chain: they may have been reaped and
 * claimed again meanwhile; the sender asks the database (`claimLeft`) before it sends them.
 * Pure: every instant is passed in (ms).
 */
export class ClaimLeases {
  /** Incremented at every break of the chain. */
  epoch = 0;
  /** Successful extensions of the current chain: [start, answered], oldest first, at most HISTORY. */
  private readonly chain: Array<[number, number]> = [];
  private validUntil = -Infinity;

  constructor(
    readonly leaseMs: number,
    readonly marginMs: number = claimLeaseMargin(leaseMs),
  ) {}

  /** An extension that started at `startedAt` succeeded; its answer came at `answeredAt`. */
  extended(startedAt: number, answeredAt: number): void {
    if (answeredAt >= this.validUntil) {
      // It may have run after the rows' leases ran out: the rows it found are not those of before.
      this.epoch++;
      this.chain.length = 0;
    }
    this.chain.push([startedAt, answeredAt]);
    if (this.chain.length > HISTORY) this.chain.shift();
    this.validUntil = Math.max(this.validUntil, startedAt + this.leaseMs - this.marginMs);
  }

  /** The evidence of a copy of a row that arrived at `now` (`leftMs`: the lease a reload read; else a fresh claim's). */
  evidence(fetchedAt: number, now: number, leftMs?: number): LeaseEvidence {
    return { from: fetchedAt, ownMs: leftMs ?? this.leaseMs, seenAt: now };
  }

  /** Whether the row may still be claimed by this process at `now`. */
  vouches(e: LeaseEvidence, now: number): boolean {
    const ownEnd = e.from + e.ownMs - this.marginMs;
    if (now < ownEnd) return true;
    if (now >= this.validUntil) return false;
    if (e.epoch === this.epoch) return true;
    const first = this.chain.find(([start]) => start >= e.seenAt);
    if (!first || first[1] >= ownEnd) return false;
    e.epoch = this.epoch;
    return true;
  }

  /** The newer of two pieces of evidence for one row (the one whose own lease ends later). */
  static newer(a: LeaseEvidence, b: LeaseEvidence): LeaseEvidence {
    return b.from + b.ownMs > a.from + a.ownMs ? b : a;
  }
}

/** How early a claim lease counts as run out: a tenth of it, at least 500 ms, at most a quarter. */
export function claimLeaseMargin(leaseMs: number): number {
  return Math.min(Math.max(500, Math.floor(leaseMs / 10)), Math.floor(leaseMs / 4));
}
