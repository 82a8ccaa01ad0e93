import type { Logger } from '../log';
import type { HeldShards } from './held-shards';

/** How often an unanswered lease renewal is retried (the regular round runs every TTL/12). */
export const PROBE_MS = 100;

export interface ShardKeeperOptions {
  held: HeldShards;
  leaseTtlMs: number;
  fenceAfterMs: number;
  log: Logger;
  /**
   * Stop sending for `shards` now: `fenced` (the last renewal is too old; still ours) or `lost`
   * (another process wrote the key). `sending`: those among them the pipeline still sends for.
   */
  released(shards: number[], why: 'fenced' | 'lost', sending: number[]): Promise<void>;
  /** A renewal made fenced shards valid again: the pipeline may send for them. */
  resumable(): void;
}

/**
 * Keeps the shard leases a process holds, on its own timers outside the shard owner's mailbox
 * (keeping what we hold and fencing must never wait for a tick): renews them every TTL/12, and
 * while renewals go unanswered (a JetStream election answers every write at once with 503)
 * retries one every PROBE_MS, so the first write after the election renews them all and fenced
 * shards resume within PROBE_MS of its end, not up to a round later. A watchdog every TTL/20
 * fences the shards whose last successful renewal started longer than the fence time ago.
 */
export class ShardKeeper {
  private timers: NodeJS.Timeout[] = [];
  private stopped = false;

  constructor(private readonly o: ShardKeeperOptions) {}

  start(): void {
    this.timers.push(setInterval(() => void this.renewAll(), Math.max(50, Math.floor(this.o.leaseTtlMs / 12))));
    this.timers.push(setInterval(() => this.watchdog(), Math.max(50, Math.floor(this.o.leaseTtlMs / 20))));
  }

  /** Stops renewing and fencing (leaving the cluster, or the actor stopped). Idempotent. */
  stop(): void {
    this.stopped = true;
    this.timers.forEach((t) => clearInterval(t));
    this.timers = [];
    this.o.held.stopProbing();
  }

  watchdog(): void {
    const late = this.o.held.fenceLate();
    if (late.length === 0) return;
    this.o.log.warn(
      { shards: late, fenceAfterMs: this.o.fenceAfterMs },
      'lease not renewed in time: stopped sending for these shards (still ours; resuming after the next renewal)',
    );
    void this.o.released(late, 'fenced', late);
  }

  async renewAll(): Promise<void> {
    if (this.stopped) return;
    const { held, log } = this.o;
    const { lost, wasSending, resumed, failingForMs } = await held.renewAll();
    if (failingForMs !== undefined) log.info({ failingForMs, fenced: held.fenced.size }, 'lease renewals succeed again');
    if (!this.stopped) held.keepProbing(PROBE_MS, () => void this.renewAll());
    if (lost.length) {
      log.warn({ shards: lost }, 'another process holds these shards now: stopped sending for them');
      await this.o.released(lost, 'lost', wasSending);
    }
    // The senders may send for a resumed shard from when its renewal was answered (`confirmedAt`; tests check it).
    if (resumed.length) log.info({ shards: resumed, confirmedAt: held.confirmedAt(resumed) }, 'lease renewed after a fence: sending again');
    if (resumed.length) this.o.resumable();
  }
}
