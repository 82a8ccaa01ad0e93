import { aimdOptions, aimdStart, aimdThrottled, aimdTick, type AimdOptions, type AimdState } from './aimd';

/**
 * The bot-wide rate (per second) under AIMD: lowered by each bot-wide flood (a 429 the
 * flood detector attributes to the bot), raised after clean seconds, never above the
 * configured TELEGRAM_GLOBAL_RATE. One process alone applies it to its gate; in a cluster
 * the budget coordinator owns it and splits it between processes.
 */
export class GlobalRate {
  private s: AimdState;
  readonly options: AimdOptions;

  /** `cluster`: the observed rate is a sum of lagging reports (see AimdOptions.trustObserved). */
  constructor(ceiling: number, now: number, cluster = false) {
    // A flood's retry_after is at least a second: 429s within it answer requests already sent.
    // Every 429 of one event carries a count; the largest is the best (see AimdOptions.refine). With a count the
    // rate goes just under it, at most 5 % under the rate the 429 came at (AimdOptions.decreaseSeen); counts are
    // taken from answer times, ±5 % on a loaded machine (AimdOptions.countNoise).
    this.options = aimdOptions(ceiling, {
      cleanMs: 1_000,
      holdMs: 1_000,
      trustObserved: !cluster,
      refine: true,
      decreaseSeen: 0.95,
      countNoise: 0.1,
    });
    this.s = aimdStart(this.options, now);
  }

  get rate(): number {
    return this.s.rate;
  }

  get ceiling(): number {
    return this.options.ceiling;
  }

  /**
   * A bot-wide flood; `observed`: what the server was seen to accept (per second), when known.
   * `trusted` overrides `trustObserved` for this observation (a cluster's sum of reports all
   * taken at the flood's instant is as good as one process's own count).
   */
  throttled(now: number, observed?: number, trusted?: boolean): number {
    this.s = aimdThrottled(this.s, trusted === undefined ? this.options : { ...this.options, trustObserved: trusted }, now, observed);
    return this.s.rate;
  }

  tick(now: number, busy: boolean): number {
    this.s = aimdTick(this.s, this.options, now, busy);
    return this.s.rate;
  }

  /** Starts from a rate learned elsewhere (a new coordinator adopting what processes report). */
  adopt(rate: number, now: number): void {
    const r = Math.min(this.options.ceiling, Math.max(this.options.floor, rate));
    if (r < this.s.rate) this.s = { rate: r, lastBad: r / this.options.settle, lastDecreaseAt: now, cleanSince: now };
  }
}
