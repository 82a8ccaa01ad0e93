/**
 * Sliding-window counters for the sandbox's rate limits. Pure: every method takes the current time, so the
 * arithmetic is unit-testable without a clock.
 *
 * A window of `count` per `windowMs` admits a request of weight n at time t when the weights recorded in
 * (t - windowMs, t] plus n do not exceed `count`. An entry recorded at e therefore stops counting at exactly
 * e + windowMs.
 */

// One mapping from a rate to a window, shared with the client's limiter: the sandbox enforces exactly
// the windows the project's senders plan for (a stricter sandbox is a matter of lower rates).
import { windowLimit, type WindowLimit } from '../src/limits/window';

export { windowLimit, type WindowLimit };

/**
 * A group's window: `perMin` messages per minute, counted over `windowMs` (Telegram: 20 per 60 000 ms).
 * A shorter window keeps the rate and scales the count: 200/min over 3 000 ms → 10 per 3 000 ms.
 */
export function groupWindowLimit(perMin: number, windowMs = 60_000): WindowLimit {
  return windowLimit((perMin * windowMs) / 60_000, windowMs);
}

/** Telegram's `retry_after`: whole seconds, rounded up, at least 1. */
export function retryAfterSeconds(waitMs: number): number {
  return Math.max(1, Math.ceil(waitMs / 1000));
}

/**
 * The entries of one key (a chat, or the whole bot) as a deque of (time, weight), oldest first. Times must not
 * decrease between calls (use a monotonic clock). Entries are pruned on use, so memory is bounded by the number
 * of entries inside one window, i.e. by `count`.
 */
export class WindowCounter {
  private times: number[] = [];
  private weights: number[] = [];
  private head = 0;
  private total = 0;

  /** Weight recorded inside the window ending at `now`. */
  occupancy(now: number, limit: WindowLimit): number {
    this.prune(now, limit.windowMs);
    return this.total;
  }

  /**
   * 0 when weight n fits now; otherwise the ms until it will (assuming nothing else is admitted meanwhile).
   * A weight larger than the window itself (an album of 10 in a 1-per-second chat) would never fit; it is
   * admitted into an empty window instead, and then blocks the window for a full windowMs.
   */
  waitMs(n: number, now: number, limit: WindowLimit): number {
    this.prune(now, limit.windowMs);
    const mustFree = n > limit.count ? this.total : this.total + n - limit.count;
    if (mustFree <= 0) return 0;
    let freed = 0;
    for (let i = this.head; i < this.times.length; i++) {
      freed += this.weights[i] ?? 0;
      if (freed >= mustFree) return (this.times[i] ?? now) + limit.windowMs - now;
    }
    // Unreachable: mustFree ≤ total, and the loop visits every live entry.
    return limit.windowMs;
  }

  /** Records weight n at `now`. Call only after waitMs(n, now) returned 0 for every window involved. */
  add(n: number, now: number): void {
    this.times.push(now);
    this.weights.push(n);
    this.total += n;
  }

  /** True when nothing is recorded inside the window ending at `now` (the key can be forgotten). */
  isIdle(now: number, limit: WindowLimit): boolean {
    return this.occupancy(now, limit) === 0;
  }

  clear(): void {
    this.times = [];
    this.weights = [];
    this.head = 0;
    this.total = 0;
  }

  private prune(now: number, windowMs: number): void {
    const cutoff = now - windowMs;
    while (this.head < this.times.length && (this.times[this.head] ?? Infinity) <= cutoff) {
      this.total -= this.weights[this.head] ?? 0;
      this.head++;
    }
    // Compact once the dead prefix dominates, so the arrays do not grow without bound.
    if (this.head > 32 && this.head * 2 > this.times.length) {
      this.times = this.times.slice(this.head);
      this.weights = this.weights.slice(this.head);
      this.head = 0;
    }
  }
}

/**
 * One sliding window per key (chat id) under a shared, changeable limit. Idle windows are swept every
 * `sweepEvery` admissions so that thousands of one-off chats do not accumulate.
 */
export class KeyedWindows {
  private readonly windows = new Map<number, WindowCounter>();
  private addsSinceSweep = 0;

  constructor(
    public limit: WindowLimit,
    private readonly sweepEvery = 10_000,
  ) {}

  waitMs(key: number, n: number, now: number): number {
    return this.windows.get(key)?.waitMs(n, now, this.limit) ?? 0;
  }

  add(key: number, n: number, now: number): void {
    let window = this.windows.get(key);
    if (window === undefined) {
      window = new WindowCounter();
      this.windows.set(key, window);
    }
    window.add(n, now);
    if (++this.addsSinceSweep >= this.sweepEvery) this.sweep(now);
  }

  occupancy(key: number, now: number): number {
    return this.windows.get(key)?.occupancy(now, this.limit) ?? 0;
  }

  /** Keys with at least one entry inside their window. */
  activeKeys(now: number): number {
    this.sweep(now);
    return this.windows.size;
  }

  clear(): void {
    this.windows.clear();
    this.addsSinceSweep = 0;
  }

  private sweep(now: number): void {
    for (const [key, window] of this.windows) {
      if (window.isIdle(now, this.limit)) this.windows.delete(key);
    }
    this.addsSinceSweep = 0;
  }
}
