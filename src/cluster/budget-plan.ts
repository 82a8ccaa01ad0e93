import { GlobalRate } from '../limits/global-rate';
import type { WindowLimit } from '../limits/window';
import type { BudgetDemand } from '../nats/payloads';
import { floorShare } from './budget-client';
import { computeShares } from './shares';

/**
 * The budget coordinator's books and arithmetic, without I/O or timers: every method
 * takes `now`, so the rules are tested with a fake clock (the actor,
 * actors/cluster/budget-coordinator.ts, only sends what `split` decides and feeds the
 * answers back). Why the sum never exceeds the limit in any sliding window: a decrease is
 * applied first and acknowledged; increases are handed out only from what nobody may still
 * be using: a process shrunk by a grant it acknowledged keeps its old share reserved until its
 * past sends fit the new one (its free_at); any other decrease (a leaver, a share we did not
 * know) holds every increase back for one full window. An unacknowledged grant counts as in
 * use until it expires. One floor share stays unallocated for a process that joins and
 * sends its floor before its first grant.
 */
export interface BudgetMember {
  instance: string;
  demand: number;
  /** Sends Telegram accepted from it in its last window (reported). */
  accepted: number;
  /**
   * Its answers to the last floods it heard (flood `at` → what it got accepted in the window ending
   * then); several 429s of one event come within milliseconds, each announced.
   */
  atFlood: Map<number, number>;
  /** The bot rate it last heard from a coordinator. */
  rate: number | undefined;
  /** It runs on a grant or the fallback (else only on the floor, which needs no waiting out). */
  granted: boolean;
  reportedShare: number;
  at: number;
}

/** The coordinator's status (`notify.cluster.status` shows it). */
export interface BudgetStatus {
  leader: boolean;
  since: number | null;
  capacity: number;
  /** The configured limit per window (the ceiling the adaptive capacity never exceeds). */
  ceiling: number;
  /** The bot-wide rate now, per second. */
  rate: number;
  windowMs: number;
  processes: Array<{ holder: string; instance: string; demand: number; share: number; reportedAt: number }>;
}

/** A member's answer to a grant (undefined fields: an old member, or an error reply). */
export interface GrantAck {
  ok: boolean;
  share?: number;
  /** When its sends under a larger share leave its window (null: already). */
  free_at?: number | null;
}

/** One round of grants: what to send to whom. */
export interface Split {
  issuedAt: number;
  expiresAt: number;
  /**
   * The share to grant each process, its acknowledged share before, and what it may hold now (ours,
   * or a larger grant it may have applied without our hearing; undefined: not known).
   */
  grants: Array<{ holder: string; share: number; prev: number; knew: number | undefined }>;
  /** Every member's share was known when the split was made (growth waits for that). */
  known: boolean;
  /** Some process wanted more than it got. */
  waitingToGrow: boolean;
}

/** What a flood did to the bot rate (for the log). */
export interface Throttled {
  at: number | undefined;
  before: number;
  rate: number;
  /** The sum of the members' counts at the flood's instant, and of their last periodic reports. */
  atFlood: number;
  recent: number;
  counted: boolean;
  trusted: boolean;
  /** Members that did not answer the flood with their count (when not `counted`). */
  missing: string[] | undefined;
}

export interface BudgetBookOptions {
  /** The bot's configured limit (the ceiling the adaptive capacity never exceeds). */
  global: WindowLimit;
  /** SHARD_LEASE_TTL_MS: how long a joiner's reported share is assumed in use before it acknowledges a grant. */
  leaseTtlMs: number;
  /** How long a grant lives (the coordinator's safety argument bounds it). */
  grantLifeMs: number;
}

/** The coordinator ticks (renews, splits) this often, ms. */
export const TICK_MS = 250;
/**
 * How long a flood waits for the members' counts at its instant before it uses what it has (a
 * process busy starting up answered after 300 ms). The pause is at least a second, and the new
 * split goes out at once after.
 */
export const FLOOD_SETTLE_MS = 600;

/** A grant may be obeyed this long past its expiry: the budget client checks expiry every 100 ms, plus timer slack. */
export const EXPIRY_SLACK_MS = 250;

/**
 * The coordinator's lease timing (the argument is in docs/deploy.md, "Leases and fencing").
 * It grants only while its last successful lease write started less than `fenceAfterMs` ago;
 * a grant lives `grantLifeMs`, and the sends made under it stay in their window one window
 * longer. A successor is elected at the earliest a TTL after that write started, so
 * fenceAfterMs + grantLifeMs + window + EXPIRY_SLACK_MS = TTL: by then every grant of ours has
 * expired and its sends have left the window. Renewals fail during a JetStream election; the
 * coordinator then stops granting at `fenceAfterMs` but keeps the lease, and its first
 * successful renewal (a compare-and-set, so nobody took the key meanwhile) resumes it. It
 * renews every TTL/12, like the shard leases, so that an election starts soon after a write.
 * Config guarantees TTL ≥ 2 × (window + 500 ms), so fenceAfterMs ≥ 700 ms.
 */
export function coordinatorTiming(leaseTtlMs: number, windowMs: number): { grantLifeMs: number; fenceAfterMs: number; renewEveryMs: number } {
  const available = leaseTtlMs - windowMs - EXPIRY_SLACK_MS;
  const grantLifeMs = Math.max(250, Math.min(1_000, Math.floor(available / 4)));
  return { grantLifeMs, fenceAfterMs: available - grantLifeMs, renewEveryMs: Math.max(TICK_MS, Math.floor(leaseTtlMs / 12)) };
}

/** A member silent this long is dropped (it reports 4 times a second). */
export const MEMBER_SILENT_MS = 1_500;
/** Increases wait this long past a full window after the last decrease (timer and clock slack). */
const GROW_SLACK_MS = 50;

export class BudgetBook {
  readonly members = new Map<string, BudgetMember>();
  /** Acknowledged share per process. */
  readonly cur = new Map<string, number>();
  /** Grants sent and not acknowledged: in use until they expire. */
  readonly pending = new Map<string, { share: number; expiresAt: number }>();
  /** Expiry of the last grant each process acknowledged. */
  readonly expiry = new Map<string, number>();
  /** Processes that acknowledged a grant from this coordinator since its election (their share is known). */
  readonly acked = new Set<string>();
  /** Increases wait until every shrunk process's past sends have left its window. */
  lastDecreaseAt = 0;
  /**
   * A process shrunk by a grant it acknowledged may still hold its old share until its window fits the
   * new one (free_at): one step per shrink, so a process shrinking tick after tick frees its room step by step.
   */
  readonly held = new Map<string, Array<{ share: number; until: number }>>();
  readonly rate: GlobalRate;
  /** A flood waiting for every member's count of accepted sends in the window ending at its `at`. */
  flood: { at: number; from: string } | null = null;
  /** Each member's demand when the coordinator's lease went unrenewed, used until `heldUntil` after it resumes (see `paused`). */
  private held_: { demand: Map<string, number>; until: number } | null = null;
  private readonly W: number;

  constructor(
    private readonly o: BudgetBookOptions,
    now: number,
  ) {
    this.W = o.global.windowMs;
    this.rate = new GlobalRate((o.global.count / this.W) * 1000, now, true);
  }

  /** Sends per window the cluster may make now: the adaptive rate, never above the configured limit. */
  capacity(): number {
    return Math.max(1, Math.min(this.o.global.count, Math.floor((this.rate.rate * this.W) / 1000 + 1e-9)));
  }

  /** What process `h` may be using now: its acknowledged share until it expires, or an unacknowledged grant. */
  reserved(h: string, now: number): number {
    const exp = this.expiry.get(h) ?? 0;
    const p = this.pending.get(h);
    const pend = p && now < p.expiresAt ? p.share : 0;
    const held = now < exp ? (this.cur.get(h) ?? 0) : 0;
    let old = 0;
    for (const x of this.held.get(h) ?? []) if (now < x.until) old = Math.max(old, x.share);
    return Math.max(held, pend, old);
  }

  /**
   * A member's demand report. `split`: it joined, or found demand after none (split at once, not
   * at the next tick); `settled`: it was the last count a waiting flood needed.
   */
  report(d: BudgetDemand, now: number): { split: boolean; settled: boolean } {
    if (d.leaving) {
      // A process that stopped gracefully: its share is free once its past sends leave its window.
      if (d.free_at !== undefined && d.free_at <= now + 2 * this.W) {
        for (const map of [this.members, this.cur, this.pending, this.expiry, this.acked, this.held]) map.delete(d.holder);
        this.lastDecreaseAt = Math.max(this.lastDecreaseAt, d.free_at - this.W);
      }
      return { split: false, settled: false };
    }
    const before = this.members.get(d.holder);
    const atFlood = before?.atFlood ?? new Map<number, number>();
    if (d.accepted_at !== undefined) {
      atFlood.set(d.accepted_at, d.accepted ?? 0);
      if (atFlood.size > 8) atFlood.delete(atFlood.keys().next().value!);
    }
    // `accepted` stays the periodic count: a flood answer counts another window.
    this.members.set(d.holder, {
      instance: d.instance,
      demand: d.demand,
      accepted: d.accepted_at !== undefined ? (before?.accepted ?? 0) : (d.accepted ?? 0),
      atFlood,
      rate: d.rate,
      granted: d.granted ?? true,
      reportedShare: d.share,
      at: now,
    });
    return { split: d.demand > 0 && !(before && before.demand > 0), settled: d.accepted_at !== undefined && this.floodCounted() };
  }

  /**
   * This process was just elected. Someone may still be sending under an old grant (reports lag)
   * or the fallback: nobody is raised until every such process has acknowledged one of our grants
   * (see `known`), whose free_at covers what its window still holds. A process on the floor share
   * (no grant yet) uses exactly what it reported: nothing to wait out. The bot rate the previous
   * coordinator had learned: start from the lowest any process heard.
   */
  elected(now: number): void {
    this.cur.clear();
    this.expiry.clear();
    for (const [h, m] of this.members) {
      this.cur.set(h, m.reportedShare);
      this.expiry.set(h, now + this.o.leaseTtlMs);
    }
    this.pending.clear();
    this.acked.clear();
    this.held.clear();
    const heard = [...this.members.values()].map((m) => m.rate).filter((r): r is number => typeof r === 'number');
    if (heard.length) this.rate.adopt(Math.min(...heard), now);
  }

  /**
   * The coordinator stopped granting (its lease went unrenewed: a JetStream election) or resumed.
   * The election fences the processes' shards too: their pipelines give their rows back, their
   * demand reports fall to 0 and come back one by one as they claim again. Split by those reports
   * at once and the first process back gets the whole budget, the others wait for it to shrink and
   * its sends to leave its window (up to a second each, seen after elections). So for two windows
   * after resuming, a member's demand counts at least what it was when granting stopped.
   */
  paused(now: number, resumed: boolean): void {
    if (!resumed) this.held_ = { demand: new Map([...this.members].map(([h, m]) => [h, m.demand])), until: Infinity };
    else if (this.held_) this.held_.until = now + 2 * this.W;
  }

  /** Every member's share is known: it acknowledged one of our grants, or runs on the floor it reported. */
  known(): boolean {
    return [...this.members].every(([h, m]) => this.acked.has(h) || (!m.granted && m.reportedShare > 0));
  }

  /**
   * The next round of grants. Records each as pending (in use until it expires or is
   * acknowledged), so call it only when the grants are sent.
   */
  split(now: number): Split {
    for (const [h, m] of this.members) if (now - m.at > MEMBER_SILENT_MS) this.members.delete(h);
    for (const [h, steps] of this.held) {
      const live = steps.filter((x) => x.until > now);
      if (live.length > 0) this.held.set(h, live);
      else this.held.delete(h);
    }
    for (const h of [...this.cur.keys()]) if (!this.members.has(h) && this.reserved(h, now) === 0) this.cur.delete(h);
    // A process that joined since: it already uses what it reports (its floor) until we grant it more.
    for (const [h, m] of this.members) {
      if (!this.cur.has(h) && !this.pending.has(h)) {
        this.cur.set(h, m.reportedShare);
        this.expiry.set(h, now + this.o.leaseTtlMs);
      }
    }
    this.rate.tick(
      now,
      [...this.members.values()].some((m) => m.demand > 0),
    );
    const capacity = this.capacity();
    if (this.held_ && now >= this.held_.until) this.held_ = null;
    const held = this.held_?.demand;
    const demands = new Map([...this.members].map(([h, m]) => [h, Math.max(m.demand, held?.get(h) ?? 0)]));
    const floor = floorShare(this.o.global.count);
    // One floor stays free for a joiner that sends its floor before its first grant.
    const reserve = capacity > floor * (demands.size + 1) ? floor : 0;
    const target = computeShares(capacity - reserve, demands);
    // After an election, a process that ran on a grant may hold more than its last report said (reports
    // lag): nobody grows until each has acknowledged one of our grants (its ack says when its past sends fit).
    const known = this.known();
    const canIncrease = known && now >= this.lastDecreaseAt + this.W + GROW_SLACK_MS;
    let headroom = capacity - reserve;
    for (const h of new Set([...this.cur.keys(), ...this.pending.keys(), ...this.members.keys(), ...this.held.keys()])) headroom -= this.reserved(h, now);
    // Shrink a process only when someone else needs the room: demand that dips for a
    // moment must not cost a full window of waiting before it can grow back.
    let wanted = 0;
    for (const [h, t] of target) wanted += Math.max(this.cur.get(h) ?? 0, t);
    const needsRoom = wanted > capacity;
    const grants: Split['grants'] = [];
    let waitingToGrow = false;
    for (const h of [...target.keys()].sort()) {
      const cur = this.cur.get(h) ?? 0;
      const t = target.get(h)!;
      let share = cur;
      if (t < cur) share = needsRoom ? t : cur;
      else if (t > cur && canIncrease && headroom > 0) {
        // The process's own current share is already inside `reserved`; only the increase is new.
        const inc = Math.min(t - cur, headroom);
        headroom -= inc;
        share = cur + inc;
      } else if (t > cur) waitingToGrow = true;
      // What it may hold now: our acknowledged share, or a larger grant it may have applied without our hearing.
      const before = this.pending.get(h);
      const knew = this.acked.has(h) ? Math.max(cur, before && before.expiresAt + this.W > now ? before.share : 0) : undefined;
      grants.push({ holder: h, share, prev: cur, knew });
    }
    const expiresAt = now + this.o.grantLifeMs;
    for (const g of grants) this.pending.set(g.holder, { share: Math.max(g.share, this.pending.get(g.holder)?.share ?? 0), expiresAt });
    return { issuedAt: now, expiresAt, grants, known, waitingToGrow };
  }

  /** A member's answer to a grant of `split` (undefined: no answer; the grant stays reserved until it expires). */
  acknowledged(split: Split, g: Split['grants'][number], ack: GrantAck | undefined, now: number): void {
    if (!ack?.ok || ack.share !== g.share) return;
    this.cur.set(g.holder, g.share);
    this.expiry.set(g.holder, split.expiresAt);
    this.pending.delete(g.holder);
    this.acked.add(g.holder);
    // Its sends under a larger share (ours, or a previous coordinator's we did not know of) count
    // until they leave its window: free_at says when (unknown → a full window from now).
    const freeAt = typeof ack.free_at === 'number' ? ack.free_at : g.share < g.prev ? now + this.W : 0;
    // A shrink we know the size of: its old share stays reserved until then, others may grow from the rest
    // at once (a global wait here stalled everyone while a draining process shrank tick after tick).
    if (freeAt > now && g.knew !== undefined && g.share < g.knew)
      this.held.set(g.holder, [...(this.held.get(g.holder) ?? []), { share: g.knew, until: freeAt + GROW_SLACK_MS }]);
    else if (freeAt > now) this.lastDecreaseAt = Math.max(this.lastDecreaseAt, freeAt - this.W);
  }

  /**
   * After a round's answers: in how many ms to split again (undefined: at the next tick). A process
   * waits to grow until shrunk processes' past sends have left their windows: split right then, not
   * at the next tick (up to 250 ms later, at every join and every rebalance); and just after an
   * election, the acknowledgements were what growth waited for.
   */
  nextSplitIn(split: Split, now: number): number | undefined {
    if (!split.waitingToGrow) return undefined;
    const growAt = this.lastDecreaseAt + this.W + GROW_SLACK_MS;
    if (!split.known && this.known()) return Math.max(0, growAt - now);
    // Or when a shrunk process's old share leaves its window.
    const steps = [...this.held.values()].flat().map((x) => x.until + 10);
    const at = Math.min(growAt > now ? growAt : Infinity, ...steps.filter((u) => u > now));
    return at < now + 250 ? at - now : undefined;
  }

  /** The status; the processes' shares are what we granted while leading, else what each reported. */
  status(leader: boolean, since: number | null): BudgetStatus {
    return {
      leader,
      since,
      capacity: this.capacity(),
      ceiling: this.o.global.count,
      rate: this.rate.rate,
      windowMs: this.W,
      processes: [...this.members].map(([h, m]) => ({
        holder: h,
        instance: m.instance,
        demand: m.demand,
        share: leader ? (this.cur.get(h) ?? 0) : m.reportedShare,
        reportedAt: m.at,
      })),
    };
  }

  /**
   * A flood announced with its instant: every member answers it with its count of accepted sends
   * in the window ending at the 429, and their sum is what the server took. 'counted': every
   * count is in (throttle now); 'wait': wait for them (or FLOOD_SETTLE_MS); 'busy': a flood is
   * already waiting.
   */
  startFlood(at: number, from: string): 'counted' | 'wait' | 'busy' {
    if (this.flood) return 'busy';
    this.flood = { at, from };
    return this.floodCounted() ? 'counted' : 'wait';
  }

  /** Every member has answered the waiting flood with its count at the flood's instant. */
  floodCounted(): boolean {
    const f = this.flood;
    return f !== null && [...this.members.values()].every((m) => m.atFlood.has(f.at));
  }

  /**
   * Lowers the bot rate after a flood and forgets the waiting one. `counted`: every member's
   * `accepted` counts the window ending at the flood's instant, so their sum is what the server
   * really took, and it also caps the remembered rejected rate (as one process's own count does).
   * Otherwise the sum of reports up to 250 ms old, taken while the cluster may have been ramping
   * up, only lowers the rate.
   */
  throttle(now: number, counted: boolean): Throttled {
    const at = this.flood?.at;
    this.flood = null;
    const before = this.rate.rate;
    let atFlood = 0;
    let recent = 0;
    for (const m of this.members.values()) {
      atFlood += at !== undefined && m.atFlood.has(at) ? m.atFlood.get(at)! : m.accepted;
      recent += m.accepted;
    }
    // The later 429s of the same event (within a window) were announced and counted too: their counts
    // also hold the answers that were still in flight at the first one (a cold start's burst: 77 for 100),
    // and answer times bunched on a loaded machine push some too high (112 for 100): the median of them all.
    const members = [...this.members.values()];
    const sums = [atFlood];
    for (const a of at === undefined ? [] : new Set(members.flatMap((m) => [...m.atFlood.keys()])))
      if (a > at! && a < at! + this.W && members.every((m) => m.atFlood.has(a))) sums.push(members.reduce((n, m) => n + m.atFlood.get(a)!, 0));
    atFlood = sums.sort((x, y) => x - y)[Math.floor(sums.length / 2)]!;
    // Two estimates of what the server took: the counts at the flood's instant (low when the announcer
    // read its 429 late, or sends were still in flight) and the last periodic reports (low while the
    // cluster ramps up). The rate goes just under the larger; it caps the remembered rejected rate only
    // when every member answered and the counts at the instant are not the lower one by more than 5 %.
    const accepted = Math.max(atFlood, recent);
    const trusted = counted && atFlood >= 0.95 * recent;
    // At the 429's instant, not when we got to it: a late-handled 429 of the same event (a loaded machine) is not a new one.
    const rate = this.rate.throttled(at ?? now, accepted > 0 ? (accepted / this.W) * 1000 : undefined, trusted);
    const missing = counted ? undefined : [...this.members.values()].filter((m) => at === undefined || !m.atFlood.has(at)).map((m) => m.instance);
    return { at, before, rate, atFlood, recent, counted, trusted, missing };
  }
}
