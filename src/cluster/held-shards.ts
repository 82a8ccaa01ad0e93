import type { KvLease } from './lease';
import type { ShardLeaseGuard } from '../outbox/send-guard';

/** A shard taken from another holder (it died or lost its lease), as the status shows it. */
export interface Takeover {
  shard: number;
  from: string;
  at: number;
}

/** The shard owner's status (actors/cluster/shard-owner.ts). */
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

const ascending = (a: number, b: number): number => a - b;

/**
 * The shard leases one process holds, and the ones among them it does not send for now
 * (fenced: the last successful renewal is older than the fence time, see KvLease.valid).
 * A fenced shard stays held, and stays in the pipeline with its claimed rows: the senders
 * hold its chats back (maySendFor), and the next successful renewal, a compare-and-set on
 * our own revision that proves nobody wrote the key meanwhile, lets them go on where they
 * stopped. Only a lease someone else wrote (`lost`) makes the pipeline give rows back.
 */
export class HeldShards {
  readonly leases = new Map<number, KvLease>();
  readonly fenced = new Set<number>();
  /** Since when renewals have gone unanswered (a JetStream election, a lost connection); undefined: the last round was answered. */
  failingSince: number | undefined;
  private probeTimer: NodeJS.Timeout | undefined;

  /**
   * Whether this process may send for `shard` at `now`: the lease is held and its last
   * successful renewal started less than the fence time ago. Unlike `fenced`, which the
   * watchdog sets on its own timer, this is exact at any instant (a process waking from a
   * freeze may run its senders' timers before the watchdog's).
   */
  maySendFor(shard: number, now: number): boolean {
    return this.leases.get(shard)?.valid(now) ?? false;
  }

  /** shard → when its last successful renewal was answered (ms epoch), for the log of a resumption. */
  confirmedAt(shards: readonly number[]): Record<number, number | undefined> {
    return Object.fromEntries(shards.map((s) => [s, this.leases.get(s)?.confirmedAt]));
  }

  /** Every shard held, fenced or not: what the pipeline owns (its senders hold a fenced shard's chats back). */
  owned(): number[] {
    return [...this.leases.keys()].sort(ascending);
  }

  /** Every shard held, and the fenced ones among them, in order. */
  status(): { owned: number[]; fenced: number[] } {
    return { owned: this.owned(), fenced: [...this.fenced].sort(ascending) };
  }

  get sendingCount(): number {
    return this.leases.size - this.fenced.size;
  }

  /** Fences every held lease whose last renewal is older than the fence time; returns the newly fenced. */
  fenceLate(now = Date.now()): number[] {
    const late = [...this.leases].filter(([s, l]) => !this.fenced.has(s) && !l.valid(now)).map(([s]) => s);
    for (const s of late) this.fenced.add(s);
    return late;
  }

  /** Un-fences the fenced leases a renewal made valid again; returns them. */
  resumeValid(now = Date.now()): number[] {
    const valid = [...this.fenced].filter((s) => this.leases.get(s)?.valid(now));
    for (const s of valid) this.fenced.delete(s);
    return valid;
  }

  /**
   * Rewrites every lease (compare-and-set). `lost`: someone else wrote the key, dropped here
   * (the pipeline gives their rows back now, fenced or not); `resumed`: fenced ones valid
   * again. A renewal with no answer changes nothing: still ours; the watchdog fences it if
   * this lasts. `failingForMs`: set when this round ended a streak of unanswered rounds
   * (how long it lasted).
   */
  async renewAll(now = Date.now): Promise<{ lost: number[]; resumed: number[]; failingForMs?: number }> {
    const lost: number[] = [];
    const resumed: number[] = [];
    let failed = 0;
    await Promise.all(
      [...this.leases].map(async ([s, l]) => {
        try {
          if (!(await l.renew())) lost.push(s);
          else if (this.fenced.has(s) && l.valid()) resumed.push(s);
        } catch {
          failed++; // no answer
        }
      }),
    );
    // Not those dropped meanwhile (handed off: their keys were deleted, so the write failed).
    const gone = lost.filter((s) => this.leases.has(s));
    this.drop(gone);
    const since = this.failingSince;
    if (failed > 0) this.failingSince ??= now();
    else this.failingSince = undefined;
    return { lost: gone, resumed, ...(failed === 0 && since !== undefined ? { failingForMs: now() - since } : {}) };
  }

  /**
   * While renewals go unanswered, one lease is tried often (its write is as good a test of the
   * KV as any): true once the KV answered it (renewed, or someone else holds the key), the sign
   * to renew every lease at once instead of at the next round. An election makes every write fail
   * at once with 503 until a leader is elected, so the probe finds its end within its period.
   */
  async probe(): Promise<boolean> {
    const lease = this.leases.values().next().value;
    if (!lease) return true;
    try {
      await lease.renew();
      return true;
    } catch {
      return false;
    }
  }

  /** While renewals go unanswered: `probe` every `everyMs` until the KV answers, then `answered()`. One loop at a time. */
  keepProbing(everyMs: number, answered: () => void): void {
    if (this.failingSince === undefined || this.probeTimer) return;
    this.probeTimer = setTimeout(() => {
      void this.probe().then((ok) => {
        this.probeTimer = undefined;
        if (ok) answered();
        else this.keepProbing(everyMs, answered);
      });
    }, everyMs);
  }

  stopProbing(): void {
    clearTimeout(this.probeTimer);
    this.probeTimer = undefined;
  }

  /** Forgets these shards (handed off, or lost). */
  drop(shards: readonly number[]): void {
    for (const s of shards) {
      this.leases.delete(s);
      this.fenced.delete(s);
    }
  }
}

/**
 * The senders' view of the shard owner's leases (ShardLeaseGuard): made by the cluster role
 * before either actor exists, given to the pipeline, and pointed by the shard owner at the
 * leases it holds (again after a restart). Before that, and after the owner stopped, no.
 */
export class ShardLeaseBoard implements ShardLeaseGuard {
  private held: HeldShards | undefined;

  attach(held: HeldShards): void {
    this.held = held;
  }

  /** Only the leases it was attached to: a stopped owner's successor may have attached its own already. */
  detach(held: HeldShards): void {
    if (this.held === held) this.held = undefined;
  }

  maySendFor(shard: number, now: number): boolean {
    return this.held?.maySendFor(shard, now) ?? false;
  }
}
