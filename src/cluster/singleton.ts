import type { KV } from 'nats';
import { KvLease } from './lease';

/**
 * "Am I the one process that should do this now?" The bump actor asks before every
 * timer run. Implementations: `KvLeaseSingleton` below (a NATS KV
 * lease, used by `npm start`) and `DbLeaseSingleton` in `src/ads/singleton.ts` (a lease row in MariaDB).
 *
 * A singleton only avoids wasted work: the bump itself is idempotent per ad within an
 * interval, so two processes that both believe they lead still bump each ad once.
 */
export interface Singleton {
  /** Takes or renews the role; true while this process holds it. Never throws. */
  isLeader(): Promise<boolean>;
  /** Gives the role up at once (graceful shutdown) so another process takes over without waiting for expiry. Idempotent. */
  release(): Promise<void>;
}

/**
 * A cluster-wide singleton on the same KV lease machinery as the shards: one process
 * holds `singleton.<name>`, renews it every TTL/4 on its own timer (callers may ask
 * rarely), and is leader only while its last renewal is younger than TTL/2. When it
 * dies the key expires and the next `isLeader()` elsewhere takes it.
 */
export class KvLeaseSingleton implements Singleton {
  private lease: KvLease | undefined;
  private timer: NodeJS.Timeout | undefined;
  private releasing: Promise<void> | undefined;

  constructor(
    private readonly kv: KV,
    readonly name: string,
    private readonly holder: string,
    private readonly instance: string,
    private readonly ttlMs: number,
    private readonly onError: (e: unknown) => void = () => undefined,
  ) {}

  async isLeader(): Promise<boolean> {
    if (this.releasing) return false;
    try {
      if (this.lease?.held) return this.lease.valid();
      const lease = new KvLease(
        this.kv,
        `singleton.${this.name}`,
        { holder: this.holder, instance: this.instance, since: Date.now() },
        Math.floor(this.ttlMs / 2),
      );
      if (!(await lease.acquire())) return false;
      this.lease = lease;
      this.timer ??= setInterval(() => void this.renew(), Math.max(100, Math.floor(this.ttlMs / 4)));
      return true;
    } catch (e) {
      this.onError(e);
      return false;
    }
  }

  release(): Promise<void> {
    this.releasing ??= (async () => {
      if (this.timer) clearInterval(this.timer);
      this.timer = undefined;
      await this.lease?.release().catch((e: unknown) => this.onError(e));
      this.lease = undefined;
    })();
    return this.releasing;
  }

  private async renew(): Promise<void> {
    if (!this.lease?.held) return;
    try {
      if (!(await this.lease.renew())) this.lease = undefined;
    } catch (e) {
      this.onError(e);
    }
  }
}
