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
import type { Knex } from '../../src/db/knex';
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
  | { type: 'run-now'; replyTo: ReplyTo<BumpResult> };

export interface BumpState {
  timer: NodeJS.Timeout | undefined;
  leader: boolean;
}

export interface BumpDeps {
  db: Knex;
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
      const r = await runBump(deps.db, { trigger, instanceId: deps.instanceId, intervalMs: options.intervalMs, chunk: options.chunk });
      runs.inc({ trigger, outcome: 'ok' });
      bumped.inc(r.bumped);
      log.info({ trigger, runId: r.runId, bumped: r.bumped }, 'bump run finished');
      deps.publishBumped({ run_id: r.runId, trigger, bumped: r.bumped, instance: deps.instanceId, at: new Date().toISOString() });
      return { ok: true, ...r };
    } catch (e) {
      runs.inc({ trigger, outcome: 'failed' });
      log.error({ trigger, err: describeError(e) }, 'bump run failed');
      return { ok: false, code: isAppError(e) ? e.code : 'UNAVAILABLE', message: `bump run failed: ${describeError(e)}` };
    }
  }

  const ref = spawn<BumpState, BumpMsg>(parent, {
    name: options.name ?? 'bump',
    supervision: Supervision.restartWithBackoff({ minBackoffMs: 500, maxBackoffMs: 30_000 }),
    init: () => ({ timer: undefined, leader: false }),
    async receive(state, msg, ctx) {
      switch (msg.type) {
        case 'tick': {
          if (state.timer) clearTimeout(state.timer);
          let next = options.checkMs;
          try {
            const leader = await deps.singleton.isLeader();
            if (leader !== state.leader) ctx.log.info({ leader }, leader ? 'bump singleton acquired' : 'bump singleton lost');
            state.leader = leader;
            leaderGauge.set(leader ? 1 : 0);
            if (leader) {
              let untilDue = await msUntilDue(deps.db, options.intervalMs);
              if (untilDue <= 0) {
                await run('timer', ctx.log);
                untilDue = options.intervalMs;
              } else {
                ctx.log.debug({ untilDueMs: Math.round(untilDue) }, 'bump not due');
              }
              next = Math.min(options.checkMs, Math.max(10, untilDue));
            }
          } catch (e) {
            ctx.log.error({ err: describeError(e) }, 'bump tick failed; retrying at the next check');
          }
          const self = ctx.self;
          state.timer = setTimeout(() => dispatch(self, { type: 'tick' }), next);
          return state;
        }
        case 'run-now':
          reply(msg.replyTo, await run('manual', ctx.log));
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

/** Milliseconds until the next timer run is due (≤ 0: due now), by the database clock. */
export async function msUntilDue(db: Knex, intervalMs: number): Promise<number> {
  const [rows] = (await db.raw(
    "SELECT TIMESTAMPDIFF(MICROSECOND, NOW(3), MAX(started_at) + INTERVAL ? MICROSECOND) AS us FROM bump_runs WHERE `trigger` = 'timer' AND finished_at IS NOT NULL",
    [intervalMs * 1000],
  )) as unknown as [Array<{ us: number | string | null }>];
  const us = rows[0]?.us;
  return us === null || us === undefined ? 0 : Number(us) / 1000;
}

/** One bump run, recorded in `bump_runs`. Exported for tests and the CLI. */
export async function runBump(db: Knex, o: { trigger: BumpTrigger; instanceId: string; intervalMs: number; chunk: number }): Promise<{ runId: number; bumped: number }> {
  const [ins] = (await db.raw('INSERT INTO bump_runs (`trigger`, instance_id, started_at) VALUES (?, ?, NOW(3))', [o.trigger, o.instanceId])) as unknown as [{ insertId: number }];
  const runId = Number(ins.insertId);
  const [rows] = (await db.raw("SELECT DATE_FORMAT(started_at, '%Y-%m-%d %H:%i:%s.%f') AS s FROM bump_runs WHERE id = ?", [runId])) as unknown as [Array<{ s: string }>];
  const start = rows[0]!.s;
  let total = 0;
  for (;;) {
    const [res] = (await db.raw(
      `UPDATE advertisements SET bumped_at = ?
       WHERE is_active = 1 AND auto_bump = 1
         AND (bumped_at <= ? - INTERVAL ? MICROSECOND OR (bumped_at IS NULL AND created_at <= ? - INTERVAL ? MICROSECOND))
       LIMIT ?`,
      [start, start, o.intervalMs * 1000, start, o.intervalMs * 1000, o.chunk],
    )) as unknown as [{ affectedRows: number }];
    total += res.affectedRows;
    if (res.affectedRows < o.chunk) break;
  }
  await db.raw('UPDATE bump_runs SET finished_at = NOW(3), bumped = ? WHERE id = ?', [total, runId]);
  return { runId, bumped: total };
}
