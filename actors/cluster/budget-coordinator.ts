import type { KV, NatsConnection, Subscription } from 'nats';
import { spawn, dispatch, reply, assertNever, Supervision, type ActorRef, type Parent, type ReplyTo } from '../../src/runtime/actor';
import { describeError } from '../../src/errors';
import type { Logger } from '../../src/log';
import type { Metrics } from '../../src/metrics';
import type { WindowLimit } from '../../src/limits/window';
import { KvLease } from '../../src/cluster/lease';
import { computeShares } from '../../src/cluster/shares';
import { COORDINATOR_KEY, floorShare } from '../../src/cluster/budget-client';
import { GlobalRate } from '../../src/limits/global-rate';
import type { SubjectSet } from '../../src/nats/subjects';
import { decoder, encodeJson } from '../../src/nats/codec';
import { BudgetDemand } from '../../src/nats/payloads';

/**
 * Budget coordinator: runs in every process, acts only while it holds the
 * `budget.coordinator` lease. Four times a second it splits the bot's global limit
 * between the processes that report demand and sends each its grant (valid for a short
 * time, acknowledged). Why the sum never exceeds the limit in any sliding window: a
 * decrease is applied first and acknowledged; increases are handed out only from what
 * nobody may still be using: a process shrunk by a grant it acknowledged keeps its old share
 * reserved until its past sends fit the new one (its free_at); any other decrease (a leaver,
 * a share we did not know) holds every increase back for one full window. An
 * unacknowledged grant counts as in use until it expires. One floor share stays
 * unallocated for a process that joins and sends its floor before its first grant.
 *
 * The bot-wide rate is adaptive (AIMD, src/limits/global-rate.ts): each bot-wide flood a
 * member reports lowers it, clean seconds raise it back towards TELEGRAM_GLOBAL_RATE; the
 * capacity split between processes follows it.
 */
export type BudgetCoordinatorMsg =
  | { type: 'tick' }
  /** A member reported a bot-wide flood (already checked by the budget client); `at`: when its 429 came. */
  | { type: 'flood'; until: number; from: string; at?: number }
  /** Every member has reported what it got accepted in the window ending at the flood (or we waited long enough). */
  | { type: 'floodSettle'; at: number }
  /** Split now, between ticks: a process joined or found demand, or an increase became possible. */
  | { type: 'lead' }
  | { type: 'status'; replyTo: ReplyTo<BudgetStatus> }
  | { type: 'stepDown'; replyTo: ReplyTo<void> };

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

interface Member {
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

export interface BudgetCoordinatorState {
  lease: KvLease | null;
  since: number | null;
  members: Map<string, Member>;
  /** Acknowledged share per process. */
  cur: Map<string, number>;
  /** Grants sent and not acknowledged: in use until they expire. */
  pending: Map<string, { share: number; expiresAt: number }>;
  /** Expiry of the last grant each process acknowledged. */
  expiry: Map<string, number>;
  /** Increases wait until every shrunk process's past sends have left its window. */
  lastDecreaseAt: number;
  /**
   * A process shrunk by a grant it acknowledged may still hold its old share until its window fits the
   * new one (free_at): one step per shrink, so a process shrinking tick after tick frees its room step by step.
   */
  held: Map<string, Array<{ share: number; until: number }>>;
  /** Processes that acknowledged a grant from this coordinator since its election (their share is known). */
  acked: Set<string>;
  ticks: number;
  timers: NodeJS.Timeout[];
  sub: Subscription | undefined;
  rate: GlobalRate;
  /** A flood waiting for every member's count of accepted sends in the window ending at its `at`. */
  flood: { at: number; from: string } | null;
  /** A 'lead' message is on its way (at most one). */
  leadSoon: boolean;
}

export interface BudgetCoordinatorDeps {
  subjects: SubjectSet;
  nc: NatsConnection;
  kv: KV;
  log: Logger;
  metrics: Metrics;
  holder: string;
  instance: string;
  global: WindowLimit;
  leaseTtlMs: number;
}

export function spawnBudgetCoordinator(parent: Parent, deps: BudgetCoordinatorDeps): ActorRef<BudgetCoordinatorMsg> {
  const { subjects, nc, kv, log, metrics, holder, instance, global, leaseTtlMs } = deps;
  const ceiling = global.count;
  const W = global.windowMs;
  const capacityOf = (s: BudgetCoordinatorState) => Math.max(1, Math.min(ceiling, Math.floor((s.rate.rate * W) / 1000 + 1e-9)));
  const mRate = metrics.gauge(
    'budget_global_rate',
    'The bot-wide rate the coordinator splits between processes (per second; adaptive under TELEGRAM_GLOBAL_RATE)',
  );
  // Grants must expire before a successor can be elected (TTL) minus our own fencing time (TTL/2) and one window.
  // Config guarantees TTL/2 − W ≥ 500 ms (SHARD_LEASE_TTL_MS check).
  const grantLifeMs = Math.min(2_000, Math.floor(leaseTtlMs / 2 - W));
  const decodeDemand = decoder(BudgetDemand, { maxBytes: 2048 });
  /**
   * How long a flood waits for the members' counts at its instant before it uses what it has (a
   * process busy starting up answered after 300 ms). The pause is at least a second, and the new
   * split goes out at once after.
   */
  const FLOOD_SETTLE_MS = 600;
  const floodCounted = (s: BudgetCoordinatorState): boolean => s.flood !== null && [...s.members.values()].every((m) => m.atFlood.has(s.flood!.at));
  const mLeader = metrics.gauge('budget_coordinator', '1 while this process is the budget coordinator');

  const reserved = (s: BudgetCoordinatorState, h: string, now: number): number => {
    const exp = s.expiry.get(h) ?? 0;
    const p = s.pending.get(h);
    const pend = p && now < p.expiresAt ? p.share : 0;
    const held = now < exp ? (s.cur.get(h) ?? 0) : 0;
    let old = 0;
    for (const x of s.held.get(h) ?? []) if (now < x.until) old = Math.max(old, x.share);
    return Math.max(held, pend, old);
  };

  /** A 'lead' in `ms` (0: now), unless one is already on its way. */
  const leadIn = (s: BudgetCoordinatorState, self: ActorRef<BudgetCoordinatorMsg>, ms: number): void => {
    if (s.leadSoon || !s.lease) return;
    s.leadSoon = true;
    if (ms <= 0) {
      dispatch(self, { type: 'lead' });
      return;
    }
    const t = setTimeout(() => {
      s.timers = s.timers.filter((x) => x !== t);
      dispatch(self, { type: 'lead' });
    }, ms);
    s.timers.push(t);
  };

  const lead = async (s: BudgetCoordinatorState, self: ActorRef<BudgetCoordinatorMsg>): Promise<void> => {
    const now = Date.now();
    for (const [h, m] of s.members) if (now - m.at > 1_500) s.members.delete(h);
    for (const [h, steps] of s.held) {
      const live = steps.filter((x) => x.until > now);
      if (live.length > 0) s.held.set(h, live);
      else s.held.delete(h);
    }
    for (const h of [...s.cur.keys()]) if (!s.members.has(h) && reserved(s, h, now) === 0) s.cur.delete(h);
    // A process that joined since: it already uses what it reports (its floor) until we grant it more.
    for (const [h, m] of s.members) {
      if (!s.cur.has(h) && !s.pending.has(h)) {
        s.cur.set(h, m.reportedShare);
        s.expiry.set(h, now + leaseTtlMs);
      }
    }
    const busy = [...s.members.values()].some((m) => m.demand > 0);
    s.rate.tick(now, busy);
    mRate.set(s.rate.rate);
    const capacity = capacityOf(s);
    const demands = new Map([...s.members].map(([h, m]) => [h, m.demand]));
    // One floor stays free for a joiner that sends its floor before its first grant.
    const reserve = capacity > floorShare(ceiling) * (demands.size + 1) ? floorShare(ceiling) : 0;
    const target = computeShares(capacity - reserve, demands);
    // After an election, a process that ran on a grant may hold more than its last report said (reports
    // lag): nobody grows until each has acknowledged one of our grants (its ack says when its past sends fit).
    const known = [...s.members].every(([h, m]) => s.acked.has(h) || (!m.granted && m.reportedShare > 0));
    const canIncrease = known && now >= s.lastDecreaseAt + W + 50;
    let headroom = capacity - reserve;
    const everyone = new Set([...s.cur.keys(), ...s.pending.keys(), ...s.members.keys(), ...s.held.keys()]);
    for (const h of everyone) headroom -= reserved(s, h, now);
    // Shrink a process only when someone else needs the room: demand that dips for a
    // moment must not cost a full window of waiting before it can grow back.
    let wanted = 0;
    for (const h of target.keys()) wanted += Math.max(s.cur.get(h) ?? 0, target.get(h)!);
    const needsRoom = wanted > capacity;
    const next = new Map<string, number>();
    let waitingToGrow = false;
    for (const h of [...target.keys()].sort()) {
      const cur = s.cur.get(h) ?? 0;
      const t = target.get(h)!;
      if (t < cur) next.set(h, needsRoom ? t : cur);
      else if (t > cur && canIncrease && headroom > 0) {
        // The process's own current share is already inside `reserved`; only the increase is new.
        const inc = Math.min(t - cur, headroom);
        headroom -= inc;
        next.set(h, cur + inc);
      } else {
        if (t > cur) waitingToGrow = true;
        next.set(h, cur);
      }
    }
    const expiresAt = now + grantLifeMs;
    await Promise.all(
      [...next].map(async ([h, share]) => {
        const prev = s.cur.get(h) ?? 0;
        // What it may hold now: our acknowledged share, or a larger grant it may have applied without our hearing.
        const before = s.pending.get(h);
        const knew = s.acked.has(h) ? Math.max(prev, before && before.expiresAt + W > now ? before.share : 0) : undefined;
        s.pending.set(h, { share: Math.max(share, s.pending.get(h)?.share ?? 0), expiresAt });
        try {
          const grant = {
            share,
            window_ms: W,
            issued_at: now,
            expires_at: expiresAt,
            coordinator: holder,
            lease_revision: s.lease?.currentRevision ?? 0,
            rate: s.rate.rate,
          };
          const r = await nc.request(subjects.budgetGrant(h), encodeJson(grant), { timeout: 200 });
          const ack = JSON.parse(new TextDecoder().decode(r.data)) as { ok: boolean; share?: number; free_at?: number | null };
          if (ack.ok && ack.share === share) {
            s.cur.set(h, share);
            s.expiry.set(h, expiresAt);
            s.pending.delete(h);
            s.acked.add(h);
            // Its sends under a larger share (ours, or a previous coordinator's we did not know of) count
            // until they leave its window: free_at says when (unknown → a full window from now).
            const freeAt = typeof ack.free_at === 'number' ? ack.free_at : share < prev ? Date.now() + W : 0;
            // A shrink we know the size of: its old share stays reserved until then, others may grow from the rest
            // at once (a global wait here stalled everyone while a draining process shrank tick after tick).
            if (freeAt > Date.now() && knew !== undefined && share < knew) s.held.set(h, [...(s.held.get(h) ?? []), { share: knew, until: freeAt + 50 }]);
            else if (freeAt > Date.now()) s.lastDecreaseAt = Math.max(s.lastDecreaseAt, freeAt - W);
          }
        } catch {
          // No answer: the grant may or may not be in force; it stays reserved until it expires.
        }
      }),
    );
    // A process waits to grow until shrunk processes' past sends have left their windows: split again
    // right then, not at the next tick (up to 250 ms later, at every join and every rebalance).
    const growAt = s.lastDecreaseAt + W + 50;
    const t = Date.now();
    // Just after an election the acknowledgements above were what growth waited for: split again now.
    const knownNow = [...s.members].every(([h, m]) => s.acked.has(h) || (!m.granted && m.reportedShare > 0));
    if (waitingToGrow && !known && knownNow) leadIn(s, self, Math.max(0, growAt - t));
    else if (waitingToGrow) {
      // Or when a shrunk process's old share leaves its window.
      const at = Math.min(
        growAt > t ? growAt : Infinity,
        ...[...s.held.values()]
          .flat()
          .map((x) => x.until + 10)
          .filter((u) => u > t),
      );
      if (at < t + 250) leadIn(s, self, at - t);
    }
  };

  /**
   * Lowers the bot rate after a flood. `counted`: every member's `accepted` counts the window ending
   * at the flood's instant, so their sum is what the server really took, and it also caps the
   * remembered rejected rate (as one process's own count does). Otherwise the sum of reports up to
   * 250 ms old, taken while the cluster may have been ramping up, only lowers the rate.
   */
  const throttle = (s: BudgetCoordinatorState, self: ActorRef<BudgetCoordinatorMsg>, from: string, counted: boolean): BudgetCoordinatorState => {
    const at = s.flood?.at;
    s.flood = null;
    const before = s.rate.rate;
    let atFlood = 0;
    let recent = 0;
    for (const m of s.members.values()) {
      atFlood += at !== undefined && m.atFlood.has(at) ? m.atFlood.get(at)! : m.accepted;
      recent += m.accepted;
    }
    // The later 429s of the same event (within a window) were announced and counted too: their counts
    // also hold the answers that were still in flight at the first one (a cold start's burst: 77 for 100),
    // and answer times bunched on a loaded machine push some too high (112 for 100): the median of them all.
    const members = [...s.members.values()];
    const sums = [atFlood];
    for (const a of at === undefined ? [] : new Set(members.flatMap((m) => [...m.atFlood.keys()])))
      if (a > at! && a < at! + W && members.every((m) => m.atFlood.has(a))) sums.push(members.reduce((n, m) => n + m.atFlood.get(a)!, 0));
    atFlood = sums.sort((x, y) => x - y)[Math.floor(sums.length / 2)]!;
    // Two estimates of what the server took: the counts at the flood's instant (low when the announcer
    // read its 429 late, or sends were still in flight) and the last periodic reports (low while the
    // cluster ramps up). The rate goes just under the larger; it caps the remembered rejected rate only
    // when every member answered and the counts at the instant are not the lower one by more than 5 %.
    const accepted = Math.max(atFlood, recent);
    const trusted = counted && atFlood >= 0.95 * recent;
    // At the 429's instant, not when we got to it: a late-handled 429 of the same event (a loaded machine) is not a new one.
    const rate = s.rate.throttled(at ?? Date.now(), accepted > 0 ? (accepted / W) * 1000 : undefined, trusted);
    const missing = counted ? undefined : [...s.members].filter(([, m]) => at === undefined || !m.atFlood.has(at)).map(([, m]) => m.instance);
    if (rate < before)
      log.warn(
        { from, at, rate: Number(rate.toFixed(2)), accepted: atFlood, recent, counted, trusted, missing, ceiling: (global.count / W) * 1000 },
        'bot-wide flood: lowering the bot rate for the whole cluster',
      );
    mRate.set(rate);
    leadIn(s, self, 0);
    return s;
  };

  return spawn<BudgetCoordinatorState, BudgetCoordinatorMsg>(parent, {
    name: 'budget-coordinator',
    supervision: Supervision.restartWithBackoff({ minBackoffMs: 200, maxBackoffMs: 5_000 }),
    init: (ctx) => {
      const state: BudgetCoordinatorState = {
        lease: null,
        since: null,
        members: new Map(),
        cur: new Map(),
        pending: new Map(),
        expiry: new Map(),
        lastDecreaseAt: 0,
        held: new Map(),
        acked: new Set(),
        ticks: 0,
        timers: [],
        sub: undefined,
        rate: new GlobalRate((global.count / W) * 1000, Date.now(), true),
        flood: null,
        leadSoon: false,
      };
      state.sub = nc.subscribe(subjects.budgetDemand, {
        callback: (err, m) => {
          if (err) return;
          try {
            const d = decodeDemand(m.data);
            if (d.leaving) {
              // A process that stopped gracefully: its share is free once its past sends leave its window.
              if (d.free_at === undefined || d.free_at > Date.now() + 2 * W) return;
              for (const map of [state.members, state.cur, state.pending, state.expiry, state.acked, state.held]) map.delete(d.holder);
              state.lastDecreaseAt = Math.max(state.lastDecreaseAt, d.free_at - W);
              return;
            }
            const before = state.members.get(d.holder);
            // A process that joins, or finds demand after none: split at once, not at the next tick.
            if (state.lease && d.demand > 0 && !(before && before.demand > 0)) leadIn(state, ctx.self, 0);
            const atFlood = before?.atFlood ?? new Map<number, number>();
            if (d.accepted_at !== undefined) {
              atFlood.set(d.accepted_at, d.accepted ?? 0);
              if (atFlood.size > 8) atFlood.delete(atFlood.keys().next().value!);
            }
            // `accepted` stays the periodic count: a flood answer counts another window.
            state.members.set(d.holder, {
              instance: d.instance,
              demand: d.demand,
              accepted: d.accepted_at !== undefined ? (before?.accepted ?? 0) : (d.accepted ?? 0),
              atFlood,
              rate: d.rate,
              granted: d.granted ?? true,
              reportedShare: d.share,
              at: Date.now(),
            });
            if (d.accepted_at !== undefined && floodCounted(state)) dispatch(ctx.self, { type: 'floodSettle', at: d.accepted_at });
          } catch {
            metrics
              .counter('nats_bad_payloads_total', 'NATS payloads rejected at the edge', ['subject', 'code'])
              .inc({ subject: subjects.budgetDemand, code: 'BAD_PAYLOAD' });
          }
        },
      });
      state.timers.push(setInterval(() => dispatch(ctx.self, { type: 'tick' }), 250));
      return state;
    },
    afterStop: (state) => {
      state.timers.forEach((t) => clearInterval(t));
      state.sub?.unsubscribe();
    },
    receive: async (state, msg, ctx) => {
      switch (msg.type) {
        case 'tick': {
          state.ticks++;
          const now = Date.now();
          try {
            if (!state.lease) {
              // Every other tick: when a coordinator dies, every grant lapses within its life and
              // nobody sends until the next one is elected.
              if (state.ticks % 2 !== 1) return state;
              const lease = new KvLease(kv, COORDINATOR_KEY, { holder, instance, since: now }, Math.floor(leaseTtlMs / 2));
              if (await lease.acquire()) {
                state.lease = lease;
                state.since = now;
                state.cur = new Map([...state.members].map(([h, m]) => [h, m.reportedShare]));
                state.expiry = new Map([...state.members].map(([h]) => [h, now + leaseTtlMs]));
                state.pending.clear();
                state.acked.clear();
                state.held.clear();
                // Someone may still be sending under an old grant (reports lag) or the fallback: nobody is
                // raised until every such process has acknowledged one of our grants (see canIncrease),
                // whose free_at covers what its window still holds. A previous coordinator stopped
                // granting before it released the lease (or its grants expired before its lease did).
                // A process on the floor share (no grant yet) uses exactly what it reported: nothing to wait out.
                // The bot rate the previous coordinator had learned: start from the lowest any process heard.
                const heard = [...state.members.values()].map((m) => m.rate).filter((r): r is number => typeof r === 'number');
                if (heard.length) state.rate.adopt(Math.min(...heard), now);
                mLeader.set(1);
                log.info({ grantLifeMs, rate: state.rate.rate }, 'elected budget coordinator');
              }
              return state;
            }
            if (state.ticks % Math.max(1, Math.floor(leaseTtlMs / 4 / 250)) === 0 && !(await state.lease.renew())) {
              log.warn('budget coordinator lease taken by another process: stepping down');
              state.lease = null;
              mLeader.set(0);
              return state;
            }
            if (!state.lease.valid(now)) {
              log.warn('budget coordinator lease not renewed in time: stepping down');
              state.lease.forget();
              state.lease = null;
              mLeader.set(0);
              return state;
            }
            await lead(state, ctx.self);
          } catch (e) {
            log.warn({ err: describeError(e) }, 'budget coordinator tick failed');
          }
          return state;
        }
        case 'flood': {
          if (!state.lease) return state;
          if (msg.at === undefined) return throttle(state, ctx.self, msg.from, false);
          // Every member answers a flood with its count of accepted sends in the window ending at the
          // 429: their sum is what the server took in its window. Wait for them (or FLOOD_SETTLE_MS).
          if (state.flood) return state;
          state.flood = { at: msg.at, from: msg.from };
          if (floodCounted(state)) return throttle(state, ctx.self, msg.from, true);
          const t = setTimeout(() => {
            state.timers = state.timers.filter((x) => x !== t);
            dispatch(ctx.self, { type: 'floodSettle', at: msg.at! });
          }, FLOOD_SETTLE_MS);
          state.timers.push(t);
          return state;
        }
        case 'lead': {
          state.leadSoon = false;
          if (!state.lease || !state.lease.valid(Date.now())) return state;
          try {
            await lead(state, ctx.self);
          } catch (e) {
            log.warn({ err: describeError(e) }, 'budget coordinator split failed');
          }
          return state;
        }
        case 'floodSettle': {
          // Only for the flood it was started for (a later flood has its own wait).
          if (!state.flood || state.flood.at !== msg.at) return state;
          if (!state.lease) {
            state.flood = null;
            return state;
          }
          return throttle(state, ctx.self, state.flood.from, floodCounted(state));
        }
        case 'status': {
          const members = [...state.members].map(([h, m]) => ({
            holder: h,
            instance: m.instance,
            demand: m.demand,
            share: state.lease ? (state.cur.get(h) ?? 0) : m.reportedShare,
            reportedAt: m.at,
          }));
          reply(msg.replyTo, {
            leader: state.lease !== null,
            since: state.since,
            capacity: capacityOf(state),
            ceiling,
            rate: state.rate.rate,
            windowMs: W,
            processes: members,
          });
          return state;
        }
        case 'stepDown':
          state.timers.forEach((t) => clearInterval(t));
          state.timers = [];
          if (state.lease) await state.lease.release().catch(() => undefined);
          state.lease = null;
          mLeader.set(0);
          reply(msg.replyTo, undefined);
          return state;
        default:
          return assertNever(msg);
      }
    },
  });
}
