/**
 * AIMD rate control for one scope (the bot, a chat, a group). The configured rate is a
 * ceiling, never a fact: a 429 lowers the rate multiplicatively (or to just under what
 * the server was seen to accept, when that is lower), clean intervals raise it
 * additively back towards the ceiling. Growth is fast up to just below the rate that was
 * last rejected and slow above it (a probe) until that memory is a minute old, so the
 * rate settles just under the server's real limit instead of sawing through it: each
 * 429 costs a `retry_after` pause. For the bot-wide rate (the remembered rate is CUBIC's
 * W_max): a 429 that comes with a count of what the server took lowers only to just under
 * that count and at most 5 % under the rate it came at (`decreaseSeen`), the later 429s of
 * the same event may raise an undercount (`refine`), and a count too close to the rate to
 * say more than it (`countNoise`) does not pin the memory low.
 * Pure functions over a small state; the caller owns the clock.
 */
export interface AimdOptions {
  /** The configured rate (per second): never exceeded. */
  ceiling: number;
  /** Never below this (per second). */
  floor: number;
  /** Multiplier on a 429 (default 0.85). */
  decrease: number;
  /**
   * Multiplier on a 429 that comes with a count of what the server accepted (default: `decrease`).
   * The count says where the limit is, so the rate goes just under it; this bounds how far under the
   * rate the 429 came at. A count can be high by the spread of answer times (105 for a server at 100
   * on a loaded machine): 0.95 instead of 0.85 then costs 5 %, not 15 %, until the next probe.
   */
  decreaseSeen: number;
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
  /**
   * How far a count may be off, as a fraction (default 0). A count within this of the rate the 429 came at says
   * no more than that rate does about where the limit is, and does not cap the memory: a count 5 % low would
   * otherwise hold the rate 7 % under the limit for a minute. A count far below it (a cold start at the
   * configured rate, the server taking two thirds) still does.
   */
  countNoise: number;
  /**
   * Whether further 429s within `holdMs` of a decrease may raise the rate back to just under the
   * largest count any of them observed (default false). A 429 read while the answers to sends the
   * server accepted just before it are still on their way undercounts what the server took: at a
   * cold start, where a window's sends go out before the first answer, the first count was up to a
   * quarter low, and the rate then sat that far below the server's limit for a minute. The later
   * 429s of the same event see those answers. Never above the multiplicative decrease.
   */
  refine: boolean;
}

export interface AimdState {
  /** Current rate, per second. */
  readonly rate: number;
  /** Rate at the last 429 (Infinity: none seen). */
  readonly lastBad: number;
  readonly lastDecreaseAt: number;
  /** Start of the current clean interval. */
  readonly cleanSince: number;
  /** The last decrease (for `refine`): the rate before it, the remembered rate before its observation, the largest observation. */
  readonly event?: { readonly from: number; readonly bad: number; readonly observed: number };
}

export function aimdOptions(ceiling: number, o: Partial<Omit<AimdOptions, 'ceiling'>> & { cleanMs: number; holdMs: number }): AimdOptions {
  return {
    ceiling,
    floor: o.floor ?? ceiling * 0.05,
    decrease: o.decrease ?? 0.85,
    decreaseSeen: o.decreaseSeen ?? o.decrease ?? 0.85,
    fastStep: o.fastStep ?? 0.05,
    probeStep: o.probeStep ?? 0.0002,
    settle: o.settle ?? 0.98,
    forgetMs: o.forgetMs ?? 60_000,
    trustObserved: o.trustObserved ?? true,
    refine: o.refine ?? false,
    countNoise: o.countNoise ?? 0,
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
  if (now - s.lastDecreaseAt < o.holdMs) {
    const e = s.event;
    if (!o.refine || !e || observed === undefined || observed <= e.observed) return { ...s, cleanSince: now };
    // A later 429 of the same event that saw more accepted sends: the first count was low.
    const rate = Math.max(s.rate, Math.min(o.ceiling, e.from * o.decreaseSeen, observed * o.settle));
    const lastBad = !o.trustObserved ? s.lastBad : observed * (1 + o.countNoise) < e.from ? Math.min(e.bad, observed) : e.bad;
    return { ...s, rate, lastBad, cleanSince: now, event: { ...e, observed } };
  }
  const seen = observed !== undefined && observed > 0 ? observed : undefined;
  let rate = s.rate * (seen !== undefined ? o.decreaseSeen : o.decrease);
  // The lowest rate rejected lately: successive floods narrow it down to just above the real limit.
  const bad = Math.min(now - s.lastDecreaseAt < o.forgetMs ? s.lastBad : Infinity, s.rate);
  let lastBad = bad;
  if (seen !== undefined) {
    rate = Math.min(rate, seen * o.settle);
    if (o.trustObserved && seen * (1 + o.countNoise) < s.rate) lastBad = Math.min(lastBad, seen);
  }
  rate = Math.min(o.ceiling, Math.max(o.floor, rate));
  return { rate, lastBad, lastDecreaseAt: now, cleanSince: now, event: { from: s.rate, bad, observed: seen ?? 0 } };
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
