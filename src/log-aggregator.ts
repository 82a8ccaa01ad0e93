import type { Logger } from './log';

/** One occurrence of something worth a log line (a failed notification, a blocked recipient…). */
export interface Occurrence {
  /** Groups the counts inside one line, e.g. "TG_PERMANENT: bot was blocked by the user". */
  reason: string;
  /** Fields of this occurrence kept as an example (chat id, row id). Never secrets. */
  example?: Record<string, unknown>;
}

interface KindState {
  level: 'info' | 'warn';
  /** Human summary for `count` occurrences, e.g. (n) => `${n} notifications failed`. */
  describe: (count: number) => string;
  lastLineAt: number;
  count: number;
  byReason: Map<string, number>;
  examples: Array<Record<string, unknown>>;
  timer: NodeJS.Timeout | undefined;
}

export interface LogAggregatorOptions {
  /** At most one line per kind per this many ms. Default 10 000. */
  windowMs?: number;
  /** Examples kept per line. Default 3. */
  examples?: number;
  now?: () => number;
}

/**
 * Logs outcomes an operator must hear about (failures, blocked recipients, fallbacks)
 * without flooding: the first occurrence of a kind is logged at once; later ones within
 * `windowMs` are counted and logged as one line at the end of the window, with counts
 * per reason and a few examples. `stop()` writes what is still counted.
 */
export class LogAggregator {
  private readonly kinds = new Map<string, KindState>();
  private readonly windowMs: number;
  private readonly maxExamples: number;
  private readonly now: () => number;
  private stopped = false;

  constructor(
    private readonly log: Logger,
    opts: LogAggregatorOptions = {},
  ) {
    this.windowMs = opts.windowMs ?? 10_000;
    this.maxExamples = opts.examples ?? 3;
    this.now = opts.now ?? Date.now;
  }

  /** Declares a kind: its level and how to say `n` of it. */
  define(kind: string, level: 'info' | 'warn', describe: (count: number) => string): this {
    this.kinds.set(kind, { level, describe, lastLineAt: -Infinity, count: 0, byReason: new Map(), examples: [], timer: undefined });
    return this;
  }

  note(kind: string, o: Occurrence): void {
    const k = this.kinds.get(kind);
    if (!k) throw new Error(`LogAggregator: unknown kind ${kind}`);
    k.count++;
    k.byReason.set(o.reason, (k.byReason.get(o.reason) ?? 0) + 1);
    if (o.example && k.examples.length < this.maxExamples) k.examples.push(o.example);
    if (this.stopped) {
      this.emit(kind, k);
      return;
    }
    const now = this.now();
    const next = k.lastLineAt + this.windowMs;
    if (now >= next && !k.timer) {
      this.emit(kind, k);
      return;
    }
    if (!k.timer) {
      k.timer = setTimeout(() => {
        k.timer = undefined;
        this.emit(kind, k);
      }, next - now);
      k.timer.unref();
    }
  }

  /** Writes every pending count now (shutdown) and logs later occurrences at once. Idempotent. */
  stop(): void {
    this.stopped = true;
    for (const [kind, k] of this.kinds) {
      if (k.timer) clearTimeout(k.timer);
      k.timer = undefined;
      if (k.count > 0) this.emit(kind, k);
    }
  }

  private emit(kind: string, k: KindState): void {
    if (k.count === 0) return;
    const byReason = Object.fromEntries([...k.byReason].sort((a, b) => b[1] - a[1]));
    const top = Object.keys(byReason)[0];
    const since = Number.isFinite(k.lastLineAt) ? Math.round((this.now() - k.lastLineAt) / 1000) : undefined;
    this.log[k.level](
      { kind, count: k.count, byReason, examples: k.examples, ...(since !== undefined && k.count > 1 ? { sinceLastLineSec: since } : {}) },
      `${k.describe(k.count)}${top ? ` (${k.byReason.size > 1 ? 'mostly ' : ''}${top})` : ''}`,
    );
    k.lastLineAt = this.now();
    k.count = 0;
    k.byReason = new Map();
    k.examples = [];
  }
}
