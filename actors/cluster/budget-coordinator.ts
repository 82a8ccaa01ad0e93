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
 * nobody may still be using, and only one full window after the last decrease (sends
 * made under the old, larger share are still inside the window until then). An
 * unacknowledged grant counts as in use until it expires. One floor share stays
 * unallocated for a process that joins and sends its floor before its first grant.
 *
 * The bot-wide rate is adaptive (AIMD, src/limits/global-rate.ts): each bot-wide flood a
 * member reports lowers it, clean seconds raise it back towards TELEGRAM_GLOBAL_RATE; the
 * capacity split between processes follows it.
 */
export type BudgetCoordinatorMsg =
  | { type: 'tick' }
  /** A member reported a bot-wide flood (already checked by the budget client). */
  | { type: 'flood'; until: number; from: string }
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
  ticks: number;
  timers: NodeJS.Timeout[];
  sub: Subscription | undefined;
  rate: GlobalRate;
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
  const mRate = metrics.gauge('budget_global_rate', 'The bot-wide rate the coordinator splits between processes (per second; adaptive under TELEGRAM_GLOBAL_RATE)');
  // Grants must expire before a successor can be elected (TTL) minus our own fencing time (TTL/2) and one window.
  // Config guarantees TTL/2 − W ≥ 500 ms (SHARD_LEASE_TTL_MS check).
  const grantLifeMs = Math.min(2_000, Math.floor(leaseTtlMs / 2 - W));
  const decodeDemand = decoder(BudgetDemand, { maxBytes: 2048 });
  const mLeader = metrics.gauge('budget_coordinator', '1 while this process is the budget coordinator');

  const reserved = (s: BudgetCoordinatorState, h: string, now: number): number => {
    const exp = s.expiry.get(h) ?? 0;
    const p = s.pending.get(h);
    const pend = p && now < p.expiresAt ? p.share : 0;
    const held = now < exp ? (s.cur.get(h) ?? 0) : 0;
    return Math.max(held, pend);
  };

  const lead = async (s: BudgetCoordinatorState): Promise<void> => {
    const now = Date.now();
    for (const [h, m] of s.members) if (now - m.at > 1_500) s.members.delete(h);
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
    const canIncrease = now >= s.lastDecreaseAt + W + 50;
    let headroom = capacity - reserve;
    const everyone = new Set([...s.cur.keys(), ...s.pending.keys(), ...s.members.keys()]);
    for (const h of everyone) headroom -= reserved(s, h, now);
    // Shrink a process only when someone else needs the room: demand that dips for a
    // moment must not cost a full window of waiting before it can grow back.
    let wanted = 0;
    for (const h of target.keys()) wanted += Math.max(s.cur.get(h) ?? 0, target.get(h)!);
    const needsRoom = wanted > capacity;
    const next = new Map<string, number>();
    for (const h of [...target.keys()].sort()) {
      const cur = s.cur.get(h) ?? 0;
      const t = target.get(h)!;
      if (t < cur) next.set(h, needsRoom ? t : cur);
      else if (t > cur && canIncrease && headroom > 0) {
        // The process's own current share is already inside `reserved`; only the increase is new.
        const inc = Math.min(t - cur, headroom);
        headroom -= inc;
        next.set(h, cur + inc);
      } else next.set(h, cur);
    }
    const expiresAt = now + grantLifeMs;
    await Promise.all(
      [...next].map(async ([h, share]) => {
        const prev = s.cur.get(h) ?? 0;
        s.pending.set(h, { share: Math.max(share, s.pending.get(h)?.share ?? 0), expiresAt });
        try {
          const grant = { share, window_ms: W, issued_at: now, expires_at: expiresAt, coordinator: holder, lease_revision: s.lease?.currentRevision ?? 0, rate: s.rate.rate };
          const r = await nc.request(subjects.budgetGrant(h), encodeJson(grant), { timeout: 200 });
          const ack = JSON.parse(new TextDecoder().decode(r.data)) as { ok: boolean; share?: number; free_at?: number | null };
          if (ack.ok && ack.share === share) {
            s.cur.set(h, share);
            s.expiry.set(h, expiresAt);
            s.pending.delete(h);
            if (share < prev) {
              // Its sends under the old share count until they leave its window: free_at says when
              // (unknown → assume a full window from now).
              const freeAt = typeof ack.free_at === 'number' ? ack.free_at : Date.now() + W;
              s.lastDecreaseAt = Math.max(s.lastDecreaseAt, freeAt - W);
            }
          }
        } catch {
          // No answer: the grant may or may not be in force; it stays reserved until it expires.
        }
      }),
    );
  };

  return spawn<BudgetCoordinatorState, BudgetCoordinatorMsg>(parent, {
    name: 'budget-coordinator',
    supervision: Supervision.restartWithBackoff({ minBackoffMs: 200, maxBackoffMs: 5_000 }),
    init: (ctx) => {
      const state: BudgetCoordinatorState = { lease: null, since: null, members: new Map(), cur: new Map(), pending: new Map(), expiry: new Map(), lastDecreaseAt: 0, ticks: 0, timers: [], sub: undefined, rate: new GlobalRate((global.count / W) * 1000, Date.now(), true) };
      state.sub = nc.subscribe(subjects.budgetDemand, {
        callback: (err, m) => {
          if (err) return;
          try {
            const d = decodeDemand(m.data);
            state.members.set(d.holder, { instance: d.instance, demand: d.demand, accepted: d.accepted ?? 0, rate: d.rate, granted: d.granted ?? true, reportedShare: d.share, at: Date.now() });
          } catch {
            metrics.counter('nats_bad_payloads_total', 'NATS payloads rejected at the edge', ['subject', 'code']).inc({ subject: subjects.budgetDemand, code: 'BAD_PAYLOAD' });
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
    receive: async (state, msg) => {
      switch (msg.type) {
        case 'tick': {
          state.ticks++;
          const now = Date.now();
          try {
            if (!state.lease) {
              if (state.ticks % 4 !== 1) return state;
              const lease = new KvLease(kv, COORDINATOR_KEY, { holder, instance, since: now }, Math.floor(leaseTtlMs / 2));
              if (await lease.acquire()) {
                state.lease = lease;
                state.since = now;
                state.cur = new Map([...state.members].map(([h, m]) => [h, m.reportedShare]));
                state.expiry = new Map([...state.members].map(([h]) => [h, now + leaseTtlMs]));
                state.pending.clear();
                // Someone may still be sending under an old grant (reports lag) or the fallback: let
                // those grants expire and a window pass before raising anyone.
                // A process on the floor share (no grant yet) uses exactly what it reported: nothing to wait out.
                state.lastDecreaseAt = [...state.members.values()].some((m) => m.granted && m.reportedShare > 0) ? now + grantLifeMs : 0;
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
            await lead(state);
          } catch (e) {
            log.warn({ err: describeError(e) }, 'budget coordinator tick failed');
          }
          return state;
        }
        case 'flood': {
          if (!state.lease) return state;
          const before = state.rate.rate;
          // What the whole cluster was seen to get through in the last window: the new rate stays under it.
          let accepted = 0;
          for (const m of state.members.values()) accepted += m.accepted;
          const rate = state.rate.throttled(Date.now(), accepted > 0 ? (accepted / W) * 1000 : undefined);
          if (rate < before) log.warn({ from: msg.from, rate: Number(rate.toFixed(2)), ceiling: (global.count / W) * 1000 }, 'bot-wide flood: lowering the bot rate for the whole cluster');
          mRate.set(rate);
          return state;
        }
        case 'status': {
          const members = [...state.members].map(([h, m]) => ({ holder: h, instance: m.instance, demand: m.demand, share: state.lease ? (state.cur.get(h) ?? 0) : m.reportedShare, reportedAt: m.at }));
          reply(msg.replyTo, { leader: state.lease !== null, since: state.since, capacity: capacityOf(state), ceiling, rate: state.rate.rate, windowMs: W, processes: members });
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
