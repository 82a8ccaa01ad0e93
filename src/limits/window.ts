/**
 * Sliding-window rate limiting that a strict server cannot catch out.
 *
 * A limit is `count` sends in any `windowMs`. A send occupies its slot from the moment
 * we dispatch it until `windowMs` after we received the answer: the server saw the
 * request somewhere between those two instants, so a later send dispatched after the
 * slot frees can never share a server-side window with it. Latency costs a little
 * throughput (the answer time, ~1 ms on loopback); it never costs a 429.
 */
export interface WindowLimit {
  count: number;
  windowMs: number;
}

/**
 * Maps a rate of `rate` messages per `periodMs` to a window: count = max(1, floor(rate)) and
 * windowMs = count / rate × periodMs. 10/s → 10 per 1000 ms, 0.5/s → 1 per 2000 ms, 1.5/s → 1 per
 * 666.67 ms: the window never admits a burst larger than the rate allows in one period, yet keeps
 * the long-run rate exact. The one mapping of the project: the sandbox enforces the same windows.
 */
export function windowLimit(rate: number, periodMs = 1000): WindowLimit {
  if (!Number.isFinite(rate) || rate <= 0) throw new RangeError(`rate must be a positive finite number, got ${rate}`);
  if (!Number.isFinite(periodMs) || periodMs <= 0) throw new RangeError(`periodMs must be a positive finite number, got ${periodMs}`);
  const count = Math.max(1, Math.floor(rate));
  return { count, windowMs: (count / rate) * periodMs };
}

/** "r messages per second" as a window: 30 → 30 per 1000 ms. */
export function rateToWindow(perSecond: number): WindowLimit {
  return windowLimit(perSecond, 1000);
}

/**
 * "n per minute" as a window: 20/min → 20 per 60 000 ms. `windowMs` shortens the window at the same rate
 * (400/min over 3 000 ms → 20 per 3 000 ms), as the sandbox's `--group-window-ms` does, for tests and benchmarks.
 */
export function perMinuteToWindow(perMinute: number, windowMs = 60_000): WindowLimit {
  return windowMs === 60_000 ? windowLimit(perMinute, 60_000) : windowLimit((perMinute * windowMs) / 60_000, windowMs);
}

/**
 * A lowered rate (per second) as a window at least as long as the ceiling's (the server's): 20/min lowered to 9.8/min
 * → 9 per 60 s (never 9 per 55 s: two bursts of 9 would fit in a server's 60 s window);
 * 1/s lowered to 0.8/s → 1 per 1 250 ms.
 */
export function windowAt(rate: number, ceiling: WindowLimit): WindowLimit {
  const count = Math.floor((rate * ceiling.windowMs) / 1000 + 1e-9);
  if (count >= 1) return { count, windowMs: ceiling.windowMs };
  return { count: 1, windowMs: 1000 / rate };
}

/** A held slot (or n slots). Settle it with the answer time, or cancel it if never sent. */
export interface Reservation {
  readonly n: number;
  /** @internal */ settled: boolean;
}

export class SlidingWindow {
  /** Expiry instants of settled slots, ascending. */
  private expiries: number[] = [];
  private inFlight = 0;

  constructor(private limit: WindowLimit) {}

  get current(): WindowLimit {
    return this.limit;
  }

  /** Changing the limit never forgets slots already used. */
  setLimit(limit: WindowLimit): void {
    this.limit = limit;
  }

  /** Slots held now (in flight + settled within their window). */
  occupied(now: number): number {
    this.prune(now);
    return this.inFlight + this.expiries.length;
  }

  /**
   * The earliest instant ≥ now at which `n` more slots are free. Infinity when that
   * depends on answers still in flight (the caller re-asks after the next settle).
   */
  availableAt(now: number, n = 1): number {
    this.prune(now);
    if (n > this.limit.count) return Infinity;
    const excess = this.inFlight + this.expiries.length + n - this.limit.count;
    if (excess <= 0) return now;
    if (excess > this.expiries.length) return Infinity;
    return this.expiries[excess - 1]!;
  }

  /**
   * When at most `k` slots will be held (Infinity while answers are outstanding beyond
   * `k`). The cluster budget uses it: after a process shrinks, others may grow as soon as
   * its past sends have left the window, not a whole window later.
   */
  heldAtMostAt(now: number, k: number): number {
    this.prune(now);
    const held = this.inFlight + this.expiries.length;
    if (held <= k) return now;
    if (this.inFlight > k) return Infinity;
    return this.expiries[held - k - 1]!;
  }

  /** Takes `n` slots now. Call only when availableAt(now, n) <= now. */
  reserve(n = 1): Reservation {
    this.inFlight += n;
    return { n, settled: false };
  }

  /** The answer arrived at `answeredAt`: the slots expire one window later. */
  settle(r: Reservation, answeredAt: number): void {
    if (r.settled) return;
    r.settled = true;
    this.inFlight -= r.n;
    // +2 ms: clocks here are whole milliseconds, and the server's window is half-open.
    const expiry = answeredAt + this.limit.windowMs + 2;
    for (let i = 0; i < r.n; i++) insertSorted(this.expiries, expiry);
  }

  /**
   * Records `n` sends another holder made, answered at `answeredAt` (a handoff of the
   * chat's window, or a blind assumption after a crash): they hold slots as ours would.
   */
  seed(answeredAt: number, n = 1): void {
    const expiry = answeredAt + this.limit.windowMs + 2;
    for (let i = 0; i < n; i++) insertSorted(this.expiries, expiry);
  }

  /** The request was never sent: free the slots at once. */
  cancel(r: Reservation): void {
    if (r.settled) return;
    r.settled = true;
    this.inFlight -= r.n;
  }

  private prune(now: number): void {
    let i = 0;
    while (i < this.expiries.length && this.expiries[i]! <= now) i++;
    if (i > 0) this.expiries.splice(0, i);
  }
}

function insertSorted(a: number[], v: number): void {
  // Answers mostly arrive in order: scan from the end.
  let i = a.length;
  while (i > 0 && a[i - 1]! > v) i--;
  a.splice(i, 0, v);
}
