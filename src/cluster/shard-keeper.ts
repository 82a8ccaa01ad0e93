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
   * The last renewal of `shards` is older than the fence time: still ours, their rows stay
   * claimed and queued, and the senders already hold their chats back (HeldShards.maySendFor
   * is false from the fence time on, whatever the timers). Told for the log and the metrics.
   */
  fenced(shards: number[]): void;
  /** Another process wrote the keys of `shards`: the pipeline stops and gives their rows back now. */
  lost(shards: number[]): Promise<void>;
  /** A renewal made fenced shards valid again: the senders go on where they stopped. */
  resumable(): void;
}

/**
 * Keeps the shard leases a process holds, on its own timers outside the shard owner's mailbox
 * (keeping what we hold and fencing must never wait for a tick): renews them every TTL/12, and
 * while renewals go unanswered (a JetStream election answers every write at once with 503)
 * retries one every PROBE_MS, so the first write after the election renews them all and fenced
 * shards resume within PROBE_MS of its end, not up to a round later. A watchdog every TTL/20
 * marks the shards whose last successful renewal started longer than the fence time ago as
 * fenced (for the status and the log: the senders stop on their own, from the lease itself).
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
      'lease not renewed in time: stopped sending for these shards (still ours, their rows kept; resuming after the next renewal)',
    );
    this.o.fenced(late);
  }

  async renewAll(): Promise<void> {
    if (this.stopped) return;
    const { held, log } = this.o;
    const { lost, resumed, failingForMs } = await held.renewAll();
    if (failingForMs !== undefined) log.info({ failingForMs, fenced: held.fenced.size }, 'lease renewals succeed again');
    if (!this.stopped) held.keepProbing(PROBE_MS, () => void this.renewAll());
    if (lost.length) {
      log.warn({ shards: lost }, 'another process holds these shards now: stopped sending for them');
      await this.o.lost(lost);
    }
    // The senders may send for a resumed shard from when its renewal was answered (`confirmedAt`; tests check it).
    if (resumed.length) log.info({ shards: resumed, confirmedAt: held.confirmedAt(resumed) }, 'lease renewed after a fence: sending again');
    if (resumed.length) this.o.resumable();
  }
}
