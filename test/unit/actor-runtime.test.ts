import assert from 'node:assert/strict';
import { AppError } from '../../src/errors';
import {
  Supervision,
  dispatch,
  isStopped,
  query,
  reply,
  spawn,
  startActorSystem,
  stop,
  stopActorSystem,
  type ActorObserver,
  type ActorSystem,
  type Parent,
  type ReplyTo,
  type SupervisionPolicy,
} from '../../src/runtime/actor';
import { captureLogger, uniq, waitFor } from '../helpers/services';

type CounterMsg = { type: 'add'; n: number } | { type: 'get'; replyTo: ReplyTo<number> } | { type: 'crash' } | { type: 'record'; v: number };

interface Probe {
  inits: number;
  processed: Array<{ v: number; at: number; sinceInit: number }>;
}

const get = (replyTo: ReplyTo<number>): CounterMsg => ({ type: 'get', replyTo });

/** A counter whose init and handled messages are visible from outside. */
function spawnCounter(parent: Parent, name: string, supervision: SupervisionPolicy, probe: Probe) {
  return spawn<{ total: number; sinceInit: number }, CounterMsg>(parent, {
    name,
    supervision,
    init: () => {
      probe.inits++;
      return { total: 0, sinceInit: 0 };
    },
    receive: (state, msg) => {
      switch (msg.type) {
        case 'add':
          return { total: state.total + msg.n, sinceInit: state.sinceInit + 1 };
        case 'get':
          reply(msg.replyTo, state.total);
          return state;
        case 'crash':
          throw new Error('boom');
        case 'record':
          probe.processed.push({ v: msg.v, at: Date.now(), sinceInit: state.sinceInit + 1 });
          return { ...state, sinceInit: state.sinceInit + 1 };
        default: {
          const never: never = msg;
          return never;
        }
      }
    },
  });
}

describe('runtime/actor', () => {
  let system: ActorSystem;
  let logs: ReturnType<typeof captureLogger>;
  const events: Array<{ kind: string; path: string; detail: unknown }> = [];
  const observer: ActorObserver = {
    crashed: (path, error) => events.push({ kind: 'crashed', path, detail: error }),
    restarting: (path, attempt, delayMs) => events.push({ kind: 'restarting', path, detail: { attempt, delayMs } }),
    deadLetter: (path, type) => events.push({ kind: 'deadLetter', path, detail: type }),
  };
  const unhandled: unknown[] = [];
  const onUnhandled = (reason: unknown): void => void unhandled.push(reason);

  before(() => process.on('unhandledRejection', onUnhandled));
  after(() => process.off('unhandledRejection', onUnhandled));

  beforeEach(() => {
    events.length = 0;
    logs = captureLogger('debug');
    system = startActorSystem(uniq('test'), logs.log, observer);
  });

  afterEach(() => {
    stopActorSystem(system);
    stopActorSystem(system); // idempotent
  });

  it('typed dispatch and query/reply', async () => {
    const probe: Probe = { inits: 0, processed: [] };
    const ref = spawnCounter(system, 'counter', Supervision.stop(), probe);
    assert.equal(dispatch(ref, { type: 'add', n: 2 }), true);
    dispatch(ref, { type: 'add', n: 40 });
    const total = await query(ref, get, 1_000);
    assert.equal(total, 42);
    assert.equal(probe.inits, 1);
    assert.match(ref.path, /counter$/);
  });

  it('restartWithBackoff: re-runs init after the backoff and processes messages queued meanwhile', async () => {
    const probe: Probe = { inits: 0, processed: [] };
    const ref = spawnCounter(system, 'restarts', Supervision.restartWithBackoff({ minBackoffMs: 150, maxBackoffMs: 1_000 }), probe);
    dispatch(ref, { type: 'record', v: 0 });
    await waitFor(() => probe.processed.length === 1, 2_000, 5, 'first message');
    const crashedAt = Date.now();
    dispatch(ref, { type: 'crash' });
    dispatch(ref, { type: 'record', v: 1 });
    dispatch(ref, { type: 'record', v: 2 });
    await waitFor(() => probe.processed.length === 3, 5_000, 5, 'queued messages after the restart');
    assert.deepEqual(
      probe.processed.map((p) => p.v),
      [0, 1, 2],
    );
    assert.equal(probe.inits, 2, 'init ran again');
    assert.equal(probe.processed[1]!.sinceInit, 1, 'state was rebuilt by init');
    assert.ok(probe.processed[1]!.at - crashedAt >= 140, `restarted after ${probe.processed[1]!.at - crashedAt} ms, before the backoff`);
    const restart = events.find((e) => e.kind === 'restarting');
    // The first backoff is jittered between minBackoffMs and twice it.
    const first = restart?.detail as { attempt: number; delayMs: number };
    assert.equal(first.attempt, 1);
    assert.ok(first.delayMs >= 150 && first.delayMs <= 300, `first delay ${first.delayMs} ms`);
    assert.ok(probe.processed[1]!.at - crashedAt >= first.delayMs - 10, 'waited the announced delay');
    assert.equal(events.filter((e) => e.kind === 'crashed').length, 1);
    assert.equal(isStopped(ref), false);
    // Still alive and answering.
    assert.equal(await query(ref, get, 1_000), 0);
  });

  it('restartWithBackoff: the backoff doubles with repeated crashes, jittered, capped at maxBackoffMs', async () => {
    const probe: Probe = { inits: 0, processed: [] };
    const ref = spawnCounter(system, 'doubles', Supervision.restartWithBackoff({ minBackoffMs: 20, maxBackoffMs: 100 }), probe);
    for (let i = 0; i < 4; i++) dispatch(ref, { type: 'crash' });
    dispatch(ref, { type: 'record', v: 9 });
    await waitFor(() => probe.processed.length === 1, 5_000, 5, 'message after four restarts');
    const delays = events.filter((e) => e.kind === 'restarting').map((e) => e.detail as { attempt: number; delayMs: number });
    assert.deepEqual(
      delays.map((d) => d.attempt),
      [1, 2, 3, 4],
    );
    // Attempt n waits between min·2^(n-1) and min·2^n ("equal jitter"), never above the cap.
    const bounds = [
      [20, 40],
      [40, 80],
      [50, 100],
      [50, 100],
    ];
    delays.forEach((d, i) => assert.ok(d.delayMs >= bounds[i]![0]! && d.delayMs <= bounds[i]![1]!, `attempt ${d.attempt}: ${d.delayMs} ms`));
    assert.equal(probe.inits, 5);
  });

  it('resume keeps the state and drops only the failing message', async () => {
    const probe: Probe = { inits: 0, processed: [] };
    const ref = spawnCounter(system, 'resumes', Supervision.resume(), probe);
    dispatch(ref, { type: 'add', n: 5 });
    dispatch(ref, { type: 'crash' });
    dispatch(ref, { type: 'add', n: 3 });
    assert.equal(await query(ref, get, 1_000), 8);
    assert.equal(probe.inits, 1);
    assert.equal(events.filter((e) => e.kind === 'crashed').length, 1);
  });

  it('dispatch to a stopped actor returns false and counts a dead letter', async () => {
    const probe: Probe = { inits: 0, processed: [] };
    const ref = spawnCounter(system, 'stops', Supervision.stop(), probe);
    dispatch(ref, { type: 'add', n: 1 });
    stop(ref);
    await waitFor(() => isStopped(ref), 2_000, 5, 'actor stopped');
    assert.equal(system.deadLetters, 0);
    assert.equal(dispatch(ref, { type: 'add', n: 1 }), false);
    assert.equal(system.deadLetters, 1);
    assert.deepEqual(
      events.filter((e) => e.kind === 'deadLetter').map((e) => e.detail),
      ['add'],
    );
    await assert.rejects(query(ref, get, 100), (e: unknown) => e instanceof AppError && e.code === 'ACTOR_STOPPED');
  });

  it('the stop policy stops a crashing actor; later dispatches are dead letters', async () => {
    const probe: Probe = { inits: 0, processed: [] };
    const ref = spawnCounter(system, 'crash-stop', Supervision.stop(), probe);
    dispatch(ref, { type: 'crash' });
    await waitFor(() => isStopped(ref), 2_000, 5, 'actor stopped by its policy');
    assert.equal(dispatch(ref, { type: 'record', v: 1 }), false);
    assert.equal(system.deadLetters, 1);
    assert.equal(probe.processed.length, 0);
  });

  it('dispatch after the system stopped returns false', () => {
    const probe: Probe = { inits: 0, processed: [] };
    const ref = spawnCounter(system, 'sys-stopped', Supervision.stop(), probe);
    stopActorSystem(system);
    assert.equal(dispatch(ref, { type: 'add', n: 1 }), false);
    assert.equal(system.deadLetters, 1);
  });

  it('a query to a silent actor rejects with QUERY_TIMEOUT', async () => {
    const silent = spawn<null, { type: 'ask'; replyTo: ReplyTo<string> }>(system, {
      name: 'silent',
      init: () => null,
      receive: (s) => s, // never replies
    });
    const started = Date.now();
    await assert.rejects(
      query(silent, (replyTo: ReplyTo<string>) => ({ type: 'ask' as const, replyTo }), 100),
      (e: unknown) => e instanceof AppError && e.code === 'QUERY_TIMEOUT' && /within 100 ms/.test(e.message),
    );
    assert.ok(Date.now() - started >= 95);
  });

  it('no supervision policy produces an unhandled rejection, even with throwing observers', async () => {
    unhandled.length = 0;
    const throwing: ActorObserver = {
      crashed: () => {
        throw new Error('observer crashed');
      },
      restarting: () => {
        throw new Error('observer restarting');
      },
    };
    const sys = startActorSystem(uniq('sup'), captureLogger('fatal').log, throwing);
    try {
      const policies: Array<[string, SupervisionPolicy]> = [
        ['restart', Supervision.restartWithBackoff({ minBackoffMs: 5, maxBackoffMs: 10 })],
        ['restart-gives-up', Supervision.restartWithBackoff({ minBackoffMs: 1, maxBackoffMs: 1, maxRestarts: 1, windowMs: 60_000 })],
        ['resume', Supervision.resume()],
        ['stop', Supervision.stop()],
        ['escalate', Supervision.escalate()],
      ];
      const probes = new Map<string, Probe>();
      const refs = policies.map(([name, policy]) => {
        const probe: Probe = { inits: 0, processed: [] };
        probes.set(name, probe);
        const ref = spawnCounter(sys, name, policy, probe);
        dispatch(ref, { type: 'crash' });
        dispatch(ref, { type: 'crash' });
        dispatch(ref, { type: 'record', v: 1 });
        return [name, ref] as const;
      });
      const byName = new Map(refs);
      // Wait for each policy's visible outcome.
      await waitFor(() => probes.get('restart')!.processed.length === 1, 5_000, 5, 'restart to process the last message');
      await waitFor(() => probes.get('resume')!.processed.length === 1, 5_000, 5, 'resume to process the last message');
      await waitFor(() => isStopped(byName.get('stop')!), 5_000, 5, 'stop policy to stop the actor');
      assert.equal(probes.get('restart')!.inits, 3);
      assert.equal(probes.get('resume')!.inits, 1);
      assert.equal(probes.get('stop')!.processed.length, 0);
      // Let pending rejections surface: they are reported after the microtask queue drains.
      for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
      assert.deepEqual(unhandled, [], `unhandled rejections: ${unhandled.map(String).join('; ')}`);
    } finally {
      stopActorSystem(sys);
    }
    for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
    assert.deepEqual(unhandled, []);
  });

  it('an actor can spawn children in init and they share the system', async () => {
    const probe: Probe = { inits: 0, processed: [] };
    let childRef: ReturnType<typeof spawnCounter> | undefined;
    const parent = spawn<null, { type: 'noop' }>(system, {
      name: 'parent',
      init: (ctx) => {
        childRef = spawnCounter(ctx.self, 'child', Supervision.stop(), probe);
        return null;
      },
      receive: (s) => s,
    });
    dispatch(parent, { type: 'noop' });
    await waitFor(() => childRef !== undefined, 2_000, 5, 'child spawned');
    dispatch(childRef!, { type: 'add', n: 7 });
    assert.equal(await query(childRef!, get, 1_000), 7);
    assert.match(childRef!.path, /parent\/child$/);
  });
});
