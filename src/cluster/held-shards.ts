import type { KvLease } from './lease';

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
 * A fenced shard stays held: the next successful renewal, a compare-and-set on our own
 * revision that proves nobody wrote the key meanwhile, makes it valid again.
 */
export class HeldShards {
  readonly leases = new Map<number, KvLease>();
  readonly fenced = new Set<number>();

  /** Held and not fenced: what the pipeline should own. */
  sending(): number[] {
    return [...this.leases.keys()].filter((s) => !this.fenced.has(s)).sort(ascending);
  }

  /** Every shard held, and the fenced ones among them, in order. */
  status(): { owned: number[]; fenced: number[] } {
    return { owned: [...this.leases.keys()].sort(ascending), fenced: [...this.fenced].sort(ascending) };
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
   * (`wasSending`: those we still sent for, to fence in the pipeline now); `resumed`: fenced
   * ones valid again. A renewal with no answer changes nothing: still ours; the watchdog
   * fences it if this lasts.
   */
  async renewAll(): Promise<{ lost: number[]; wasSending: number[]; resumed: number[] }> {
    const lost: number[] = [];
    const resumed: number[] = [];
    await Promise.all(
      [...this.leases].map(async ([s, l]) => {
        try {
          if (!(await l.renew())) lost.push(s);
          else if (this.fenced.has(s) && l.valid()) resumed.push(s);
        } catch {
          /* no answer */
        }
      }),
    );
    const wasSending = lost.filter((s) => this.leases.has(s) && !this.fenced.has(s));
    this.drop(lost);
    return { lost, wasSending, resumed };
  }

  /** Forgets these shards (handed off, or lost). */
  drop(shards: readonly number[]): void {
    for (const s of shards) {
      this.leases.delete(s);
      this.fenced.delete(s);
    }
  }
}
