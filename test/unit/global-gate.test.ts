import assert from 'node:assert/strict';
import { GlobalGate, systemClock, type Bid, type Clock } from '../../src/limits/global-gate';
import type { Reservation } from '../../src/limits/window';

class FakeClock implements Clock {
  constructor(public t = 1_000_000) {}
  now(): number {
    return this.t;
  }
}

/**
 * A gate with a window of `count` whose slots are all held by an in-flight blocker, so that
 * bids queue up; `release()` cancels one held reservation, which grants the next bid synchronously.
 */
function blockedGate(count = 1, clock: Clock = new FakeClock()) {
  const gate = new GlobalGate({ count, windowMs: 1000 }, clock);
  const held: Reservation[] = [];
  const order: string[] = [];
  const costs: number[] = [];
  gate.request({ priority: 0, backlogMs: 0, readySince: clock.now(), cost: count, grant: (r) => held.push(r) });
  assert.equal(held.length, 1, 'blocker granted at once');
  const bid = (name: string, b: Partial<Bid>): (() => void) =>
    gate.request({
      priority: 0,
      backlogMs: 0,
      readySince: clock.now(),
      cost: 1,
      ...b,
      grant: (r) => {
        order.push(name);
        costs.push(r.n);
        held.push(r);
      },
    });
  /** Frees the oldest held reservation (never sent), granting whoever is next. */
  const release = (): void => gate.cancel(held.shift()!);
  return { gate, held, order, costs, bid, release };
}

describe('limits/global-gate', () => {
  const gates: GlobalGate[] = [];
  afterEach(() => {
    for (const g of gates.splice(0)) g.stop();
  });

  it('grants at once while the window has room', () => {
    const gate = new GlobalGate({ count: 3, windowMs: 1000 }, new FakeClock());
    gates.push(gate);
    const got: number[] = [];
    for (let i = 0; i < 5; i++) gate.request({ priority: 0, backlogMs: 0, readySince: 0, cost: 1, grant: () => got.push(i) });
    assert.deepEqual(got, [0, 1, 2]);
    assert.equal(gate.waiting, 2);
    assert.equal(gate.occupied(), 3);
  });

  it('higher priority first, whatever the backlog or age', () => {
    const g = blockedGate();
    gates.push(g.gate);
    g.bid('bulk-old-big', { priority: 0, backlogMs: 60_000, readySince: 0 });
    g.bid('order', { priority: 10, backlogMs: 0 });
    g.bid('mid', { priority: 5, backlogMs: 0 });
    assert.deepEqual(g.order, []);
    for (let i = 0; i < 3; i++) g.release();
    assert.deepEqual(g.order, ['order', 'mid', 'bulk-old-big']);
  });

  it('among equal priority, the larger backlog first; then the order of arrival', () => {
    const g = blockedGate();
    gates.push(g.gate);
    g.bid('small', { backlogMs: 1_000 });
    g.bid('big', { backlogMs: 40_000 });
    g.bid('medium', { backlogMs: 5_000 });
    g.bid('small-2', { backlogMs: 1_000 });
    for (let i = 0; i < 4; i++) g.release();
    assert.deepEqual(g.order, ['big', 'medium', 'small', 'small-2']);
  });

  it('waiting time ages a bid: one ms waited counts as one ms of backlog', () => {
    const clock = new FakeClock(100_000);
    const g = blockedGate(1, clock);
    gates.push(g.gate);
    g.bid('waited-5s', { backlogMs: 0, readySince: 95_000 });
    g.bid('backlog-4s-new', { backlogMs: 4_000, readySince: 100_000 });
    g.bid('backlog-6s-new', { backlogMs: 6_000, readySince: 100_000 });
    for (let i = 0; i < 3; i++) g.release();
    assert.deepEqual(g.order, ['backlog-6s-new', 'waited-5s', 'backlog-4s-new']);
  });

  it('skips withdrawn bids', () => {
    const g = blockedGate();
    gates.push(g.gate);
    const withdrawA = g.bid('a', { backlogMs: 10 });
    g.bid('b', { backlogMs: 5 });
    const withdrawC = g.bid('c', { backlogMs: 1 });
    withdrawA();
    withdrawC();
    g.release();
    assert.deepEqual(g.order, ['b']);
    g.release();
    assert.deepEqual(g.order, ['b'], 'withdrawn bids are never granted');
    assert.equal(g.gate.waiting, 0);
  });

  it('pause() holds every grant until the pause ends', () => {
    const clock = new FakeClock(0);
    const g = blockedGate(1, clock);
    gates.push(g.gate);
    g.bid('x', {});
    g.gate.pause(5_000);
    assert.equal(g.gate.pausedUntilMs, 5_000);
    g.release();
    assert.deepEqual(g.order, [], 'granted during a pause');
    g.gate.pause(1_000); // a shorter pause never shortens the current one
    assert.equal(g.gate.pausedUntilMs, 5_000);
    clock.t = 4_999;
    g.gate.setLimit(g.gate.limit); // any event re-evaluates
    assert.deepEqual(g.order, []);
    clock.t = 5_000;
    g.gate.setLimit(g.gate.limit);
    assert.deepEqual(g.order, ['x']);
  });

  it('pause() with a real clock: the grant comes by itself after the pause', async () => {
    const gate = new GlobalGate({ count: 10, windowMs: 1000 }, systemClock);
    gates.push(gate);
    const until = Date.now() + 150;
    gate.pause(until);
    const grantedAt = await new Promise<number>((resolve) =>
      gate.request({
        priority: 0,
        backlogMs: 0,
        readySince: Date.now(),
        cost: 1,
        grant: (r) => {
          gate.cancel(r);
          resolve(Date.now());
        },
      }),
    );
    assert.ok(grantedAt >= until, `granted ${until - grantedAt} ms before the pause ended`);
  });

  it('an album of n takes n slots, and waits at the head until n are free', () => {
    const g = blockedGate(3);
    gates.push(g.gate);
    g.bid('album', { priority: 1, cost: 3 });
    g.bid('single', { priority: 0, cost: 1 });
    g.release(); // frees all 3 held by the blocker
    assert.deepEqual(g.order, ['album']);
    assert.deepEqual(g.costs, [3]);
    assert.equal(g.gate.occupied(), 3);
    g.release(); // the album's 3
    assert.deepEqual(g.order, ['album', 'single']);
    assert.equal(g.gate.occupied(), 1);
  });

  it('a single does not overtake an album waiting at the head', () => {
    const clock = new FakeClock();
    const gate = new GlobalGate({ count: 3, windowMs: 1000 }, clock);
    gates.push(gate);
    const held: Reservation[] = [];
    const order: string[] = [];
    const req = (name: string, cost: number, priority: number): void =>
      void gate.request({ priority, backlogMs: 0, readySince: clock.now(), cost, grant: (r) => (order.push(name), held.push(r)) });
    req('a', 1, 0);
    req('b', 1, 0);
    req('album', 3, 5);
    req('single', 1, 0);
    assert.deepEqual(order, ['a', 'b'], 'one slot is free, but the album at the head needs three');
    gate.cancel(held.shift()!);
    gate.cancel(held.shift()!);
    assert.deepEqual(order, ['a', 'b', 'album']);
  });

  it('an album larger than the window is capped at the window', () => {
    const gate = new GlobalGate({ count: 2, windowMs: 1000 }, new FakeClock());
    gates.push(gate);
    let got: Reservation | undefined;
    gate.request({ priority: 0, backlogMs: 0, readySince: 0, cost: 5, grant: (r) => (got = r) });
    assert.equal(got?.n, 2);
  });

  it('with real short windows, never grants more than count per window and wakes itself', async () => {
    const gate = new GlobalGate({ count: 2, windowMs: 100 }, systemClock);
    gates.push(gate);
    const times: number[] = [];
    await Promise.all(
      Array.from(
        { length: 6 },
        () =>
          new Promise<void>((resolve) =>
            gate.request({
              priority: 0,
              backlogMs: 0,
              readySince: Date.now(),
              cost: 1,
              grant: (r) => {
                const t = Date.now();
                times.push(t);
                gate.settle(r, t);
                resolve();
              },
            }),
          ),
      ),
    );
    assert.equal(times.length, 6);
    for (const t of times) {
      const inWindow = times.filter((u) => u >= t && u < t + 100).length;
      assert.ok(inWindow <= 2, `${inWindow} grants within 100 ms of ${t}`);
    }
    assert.ok(times[5]! - times[0]! >= 200, 'six grants at 2 per 100 ms need at least 200 ms');
  });

  it('setLimit takes effect for waiting bids at once', () => {
    const g = blockedGate(1);
    gates.push(g.gate);
    g.bid('a', {});
    g.bid('b', {});
    g.gate.setLimit({ count: 3, windowMs: 1000 });
    assert.deepEqual(g.order, ['a', 'b']);
  });

  it('stop() grants nothing more', () => {
    const g = blockedGate(1);
    g.bid('late', {});
    g.gate.stop();
    g.release();
    assert.deepEqual(g.order, []);
  });
});
