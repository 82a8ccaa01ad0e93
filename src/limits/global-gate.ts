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

  constructor(limit: WindowLimit, private readonly clock: Clock = systemClock) {
    this.window = new SlidingWindow(limit);
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

  settle(r: Reservation, answeredAt = this.clock.now()): void {
    this.window.settle(r, answeredAt);
    this.pump();
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
    if (now < this.pausedUntil) return this.wakeAt(this.pausedUntil);
    // A share of 0 (waiting for a grant) grants nothing: a cost capped at 0 would pass any window.
    if (this.window.current.count <= 0) return;
    for (;;) {
      const top = this.bids.peek();
      if (!top) return;
      if (top.cancelled) {
        this.bids.pop();
        continue;
      }
      const at = this.window.availableAt(now, Math.min(top.cost, this.window.current.count));
      if (at > now) {
        // Infinity: a settle will call pump again.
        if (at !== Infinity) this.wakeAt(at);
        return;
      }
      this.bids.pop();
      const r = this.window.reserve(Math.min(top.cost, this.window.current.count));
      top.grant(r);
    }
  }

  private wakeAt(at: number): void {
    if (this.timer && this.timerAt <= at) return;
    if (this.timer) clearTimeout(this.timer);
    this.timerAt = at;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.timerAt = Infinity;
      this.pump();
    }, Math.min(2 ** 31 - 1, Math.max(0, at - this.clock.now()))); // a longer delay would fire at once (TimeoutOverflowWarning)
  }
}
