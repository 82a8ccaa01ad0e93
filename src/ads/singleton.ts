import type { Singleton } from '../cluster/singleton';
import type { AdsRepository } from './repository';

export type { Singleton };

/**
 * A named lease in `ads_leases`: taken when free or expired, renewed by its owner at
 * every `isLeader()`, expiring `ttlMs` after the last renewal (database clock, so
 * process clocks may disagree). Call `isLeader()` more often than `ttlMs`.
 */
export class DbLeaseSingleton implements Singleton {
  private released: Promise<void> | undefined;

  constructor(
    private readonly repo: Pick<AdsRepository, 'takeLease' | 'releaseLease'>,
    readonly name: string,
    readonly owner: string,
    private readonly ttlMs: number,
    private readonly onError: (e: unknown) => void = () => undefined,
  ) {}

  async isLeader(): Promise<boolean> {
    // A tick racing the shutdown must not write the lease back after release().
    if (this.released) return false;
    try {
      return (await this.repo.takeLease(this.name, this.owner, this.ttlMs)) === this.owner;
    } catch (e) {
      this.onError(e);
      return false;
    }
  }

  release(): Promise<void> {
    this.released ??= this.repo.releaseLease(this.name, this.owner).then(
      () => undefined,
      (e: unknown) => this.onError(e),
    );
    return this.released;
  }
}
