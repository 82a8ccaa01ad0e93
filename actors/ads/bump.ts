/**
 * Bump actor: re-lists ("bumps") every ad that is active, has auto-bump on and was last
 * listed — `COALESCE(bumped_at, created_at)` — at least BUMP_INTERVAL before the run
 * started, by setting `bumped_at` to the run's start. Runs:
 *  - on a timer, only while `singleton.isLeader()`, when the last *finished* timer run in
 *    `bump_runs` started at least BUMP_INTERVAL ago (database clock): a restart inside the
 *    interval does not run again, a process back from downtime runs at once, and a run
 *    that died half-way is completed by the next leader;
 *  - on demand (`run-now`: NATS `ads.bump.run`, POST /ads/bump), same criteria.
 * The per-ad criterion makes a run idempotent: InnoDB re-checks it on the latest row
 * version, so concurrent runs never bump an ad twice in one interval. Updates go in
 * autocommitted chunks of BUMP_CHUNK rows to keep row locks short.
 */
import type { AdsRepository } from '../../src/ads/repository';
import type { Logger } from '../../src/log';
import type { Metrics } from '../../src/metrics';
import type { Singleton } from '../../src/cluster/singleton';
import type { BumpedEvent } from '../../src/nats/ads-payloads';
import type { BumpTrigger } from '../../src/db/models/bump-run';
import { assertNever, dispatch, reply, spawn, Supervision, type ActorRef, type Parent, type ReplyTo } from '../../src/runtime/actor';
import { describeError, isAppError } from '../../src/errors';

export type BumpResult = { ok: true; runId: number; bumped: number } | { ok: false; code: string; message: string };

export type BumpMsg =
  /** Timer: renew leadership, run if due, schedule the next tick. */
  | { type: 'tick' }
  /** Run now regardless of leadership; answers with the count. */
  | { type: 'run-now'; replyTo: ReplyTo<BumpResult> }
  /** A tick's leadership and due check finished (outside the mailbox). */
  | { type: 'checked'; leader: boolean; untilDueMs: number; error?: string }
  /** A run finished; `timer` runs set the next tick. */
  | { type: 'ran'; trigger: BumpTrigger; result: BumpResult; replyTo?: ReplyTo<BumpResult> };

export interface BumpState {
  timer: NodeJS.Timeout | undefined;
  leader: boolean;
  /** A tick's check or timer run is in progress: the next tick is set when it ends. */
  busy: boolean;
  stopped: boolean;
}

export interface BumpDeps {
  repo: Pick<AdsRepository, 'msUntilBumpDue' | 'runBump'>;
  log: Logger;
  metrics: Metrics;
  singleton: Singleton;
  instanceId: string;
  /** Publishes the `ads.bumped` event; must not throw. */
  publishBumped: (e: BumpedEvent) => void;
}

export interface BumpOptions {
  intervalMs: number;
  /** Longest wait between two leadership checks (ms). */
  checkMs: number;
  chunk: number;
  name?: string;
}

export function spawnBump(parent: Parent, deps: BumpDeps, options: BumpOptions): ActorRef<BumpMsg> {
  const runs = deps.metrics.counter<'trigger' | 'outcome'>('ads_bump_runs_total', 'Bump runs', ['trigger', 'outcome']);
  const bumped = deps.metrics.counter('ads_bumped_total', 'Ads bumped');
  const leaderGauge = deps.metrics.gauge('ads_bump_leader', '1 while this process holds the bump singleton');

  async function run(trigger: BumpTrigger, log: Logger): Promise<BumpResult> {
    try {
      const r = await deps.repo.runBump({ trigger, instanceId: deps.instanceId, intervalMs: options.intervalMs, chunk: options.chunk });
      runs.inc({ trigger, outcome: 'ok' });
      bumped.inc(r.bumped);
      log.info({ trigger, runId: r.runId, bumped: r.bumped }, 'bump run finished');
      deps.publishBumped({ run_id: r.runId, trigger, bumped: r.bumped, instance: deps.instanceId, at: new Date().toISOString() });
      return { ok: true, ...r };
    } catch (e) {
      runs.inc({ trigger, outcome: 'failed' });
      log.error({ trigger, err: describeError(e) }, 'bump run failed');
      // The cause is in the log; callers (HTTP, NATS) get a code, never a database message.
      return { ok: false, code: isAppError(e) ? e.code : 'UNAVAILABLE', message: 'the bump run failed; retry later (the service log has the cause)' };
    }
  }

  const ref = spawn<BumpState, BumpMsg>(parent, {
    name: options.name ?? 'bump',
    supervision: Supervision.restartWithBackoff({ minBackoffMs: 500, maxBackoffMs: 30_000 }),
    init: () => ({ timer: undefined, leader: false, busy: false, stopped: false }),
    // Leadership checks, due checks and runs go outside the mailbox and report back.
    receive(state, msg, ctx) {
      const self = ctx.self;
      const schedule = (ms: number): void => {
        if (state.timer) clearTimeout(state.timer);
        state.timer = setTimeout(() => dispatch(self, { type: 'tick' }), ms);
      };
      switch (msg.type) {
        case 'tick': {
          if (state.busy) return state;
          state.busy = true;
          (async () => {
            const leader = await deps.singleton.isLeader();
            return { leader, untilDueMs: leader ? await deps.repo.msUntilBumpDue(options.intervalMs) : options.checkMs };
          })().then(
            (r) => dispatch(self, { type: 'checked', ...r }),
            (e: unknown) => dispatch(self, { type: 'checked', leader: state.leader, untilDueMs: options.checkMs, error: describeError(e) }),
          );
          return state;
        }
        case 'checked': {
          if (msg.error) ctx.log.error({ err: msg.error }, 'bump tick failed; retrying at the next check');
          else {
            if (msg.leader !== state.leader) ctx.log.info({ leader: msg.leader }, msg.leader ? 'bump singleton acquired' : 'bump singleton lost');
            state.leader = msg.leader;
            leaderGauge.set(msg.leader ? 1 : 0);
          }
          if (!msg.error && msg.leader && msg.untilDueMs <= 0) {
            void run('timer', ctx.log).then((result) => dispatch(self, { type: 'ran', trigger: 'timer', result }));
            return state;
          }
          if (!msg.error && msg.leader) ctx.log.debug({ untilDueMs: Math.round(msg.untilDueMs) }, 'bump not due');
          state.busy = false;
          schedule(msg.error || !msg.leader ? options.checkMs : Math.min(options.checkMs, Math.max(10, msg.untilDueMs)));
          return state;
        }
        case 'run-now':
          // Runs at once, beside a timer run if one is going: the per-ad criterion keeps them apart.
          void run('manual', ctx.log).then((result) => dispatch(self, { type: 'ran', trigger: 'manual', result, replyTo: msg.replyTo }));
          return state;
        case 'ran':
          if (msg.replyTo) reply(msg.replyTo, msg.result);
          if (msg.trigger === 'timer') {
            state.busy = false;
            // A failed run is retried at the next check; a finished one is due again after the interval.
            schedule(msg.result.ok ? Math.min(options.checkMs, options.intervalMs) : options.checkMs);
          }
          return state;
        default:
          return assertNever(msg);
      }
    },
    async afterStop(state) {
      if (state.timer) clearTimeout(state.timer);
      leaderGauge.set(0);
      await deps.singleton.release();
    },
  });
  dispatch(ref, { type: 'tick' });
  return ref;
}
