import type { Knex } from '../db/knex';
import type { Singleton } from '../cluster/singleton';

export type { Singleton };

/**
 * A named lease in `ads_leases`: taken when free or expired, renewed by its owner at
 * every `isLeader()`, expiring `ttlMs` after the last renewal (database clock, so
 * process clocks may disagree). Call `isLeader()` more often than `ttlMs`.
 */
export class DbLeaseSingleton implements Singleton {
  private released: Promise<void> | undefined;

  constructor(
    private readonly db: Knex,
    readonly name: string,
    readonly owner: string,
    private readonly ttlMs: number,
    private readonly onError: (e: unknown) => void = () => undefined,
  ) {}

  async isLeader(): Promise<boolean> {
    // A tick racing the shutdown must not write the lease back after release().
    if (this.released) return false;
    try {
      const us = this.ttlMs * 1000;
      // Assignments run left to right: `owner` is already the new value when `expires_at` is computed.
      await this.db.raw(
        `INSERT INTO ads_leases (name, owner, expires_at) VALUES (?, ?, NOW(3) + INTERVAL ? MICROSECOND)
         ON DUPLICATE KEY UPDATE
           owner = IF(owner = VALUES(owner) OR expires_at < NOW(3), VALUES(owner), owner),
           expires_at = IF(owner = VALUES(owner), VALUES(expires_at), expires_at)`,
        [this.name, this.owner, us],
      );
      const [rows] = (await this.db.raw('SELECT owner FROM ads_leases WHERE name = ?', [this.name])) as unknown as [Array<{ owner: string }>];
      return rows[0]?.owner === this.owner;
    } catch (e) {
      this.onError(e);
      return false;
    }
  }

  release(): Promise<void> {
    this.released ??= this.db.raw('DELETE FROM ads_leases WHERE name = ? AND owner = ?', [this.name, this.owner]).then(
      () => undefined,
      (e: unknown) => this.onError(e),
    );
    return this.released;
  }
}
