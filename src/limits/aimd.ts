/**
 * AIMD rate control for one scope (the bot, a chat, a group). The configured rate is a
 * ceiling, never a fact: a 429 lowers the rate multiplicatively (or to just under what
 * the server was seen to accept, when that is lower), clean intervals raise it
 * additively back towards the ceiling. Growth is fast up to just below the rate that was
 * last rejected and slow above it (a probe) until that memory is a minute old, so the
 * rate settles just under the server's real limit instead of sawing through it: each
 * 429 costs a `retry_after` pause.
 * Pure functions over a small state; the caller owns the clock.
 */
export interface AimdOptions {
  /** The configured rate (per second): never exceeded. */
  ceiling: number;
  /** Never below this (per second). */
  floor: number;
  /** Multiplier on a 429 (default 0.85). */
  decrease: number;
  /** Fraction of the ceiling added per clean interval while below `settle` × the last rejected rate (default 0.05). */
  fastStep: number;
  /** Fraction of the ceiling added per clean interval above it (default 0.0002). */
  probeStep: number;
  /** Fraction of the last rejected rate where fast growth stops (default 0.98). */
  settle: number;
  /** The last rejected rate is forgotten after this long without a 429 (ms, default 60 000): the server may have relaxed. */
  forgetMs: number;
  /** An interval without a 429 that counts as clean (ms). */
  cleanMs: number;
  /** After a decrease, further 429s within this time are the same event (ms). */
  holdMs: number;
  /**
   * Whether `observed` also caps the remembered rejected rate (default true). False where the
   * observation can lag (a cluster's sum of reports taken while it was still ramping up): the
   * decrease still uses it, but growth may return towards the rate that was actually rejected.
   */
  trustObserved: boolean;
}

export interface AimdState {
  /** Current rate, per second. */
  readonly rate: number;
  /** Rate at the last 429 (Infinity: none seen). */
  readonly lastBad: number;
  readonly lastDecreaseAt: number;
  /** Start of the current clean interval. */
  readonly cleanSince: number;
}

export function aimdOptions(ceiling: number, o: Partial<Omit<AimdOptions, 'ceiling'>> & { cleanMs: number; holdMs: number }): AimdOptions {
  return {
    ceiling,
    floor: o.floor ?? ceiling * 0.05,
    decrease: o.decrease ?? 0.85,
    fastStep: o.fastStep ?? 0.05,
    probeStep: o.probeStep ?? 0.0002,
    settle: o.settle ?? 0.98,
    forgetMs: o.forgetMs ?? 60_000,
    trustObserved: o.trustObserved ?? true,
    cleanMs: o.cleanMs,
    holdMs: o.holdMs,
  };
}

export function aimdStart(o: AimdOptions, now: number): AimdState {
  return { rate: o.ceiling, lastBad: Infinity, lastDecreaseAt: -Infinity, cleanSince: now };
}

/**
 * A 429 in this scope. `observed` (optional, per second) is what the server was seen to
 * accept in the window before it answered 429; the new rate is never above it.
 * A second 429 within `holdMs` of a decrease (answers to requests already in flight) is
 * not a new signal.
 */
export function aimdThrottled(s: AimdState, o: AimdOptions, now: number, observed?: number): AimdState {
  if (now - s.lastDecreaseAt < o.holdMs) return { ...s, cleanSince: now };
  let rate = s.rate * o.decrease;
  // The lowest rate rejected lately: successive floods narrow it down to just above the real limit.
  let lastBad = Math.min(now - s.lastDecreaseAt < o.forgetMs ? s.lastBad : Infinity, s.rate);
  if (observed !== undefined && observed > 0) {
    rate = Math.min(rate, observed * o.settle);
    if (o.trustObserved) lastBad = Math.min(lastBad, observed);
  }
  rate = Math.min(o.ceiling, Math.max(o.floor, rate));
  return { rate, lastBad, lastDecreaseAt: now, cleanSince: now };
}

/** Called periodically: each full clean interval adds one step. `busy`: the scope used its rate (an idle scope learns nothing). */
export function aimdTick(s: AimdState, o: AimdOptions, now: number, busy = true): AimdState {
  if (now - s.cleanSince < o.cleanMs) return s;
  if (!busy || s.rate >= o.ceiling) return { ...s, cleanSince: now };
  const lastBad = now - s.lastDecreaseAt >= o.forgetMs ? Infinity : s.lastBad;
  const target = lastBad * o.settle;
  let rate: number;
  if (s.rate < target) rate = Math.min(target, s.rate + o.ceiling * o.fastStep);
  else rate = s.rate + o.ceiling * o.probeStep;
  return { ...s, lastBad, rate: Math.min(o.ceiling, rate), cleanSince: now };
}
