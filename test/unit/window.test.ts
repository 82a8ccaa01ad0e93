import assert from 'node:assert/strict';
import { SlidingWindow, perMinuteToWindow, rateToWindow, type Reservation, type WindowLimit } from '../../src/limits/window';

/** Deterministic pseudo-random numbers in [0, 1). */
function lcg(seed: number): () => number {
  let x = seed >>> 0;
  return () => {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    return x / 2 ** 32;
  };
}

interface Send {
  dispatchedAt: number;
  answeredAt: number;
}

/**
 * Discrete-event simulation of a sender that dispatches as soon as the window allows and gets each answer
 * after a random latency. Returns every send with its dispatch and answer instants.
 */
function simulate(limit: WindowLimit, total: number, latency: () => number): Send[] {
  const w = new SlidingWindow(limit);
  const sends: Send[] = [];
  const inFlight: Array<{ r: Reservation; send: Send }> = [];
  let t = 0;
  for (let guard = 0; sends.length < total || inFlight.length > 0; guard++) {
    assert.ok(guard < total * 20, 'simulation does not progress');
    // Answers due by now, in answer order.
    inFlight.sort((a, b) => a.send.answeredAt - b.send.answeredAt);
    while (inFlight.length && inFlight[0]!.send.answeredAt <= t) {
      const { r, send } = inFlight.shift()!;
      w.settle(r, send.answeredAt);
    }
    while (sends.length < total && w.availableAt(t) <= t) {
      const send = { dispatchedAt: t, answeredAt: t + latency() };
      sends.push(send);
      inFlight.push({ r: w.reserve(), send });
      assert.ok(w.occupied(t) <= limit.count, `occupied ${w.occupied(t)} > ${limit.count} at ${t}`);
    }
    const nextAnswer = Math.min(...inFlight.map((f) => f.send.answeredAt));
    const nextSlot = sends.length < total ? w.availableAt(t) : Infinity;
    const next = Math.min(nextAnswer, nextSlot);
    if (next === Infinity) break;
    t = Math.max(t, next);
  }
  return sends;
}

describe('limits/window', () => {
  describe('rate mapping', () => {
    it('maps messages per second to a window', () => {
      assert.deepEqual(rateToWindow(30), { count: 30, windowMs: 1000 });
      assert.deepEqual(rateToWindow(1), { count: 1, windowMs: 1000 });
      assert.deepEqual(rateToWindow(0.5), { count: 1, windowMs: 2000 });
      const r = rateToWindow(1.5);
      assert.equal(r.count, 1);
      assert.ok(Math.abs(r.windowMs - 666.667) < 0.001, String(r.windowMs));
      assert.deepEqual(rateToWindow(300), { count: 300, windowMs: 1000 });
    });

    it('maps messages per minute to a window', () => {
      assert.deepEqual(perMinuteToWindow(20), { count: 20, windowMs: 60_000 });
      assert.deepEqual(perMinuteToWindow(0.5), { count: 1, windowMs: 120_000 });
    });

    it('never allows more than the rate over a long run', () => {
      for (const rate of [30, 1, 0.5, 1.5, 2.7, 333.3]) {
        const { count, windowMs } = rateToWindow(rate);
        assert.ok(count / (windowMs / 1000) <= rate + 1e-9, `rate ${rate}`);
        assert.ok(count / (windowMs / 1000) >= rate - 1e-9, `rate ${rate} wastes capacity`);
      }
    });

    it('refuses rates that are not positive', () => {
      for (const bad of [0, -1, Number.NaN]) {
        assert.throws(() => rateToWindow(bad), RangeError);
        assert.throws(() => perMinuteToWindow(bad), RangeError);
      }
    });
  });

  describe('SlidingWindow', () => {
    it('never has more than count sends whose slot overlaps a dispatch (random latencies)', () => {
      for (const [limit, seed] of [
        [{ count: 3, windowMs: 100 }, 1],
        [{ count: 1, windowMs: 1000 }, 2],
        [{ count: 30, windowMs: 1000 }, 3],
      ] as const) {
        const rnd = lcg(seed);
        const sends = simulate(limit, 400, () => Math.floor(rnd() * 40));
        assert.equal(sends.length, 400);
        // A send occupies [dispatchedAt, answeredAt + windowMs): the server saw it somewhere in
        // [dispatchedAt, answeredAt], so this is the strict guarantee.
        for (const s of sends) {
          const overlapping = sends.filter((o) => o.dispatchedAt <= s.dispatchedAt && o.answeredAt + limit.windowMs > s.dispatchedAt).length;
          assert.ok(overlapping <= limit.count, `${overlapping} > ${limit.count} at ${s.dispatchedAt}`);
        }
        // And any window of server time holds at most count dispatches.
        const times = sends.map((s) => s.dispatchedAt);
        for (const t of times) {
          const inWindow = times.filter((u) => u >= t && u < t + limit.windowMs).length;
          assert.ok(inWindow <= limit.count, `${inWindow} dispatches in [${t}, ${t + limit.windowMs})`);
        }
      }
    });

    it('uses the full rate when answers are instant', () => {
      const sends = simulate({ count: 5, windowMs: 100 }, 50, () => 0);
      const last = sends[sends.length - 1]!.dispatchedAt;
      // 10 windows of 5; each window costs 100 ms + 2 ms of margin.
      assert.equal(last, 9 * 102);
    });

    it('frees a slot windowMs + 2 ms after its settle time, not its reserve time', () => {
      const w = new SlidingWindow({ count: 1, windowMs: 100 });
      assert.equal(w.availableAt(0), 0);
      const r = w.reserve();
      assert.equal(w.availableAt(10), Infinity, 'in flight: depends on the answer');
      assert.equal(w.availableAt(500), Infinity, 'time alone never frees an in-flight slot');
      w.settle(r, 50);
      assert.equal(w.availableAt(60), 152);
      assert.equal(w.occupied(151), 1);
      assert.equal(w.availableAt(151), 152);
      assert.equal(w.occupied(152), 0);
      assert.equal(w.availableAt(152), 152);
    });

    it('in-flight reservations block; Infinity only when nothing settled would free enough', () => {
      const w = new SlidingWindow({ count: 2, windowMs: 100 });
      const a = w.reserve();
      w.reserve();
      assert.equal(w.occupied(0), 2);
      assert.equal(w.availableAt(0), Infinity);
      w.settle(a, 10);
      assert.equal(w.availableAt(20, 1), 112, 'the settled slot frees one');
      assert.equal(w.availableAt(20, 2), Infinity, 'two need the in-flight one too');
      assert.equal(w.availableAt(0, 3), Infinity, 'more than count can never fit');
    });

    it('cancel frees the slots at once; settle and cancel are idempotent', () => {
      const w = new SlidingWindow({ count: 2, windowMs: 1000 });
      const r = w.reserve(2);
      assert.equal(w.availableAt(5), Infinity);
      w.cancel(r);
      assert.equal(w.occupied(5), 0);
      assert.equal(w.availableAt(5, 2), 5);
      w.settle(r, 5); // already cancelled: no effect
      assert.equal(w.occupied(5), 0);
      const r2 = w.reserve();
      w.settle(r2, 10);
      w.settle(r2, 10);
      w.cancel(r2);
      assert.equal(w.occupied(11), 1);
    });

    it('an album reservation of n takes n slots', () => {
      const w = new SlidingWindow({ count: 5, windowMs: 100 });
      const r = w.reserve(3);
      assert.equal(w.occupied(0), 3);
      assert.equal(w.availableAt(0, 2), 0);
      assert.equal(w.availableAt(0, 3), Infinity);
      w.settle(r, 0);
      assert.equal(w.availableAt(1, 3), 102);
      assert.equal(w.occupied(102), 0);
    });

    it('setLimit keeps the slots already used', () => {
      const w = new SlidingWindow({ count: 3, windowMs: 1000 });
      for (let i = 0; i < 3; i++) w.settle(w.reserve(), i);
      assert.equal(w.availableAt(10), 1002);
      w.setLimit({ count: 5, windowMs: 1000 });
      assert.deepEqual(w.current, { count: 5, windowMs: 1000 });
      assert.equal(w.occupied(10), 3);
      assert.equal(w.availableAt(10, 2), 10);
      assert.equal(w.availableAt(10, 3), 1002);
      w.setLimit({ count: 1, windowMs: 1000 });
      assert.equal(w.occupied(10), 3);
      assert.equal(w.availableAt(10), 1004, 'all three must expire before one fits');
    });
  });
});
