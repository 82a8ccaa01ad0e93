import type { KV, NatsConnection, Subscription } from 'nats';
import { spawn, dispatch, reply, assertNever, Supervision, type ActorRef, type Parent, type ReplyTo } from '../../src/runtime/actor';
import { describeError } from '../../src/errors';
import type { Logger } from '../../src/log';
import type { Metrics } from '../../src/metrics';
import type { WindowLimit } from '../../src/limits/window';
import { KvLease } from '../../src/cluster/lease';
import { BudgetBook, FLOOD_SETTLE_MS, TICK_MS, coordinatorTiming, type BudgetStatus, type Split } from '../../src/cluster/budget-plan';
import { sendGrants, type GrantAnswers } from '../../src/cluster/grants';
import { COORDINATOR_KEY } from '../../src/cluster/budget-client';
import type { SubjectSet } from '../../src/nats/subjects';
import type { NatsIntake } from '../../src/nats/intake';
import { decoder } from '../../src/nats/codec';
import { BudgetDemand } from '../../src/nats/payloads';

/**
 * Budget coordinator: runs in every process, acts only while it holds the `budget.coordinator`
 * lease. Four times a second it splits the bot's adaptive global rate (AIMD, src/limits/global-rate.ts)
 * between the processes that report demand and sends each its grant (short-lived, acknowledged);
 * the arithmetic and why the sum never exceeds the limit is in src/cluster/budget-plan.ts. Like a
 * shard lease, a lease whose renewals fail (a JetStream election) stops granting at the fence time
 * but stays ours; the first successful renewal resumes (docs/deploy.md). I/O runs outside the mailbox.
 */
export type BudgetCoordinatorMsg =
  | { type: 'tick' }
  /** A member's demand report (decoded and validated at the NATS edge). */
  | { type: 'demand'; report: BudgetDemand }
  /** A member reported a bot-wide flood (already checked by the budget client); `at`: when its 429 came. */
  | { type: 'flood'; until: number; from: string; at?: number }
  /** Every member has reported what it got accepted in the window ending at the flood (or we waited long enough). */
  | { type: 'floodSettle'; at: number }
  /** Split now, between ticks: a process joined or found demand, or an increase became possible. */
  | { type: 'lead' }
  /** Internal, results of I/O: an election attempt (`lease` set when won); a renewal (false: someone else holds the key; undefined: no answer); a round of grants. */
  | { type: 'acquired'; lease: KvLease | null; at: number; error?: unknown }
  | { type: 'renewed'; lease: KvLease; ok: boolean | undefined; error?: unknown }
  | { type: 'granted'; split: Split; acks: GrantAnswers }
  | { type: 'status'; replyTo: ReplyTo<BudgetStatus> }
  | { type: 'stepDown'; replyTo: ReplyTo<void> };

export type { BudgetStatus };

export interface BudgetCoordinatorState {
  book: BudgetBook;
  lease: KvLease | null;
  since: number | null;
  ticks: number;
  timers: NodeJS.Timeout[];
  sub: Subscription | undefined;
  /** An acquire or renew is in flight (at most one). */
  leaseIo: boolean;
  /** A round of grants is in flight (at most one); `leadAgain`: a split was asked for meanwhile. */
  round: boolean;
  leadAgain: boolean;
  /** A 'lead' message is on its way (at most one). */
  leadSoon: boolean;
  /** stepDown was asked: nothing more is acquired or granted. */
  stopped: boolean;
  /** The lease is ours but its last renewal is older than the fence time: no grants until one succeeds. */
  fenced: boolean;
  /** Since when renewals go unanswered (undefined: the last one was answered). */
  renewFailingSince?: number;
}

export interface BudgetCoordinatorDeps {
  subjects: SubjectSet;
  nc: NatsConnection;
  /** The role's NATS edge: demand reports are decoded, validated and counted there. */
  intake: NatsIntake;
  kv: KV;
  log: Logger;
  metrics: Metrics;
  holder: string;
  instance: string;
  global: WindowLimit;
  leaseTtlMs: number;
}

export function spawnBudgetCoordinator(parent: Parent, deps: BudgetCoordinatorDeps): ActorRef<BudgetCoordinatorMsg> {
  const { subjects, nc, intake, kv, log, metrics, holder, instance, global, leaseTtlMs } = deps;
  const W = global.windowMs;
  const ceiling = (global.count / W) * 1000;
  const { grantLifeMs, fenceAfterMs, renewEveryMs } = coordinatorTiming(leaseTtlMs, W);
  const renewEveryTicks = Math.max(1, Math.floor(renewEveryMs / TICK_MS));
  const decodeDemand = decoder(BudgetDemand, { maxBytes: 2048 });
  const mRate = metrics.gauge('budget_global_rate', 'The bot-wide rate the coordinator splits (per second; adaptive under TELEGRAM_GLOBAL_RATE)');
  const mLeader = metrics.gauge('budget_coordinator', '1 while this process is the budget coordinator');

  /** `msg` to self in `ms`, unless the actor stops first. */
  const later = (s: BudgetCoordinatorState, self: ActorRef<BudgetCoordinatorMsg>, ms: number, msg: BudgetCoordinatorMsg): void => {
    const t = setTimeout(() => {
      s.timers = s.timers.filter((x) => x !== t);
      dispatch(self, msg);
    }, ms);
    s.timers.push(t);
  };

  /** A 'lead' in `ms` (0: now), unless one is already on its way. */
  const leadIn = (s: BudgetCoordinatorState, self: ActorRef<BudgetCoordinatorMsg>, ms: number): void => {
    if (s.leadSoon || !s.lease) return;
    s.leadSoon = true;
    if (ms <= 0) dispatch(self, { type: 'lead' });
    else later(s, self, ms, { type: 'lead' });
  };

  /** Splits and sends the grants; the answers come back as one 'granted' message. */
  const startRound = (s: BudgetCoordinatorState, self: ActorRef<BudgetCoordinatorMsg>, lease: KvLease): void => {
    if (s.round) {
      s.leadAgain = true;
      return;
    }
    s.round = true;
    const split = s.book.split(Date.now());
    mRate.set(s.book.rate.rate);
    const grant = { window_ms: W, coordinator: holder, lease_revision: lease.currentRevision, rate: s.book.rate.rate };
    void sendGrants(nc, subjects, split, grant).then((acks) => dispatch(self, { type: 'granted', split, acks }));
  };

  /** Runs a lease operation outside the mailbox (one at a time); its result comes back as the message `done` makes. */
  const leaseOp = <T>(
    s: BudgetCoordinatorState,
    self: ActorRef<BudgetCoordinatorMsg>,
    op: Promise<T>,
    done: (v?: T, error?: unknown) => BudgetCoordinatorMsg,
  ) => {
    s.leaseIo = true;
    op.then(
      (v) => dispatch(self, done(v)),
      (error: unknown) => dispatch(self, done(undefined, error)),
    );
  };

  /** Grants while the lease is valid; past the fence time nothing, but the lease stays ours (the next renewal resumes). */
  const act = (s: BudgetCoordinatorState, self: ActorRef<BudgetCoordinatorMsg>, lease: KvLease): void => {
    if (lease.valid()) {
      if (s.fenced) log.info({ age: lease.age() }, 'budget coordinator lease renewed: granting again');
      if (s.fenced) s.book.paused(Date.now(), true);
      s.fenced = false;
      startRound(s, self, lease);
    } else if (!s.fenced) {
      s.fenced = true;
      s.book.paused(Date.now(), false);
      log.warn({ fenceAfterMs }, 'budget coordinator lease not renewed in time: granting nothing until a renewal succeeds (the lease stays ours)');
    }
  };
  const stepDown = (s: BudgetCoordinatorState, why: string): void => {
    log.warn(why);
    s.lease = null;
    s.fenced = false;
    mLeader.set(0);
  };

  /** Lowers the bot rate after a flood (src/cluster/budget-plan.ts) and splits again at once. */
  const throttle = (s: BudgetCoordinatorState, self: ActorRef<BudgetCoordinatorMsg>, from: string, counted: boolean): BudgetCoordinatorState => {
    const t = s.book.throttle(Date.now(), counted);
    if (t.rate < t.before)
      log.warn(
        { from, at: t.at, rate: Number(t.rate.toFixed(2)), accepted: t.atFlood, recent: t.recent, counted, trusted: t.trusted, missing: t.missing, ceiling },
        'bot-wide flood: lowering the bot rate for the whole cluster',
      );
    mRate.set(t.rate);
    leadIn(s, self, 0);
    return s;
  };

  return spawn<BudgetCoordinatorState, BudgetCoordinatorMsg>(parent, {
    name: 'budget-coordinator',
    supervision: Supervision.restartWithBackoff({ minBackoffMs: 200, maxBackoffMs: 5_000 }),
    init: (ctx) => {
      const state: BudgetCoordinatorState = {
        book: new BudgetBook({ global, leaseTtlMs, grantLifeMs }, Date.now()),
        lease: null,
        since: null,
        ticks: 0,
        timers: [],
        sub: undefined,
        leaseIo: false,
        round: false,
        leadAgain: false,
        leadSoon: false,
        stopped: false,
        fenced: false,
      };
      state.sub = intake.listen(subjects.budgetDemand, decodeDemand, (report) => void dispatch(ctx.self, { type: 'demand', report }));
      state.timers.push(setInterval(() => dispatch(ctx.self, { type: 'tick' }), TICK_MS));
      return state;
    },
    afterStop: (state) => {
      state.timers.forEach((t) => clearInterval(t));
      state.sub?.unsubscribe();
    },
    receive: (state, msg, ctx) => {
      const self = ctx.self;
      switch (msg.type) {
        case 'tick': {
          state.ticks++;
          if (state.stopped) return state;
          const lease = state.lease;
          // Every other tick: when a coordinator dies, grants lapse and nobody sends until the next one is elected.
          if (!lease) {
            if (state.leaseIo || state.ticks % 2 !== 1) return state;
            const at = Date.now();
            const candidate = new KvLease(kv, COORDINATOR_KEY, { holder, instance, since: at }, fenceAfterMs);
            leaseOp(state, self, candidate.acquire(), (won, error) => ({ type: 'acquired', lease: won ? candidate : null, at, error }));
            return state;
          }
          // Failing renewals (an election) stop nothing until the fence time; each tick retries, so granting resumes right after.
          if (!state.leaseIo && (state.ticks % renewEveryTicks === 0 || state.renewFailingSince !== undefined))
            leaseOp(state, self, lease.renew(), (ok, error) => ({ type: 'renewed', lease, ok, error }));
          act(state, self, lease);
          return state;
        }
        case 'acquired': {
          state.leaseIo = false;
          if (msg.error !== undefined) log.warn({ err: describeError(msg.error) }, 'budget coordinator tick failed');
          if (!msg.lease) return state;
          // Stepped down while the election ran: give the key back at once.
          if (state.stopped) msg.lease.release().catch(() => undefined);
          else {
            state.lease = msg.lease;
            state.since = msg.at;
            // A previous coordinator stopped granting before it released the lease (or its grants
            // expired before its lease did); see BudgetBook.elected for what we assume of the rest.
            state.book.elected(msg.at);
            mLeader.set(1);
            log.info({ grantLifeMs, rate: state.book.rate.rate }, 'elected budget coordinator');
          }
          return state;
        }
        case 'renewed': {
          state.leaseIo = false;
          if (state.lease !== msg.lease) return state;
          if (msg.ok === false) stepDown(state, 'budget coordinator lease taken by another process: stepping down');
          else if (msg.error !== undefined) {
            state.renewFailingSince ??= Date.now();
            log.debug({ err: describeError(msg.error), age: msg.lease.age() }, 'budget coordinator lease renewal failed');
          } else {
            if (state.renewFailingSince !== undefined)
              log.info({ failingForMs: Date.now() - state.renewFailingSince }, 'budget coordinator lease renewals succeed again');
            state.renewFailingSince = undefined;
            if (state.fenced) act(state, self, msg.lease);
          }
          return state;
        }
        case 'granted': {
          state.round = false;
          msg.split.grants.forEach((g, i) => state.book.acknowledged(msg.split, g, msg.acks[i]?.ack, msg.acks[i]?.at ?? Date.now()));
          const next = state.book.nextSplitIn(msg.split, Date.now());
          if (next !== undefined) leadIn(state, self, next);
          if (state.leadAgain) dispatch(self, { type: 'lead' });
          state.leadAgain = false;
          return state;
        }
        case 'demand': {
          const { split, settled } = state.book.report(msg.report, Date.now());
          if (split && state.lease) leadIn(state, self, 0);
          if (settled && msg.report.accepted_at !== undefined) dispatch(self, { type: 'floodSettle', at: msg.report.accepted_at });
          return state;
        }
        case 'flood': {
          if (!state.lease) return state;
          if (msg.at === undefined) return throttle(state, self, msg.from, false);
          const started = state.book.startFlood(msg.at, msg.from);
          if (started === 'counted') return throttle(state, self, msg.from, true);
          if (started === 'wait') later(state, self, FLOOD_SETTLE_MS, { type: 'floodSettle', at: msg.at });
          return state;
        }
        case 'lead': {
          state.leadSoon = false;
          if (state.lease && state.lease.valid()) startRound(state, self, state.lease);
          return state;
        }
        case 'floodSettle': {
          // Only for the flood it was started for (a later flood has its own wait).
          const flood = state.book.flood;
          if (!flood || flood.at !== msg.at) return state;
          if (state.lease) return throttle(state, self, flood.from, state.book.floodCounted());
          state.book.flood = null;
          return state;
        }
        case 'status':
          reply(msg.replyTo, state.book.status(state.lease !== null, state.since));
          return state;
        case 'stepDown': {
          state.stopped = true;
          state.timers.forEach((t) => clearInterval(t));
          state.timers = [];
          const lease = state.lease;
          state.lease = null;
          mLeader.set(0);
          // The reply waits for the key's deletion: a successor may then be elected at once.
          void (lease ? lease.release().catch(() => undefined) : Promise.resolve()).then(() => reply(msg.replyTo, undefined));
          return state;
        }
        default:
          return assertNever(msg);
      }
    },
  });
}
