import { Heap } from './heap';
import { SlidingWindow, type Reservation, type WindowLimit } from './window';

/** A chat asking for `cost` global slots (an album of n photos costs n). */
export interface Bid {
  /** Higher first: transactional messages go ahead of bulk. */
  priority: number;
  /**
   * How long this chat still needs at its own rate (ms). Larger first: serving the
   * longest backlog first is what lets the busiest chat run at its full rate from the
   * start, so the whole drain ends at the ideal time instead of after it.
   */
  backlogMs: number;
  /** When the chat became ready (ms epoch); older first among equals, and it ages. */
  readySince: number;
  cost: number;
  /** Called with the held slots. The holder must settle or cancel the reservation. */
  grant: (r: Reservation) => void;
}

interface Entry extends Bid {
  seq: number;
  cancelled: boolean;
}

export interface Clock {
  now(): number;
}

export const systemClock: Clock = { now: () => Date.now() };

/**
 * The bot-wide budget of one process: a sliding window shared by every sender actor,
 * granting slots to waiting chats in order (priority, score = backlog + time waited).
 * Waiting time is added to the score so a chat with one message is never starved by
 * chats with long backlogs. The cluster coordinator (scale-out) changes the limit to
 * this process's share; a bot-wide 429 pauses it.
 */
export class GlobalGate {
  private readonly window: SlidingWindow;
  private readonly bids = new Heap<Entry>((a, b) => this.before(a, b));
  private seq = 0;
  private timer: NodeJS.Timeout | undefined;
  private timerAt = Infinity;
  private pausedUntil = 0;
  private stopped = false;
  /** Answer times of accepted sends (roughly ordered), the last two windows. */
  private acceptedAt: number[] = [];

  /** Pacing bucket: tokens (sends) available now, refilled at the window's rate up to `burst`. */
  private tokens = 0;
  private refilledAt = 0;

  /**
   * `pacing` (0…1, default 0 = off): the largest burst as a fraction of the window's count.
   * The sliding window alone lets a whole window go out at once; with pacing 0.1 the sends of
   * a window are spread over it (a token bucket at the same rate, burst count/10), so a server
   * stricter than configured rejects a few sends before the flood is noticed, not a window's
   * worth. The window still gives the guarantee; pacing costs no throughput.
   */
  constructor(
    limit: WindowLimit,
    private readonly clock: Clock = systemClock,
    private readonly pacing = 0,
  ) {
    this.window = new SlidingWindow(limit);
    this.tokens = this.burst();
    this.refilledAt = clock.now();
  }

  private burst(): number {
    const c = this.window.current.count;
    return this.pacing > 0 ? Math.max(1, Math.ceil(c * this.pacing)) : c;
  }

  /** Tokens now (pacing); Infinity when pacing is off. */
  private refill(now: number): number {
    if (this.pacing <= 0) return Infinity;
    const l = this.window.current;
    if (l.count > 0) this.tokens = Math.min(this.burst(), this.tokens + ((now - this.refilledAt) * l.count) / l.windowMs);
    this.refilledAt = now;
    return this.tokens;
  }

  get limit(): WindowLimit {
    return this.window.current;
  }

  setLimit(limit: WindowLimit): void {
    this.window.setLimit(limit);
    this.pump();
  }

  /** Waiting bids (chats ready to send that have no slot yet). */
  get waiting(): number {
    return this.bids.size;
  }

  /** When this process will hold at most `k` slots of its window (see SlidingWindow.heldAtMostAt). */
  heldAtMostAt(k: number): number {
    return this.window.heldAtMostAt(this.clock.now(), k);
  }

  occupied(): number {
    return this.window.occupied(this.clock.now());
  }

  get pausedUntilMs(): number {
    return this.pausedUntil;
  }

  /** Queues a bid; returns a function that withdraws it if not yet granted. */
  request(bid: Bid): () => void {
    const e: Entry = { ...bid, seq: this.seq++, cancelled: false };
    this.bids.push(e);
    this.pump();
    return () => {
      e.cancelled = true;
    };
  }

  /** The answer arrived; `accepted`: Telegram took it (not a 429), which `acceptedPerSecond` counts. */
  settle(r: Reservation, answeredAt = this.clock.now(), accepted = false): void {
    if (accepted && !r.settled) {
      for (let i = 0; i < r.n; i++) this.acceptedAt.push(answeredAt);
      const cut = answeredAt - 2 * this.window.current.windowMs;
      let k = 0;
      while (k < this.acceptedAt.length && this.acceptedAt[k]! < cut) k++;
      if (k > 0) this.acceptedAt.splice(0, k);
    }
    this.window.settle(r, answeredAt);
    this.pump();
  }

  /**
   * Sends Telegram accepted in the window ending now, per second: what the server was seen
   * to take when a bot-wide 429 came (the AIMD decrease never stays above it).
   */
  acceptedPerSecond(windowMs = this.window.current.windowMs, endAt = this.clock.now()): number {
    const from = endAt - windowMs;
    let n = 0;
    for (let i = this.acceptedAt.length - 1; i >= 0 && this.acceptedAt[i]! > from; i--) if (this.acceptedAt[i]! <= endAt) n++;
    return (n / windowMs) * 1000;
  }

  cancel(r: Reservation): void {
    this.window.cancel(r);
    this.pump();
  }

  /** Bot-wide flood: nobody sends until `untilMs`. */
  pause(untilMs: number): void {
    this.pausedUntil = Math.max(this.pausedUntil, untilMs);
    this.pump();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }

  private before(a: Entry, b: Entry): boolean {
    if (a.priority !== b.priority) return a.priority > b.priority;
    // Score grows with backlog and with waiting time (ageing), both in ms.
    const sa = a.backlogMs - a.readySince;
    const sb = b.backlogMs - b.readySince;
    if (sa !== sb) return sa > sb;
    return a.seq < b.seq;
  }

  /** Grants as many waiting bids as the window allows, then sleeps until the next slot. */
  private pump(): void {
    if (this.stopped) return;
    const now = this.clock.now();
    if (now < this.pausedUntil) {
      this.wakeAt(this.pausedUntil);
      return;
    }
    // A share of 0 (waiting for a grant) grants nothing: a cost capped at 0 would pass any window.
    if (this.window.current.count <= 0) return;
    for (;;) {
      const top = this.bids.peek();
      if (!top) return;
      if (top.cancelled) {
        this.bids.pop();
        continue;
      }
      const cost = Math.min(top.cost, this.window.current.count);
      const at = this.window.availableAt(now, cost);
      if (at > now) {
        // Infinity: a settle will call pump again.
        if (at !== Infinity) this.wakeAt(at);
        return;
      }
      const need = Math.min(cost, this.burst());
      const tokens = this.refill(now);
      if (tokens < need - 1e-9) {
        const l = this.window.current;
        this.wakeAt(now + Math.ceil(((need - tokens) * l.windowMs) / l.count));
        return;
      }
      if (this.pacing > 0) this.tokens -= need;
      this.bids.pop();
      const r = this.window.reserve(cost);
      top.grant(r);
    }
  }

  private wakeAt(at: number): void {
    if (this.timer && this.timerAt <= at) return;
    if (this.timer) clearTimeout(this.timer);
    this.timerAt = at;
    this.timer = setTimeout(
      () => {
        this.timer = undefined;
        this.timerAt = Infinity;
        this.pump();
      },
      Math.min(2 ** 31 - 1, Math.max(0, at - this.clock.now())),
    ); // a longer delay would fire at once (TimeoutOverflowWarning)
  }
}
