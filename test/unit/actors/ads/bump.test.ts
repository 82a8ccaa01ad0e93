import { strict as assert } from 'node:assert';
import { spawnBump, type BumpMsg, type BumpResult } from '../../../../actors/ads/bump';
import type { BumpTrigger } from '../../../../src/db/models/bump-run';
import { Metrics } from '../../../../src/metrics';
import { query, startActorSystem, stopActorSystem, type ActorRef, type ActorSystem } from '../../../../src/runtime/actor';
import { captureLogger, waitFor } from '../../../helpers/services';
import { deferred, type Deferred } from '../../../helpers/deferred';

/** The bump actor with a fake repository and singleton whose answers the test controls. */
describe('bump actor (fake repository and singleton)', () => {
  let system: ActorSystem;
  let leader: Array<Deferred<boolean>>;
  let due: Array<Deferred<number>>;
  let runs: Array<{ trigger: BumpTrigger; d: Deferred<{ runId: number; bumped: number }> }>;
  let published: number[];
  let bump: ActorRef<BumpMsg>;

  beforeEach(() => {
    const { log } = captureLogger();
    system = startActorSystem('bump-test', log);
    leader = [];
    due = [];
    runs = [];
    published = [];
    const push = <T>(list: Array<Deferred<T>>): Promise<T> => {
      const d = deferred<T>();
      list.push(d);
      return d.promise;
    };
    bump = spawnBump(
      system,
      {
        repo: {
          msUntilBumpDue: () => push(due),
          runBump: (o) => {
            const d = deferred<{ runId: number; bumped: number }>();
            runs.push({ trigger: o.trigger, d });
            return d.promise;
          },
        },
        log,
        metrics: new Metrics(),
        singleton: { isLeader: () => push(leader), release: () => Promise.resolve() },
        instanceId: 'test',
        publishBumped: (e) => void published.push(e.run_id),
      },
      // Check every 20 ms so the second tick comes quickly; the interval is an hour.
      { intervalMs: 3_600_000, checkMs: 20, chunk: 100 },
    );
  });
  afterEach(() => stopActorSystem(system));

  it('the leader runs when due, publishes the run, and checks again later', async () => {
    await waitFor(() => leader.length === 1, 2000, 2, 'leadership check');
    leader[0]!.resolve(true);
    await waitFor(() => due.length === 1, 2000, 2, 'due check');
    due[0]!.resolve(0);
    await waitFor(() => runs.length === 1, 2000, 2, 'a timer run');
    assert.equal(runs[0]!.trigger, 'timer');
    runs[0]!.d.resolve({ runId: 7, bumped: 3 });
    await waitFor(() => leader.length === 2, 2000, 2, 'the next check');
    assert.deepEqual(published, [7]);
  });

  it('a follower never runs on the timer', async () => {
    await waitFor(() => leader.length === 1, 2000, 2, 'first check');
    leader[0]!.resolve(false);
    await waitFor(() => leader.length === 2, 2000, 2, 'second check');
    leader[1]!.resolve(false);
    await waitFor(() => leader.length === 3, 2000, 2, 'third check');
    assert.equal(due.length, 0);
    assert.equal(runs.length, 0);
  });

  it('run-now is answered while a timer check hangs (nothing waits in the mailbox)', async () => {
    await waitFor(() => leader.length === 1, 2000, 2, 'a leadership check that will hang');
    const answer = query<BumpMsg, BumpResult>(bump, (replyTo) => ({ type: 'run-now', replyTo }), 2000);
    await waitFor(() => runs.length === 1, 2000, 2, 'the manual run');
    assert.equal(runs[0]!.trigger, 'manual');
    runs[0]!.d.resolve({ runId: 9, bumped: 1 });
    assert.deepEqual(await answer, { ok: true, runId: 9, bumped: 1 });
  });

  it('a failed run answers with a code and the timer keeps going', async () => {
    const answer = query<BumpMsg, BumpResult>(bump, (replyTo) => ({ type: 'run-now', replyTo }), 2000);
    await waitFor(() => runs.length === 1, 2000, 2, 'the manual run');
    runs[0]!.d.reject(new Error('deadlock'));
    const r = await answer;
    assert.equal(r.ok ? 'ok' : r.code, 'UNAVAILABLE');
    assert.doesNotMatch(r.ok ? '' : r.message, /deadlock/, 'no database text reaches the caller');
    await waitFor(() => leader.length === 1, 2000, 2, 'the timer check');
    leader[0]!.reject(new Error('lease store down'));
    await waitFor(() => leader.length === 2, 2000, 2, 'a check after the failed one');
  });
});
