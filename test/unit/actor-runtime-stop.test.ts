import assert from 'node:assert/strict';
import {
  Supervision,
  dispatch,
  isStopped,
  spawn,
  startActorSystem,
  stop,
  stopActorSystem,
  type ActorRef,
  type ActorSystem,
  type Parent,
} from '../../src/runtime/actor';
import { captureLogger, waitFor } from '../helpers/services';

/**
 * Stopping reaches the whole subtree. nact 7.6.2 alone stops neither a system's actors nor
 * an actor's children (its stop looks concrete actors up as references and finds nothing):
 * their timers kept running and `afterStop` never ran.
 */
describe('actor runtime: stop reaches every descendant', () => {
  let system: ActorSystem;
  let stopped: string[];
  beforeEach(() => {
    system = startActorSystem('stop-test', captureLogger().log);
    stopped = [];
  });
  afterEach(() => stopActorSystem(system));

  const node = (parent: Parent, name: string, init: (self: ActorRef<'crash' | 'ping'>) => void = () => undefined) =>
    spawn<null, 'crash' | 'ping'>(parent, {
      name,
      supervision: Supervision.restartWithBackoff({ minBackoffMs: 1, maxBackoffMs: 1 }),
      init: (ctx) => {
        init(ctx.self);
        return null;
      },
      receive: (s, m) => {
        if (m === 'crash') throw new Error('boom');
        return s;
      },
      afterStop: () => void stopped.push(name),
    });

  it('stopping the system stops its actors and their children, running afterStop for each', async () => {
    let child!: ActorRef<'crash' | 'ping'>;
    let grandchild!: ActorRef<'crash' | 'ping'>;
    const top = node(system, 'top', (self) => {
      child = node(self, 'child', (c) => {
        grandchild = node(c, 'grandchild');
      });
    });
    await waitFor(() => grandchild !== undefined, 1000, 1, 'the tree');
    stopActorSystem(system);
    await waitFor(() => stopped.length === 3, 1000, 1, 'three afterStops');
    assert.deepEqual(stopped.sort(), ['child', 'grandchild', 'top']);
    assert.ok(isStopped(top) && isStopped(child) && isStopped(grandchild));
  });

  it('stopping an actor stops its grandchildren; a dispatch to them is a dead letter', async () => {
    let grandchild!: ActorRef<'crash' | 'ping'>;
    const top = node(system, 'top', (self) => void node(self, 'child', (c) => void (grandchild = node(c, 'grandchild'))));
    await waitFor(() => grandchild !== undefined, 1000, 1, 'the tree');
    stop(top);
    await waitFor(() => stopped.length === 3, 1000, 1, 'three afterStops');
    const before = system.deadLetters;
    assert.equal(dispatch(grandchild, 'ping'), false);
    assert.equal(system.deadLetters, before + 1);
  });

  it('a restart stops the old grandchildren before init spawns new ones', async () => {
    const grandchildren: Array<ActorRef<'crash' | 'ping'>> = [];
    const top = node(system, 'top', (self) => void node(self, 'child', (c) => void grandchildren.push(node(c, 'grandchild'))));
    await waitFor(() => grandchildren.length === 1, 1000, 1, 'the tree');
    dispatch(top, 'crash');
    await waitFor(() => grandchildren.length === 2, 2000, 1, 'the tree spawned again');
    await waitFor(() => isStopped(grandchildren[0]!), 1000, 1, 'the old grandchild stopped');
    assert.deepEqual(stopped.sort(), ['child', 'grandchild']);
    assert.equal(isStopped(grandchildren[1]!), false);
  });
});
