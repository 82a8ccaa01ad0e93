import assert from 'node:assert/strict';
import { KeyedWindows, WindowCounter, groupWindowLimit, retryAfterSeconds, windowLimit, type WindowLimit } from '../../sandbox/window';

/** Offers one request of weight `n` at each time; returns the times admitted. */
function offer(times: number[], limit: WindowLimit, n = 1, window = new WindowCounter()): number[] {
  const admitted: number[] = [];
  for (const t of times) {
    if (window.waitMs(n, t, limit) === 0) {
      window.add(n, t);
      admitted.push(t);
    }
  }
  return admitted;
}

/** Largest number of admitted times inside any window (t - windowMs, t]. */
function peak(admitted: number[], windowMs: number): number {
  return Math.max(0, ...admitted.map((t) => admitted.filter((e) => e > t - windowMs && e <= t).length));
}

describe('sandbox sliding window', () => {
  describe('windowLimit', () => {
    it('maps rates to count per windowMs', () => {
      assert.deepEqual(windowLimit(10), { count: 10, windowMs: 1000 });
      assert.deepEqual(windowLimit(0.5), { count: 1, windowMs: 2000 });
      assert.equal(windowLimit(1.5).count, 1);
      assert.ok(Math.abs(windowLimit(1.5).windowMs - 666.6667) < 0.001);
      assert.deepEqual(windowLimit(30), { count: 30, windowMs: 1000 });
      assert.deepEqual(windowLimit(20, 60_000), { count: 20, windowMs: 60_000 });
    });

    it("maps a group's per-minute rate to its window, shorter when told", () => {
      assert.deepEqual(groupWindowLimit(20), { count: 20, windowMs: 60_000 });
      assert.deepEqual(groupWindowLimit(0.5), { count: 1, windowMs: 120_000 });
      assert.deepEqual(groupWindowLimit(200, 3_000), { count: 10, windowMs: 3_000 });
      assert.deepEqual(groupWindowLimit(20, 3_000), { count: 1, windowMs: 3_000 });
    });

    it('refuses rates that are not positive and finite', () => {
      for (const rate of [0, -1, Number.NaN, Number.POSITIVE_INFINITY]) {
        assert.throws(() => windowLimit(rate), RangeError);
      }
    });
  });

  describe('WindowCounter', () => {
    it('admits exactly count in any window under a steady overload', () => {
      const limit = windowLimit(10);
      const times = Array.from({ length: 300 }, (_, i) => i * 10); // 100/s for 3 s
      const admitted = offer(times, limit);
      assert.equal(peak(admitted, limit.windowMs), 10);
      assert.equal(admitted.filter((t) => t < 1000).length, 10);
      assert.equal(admitted.length, 30);
    });

    it('never exceeds count in any window, and rejects only when the window is full', () => {
      let seed = 42;
      const random = (): number => (seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31) / 2 ** 31;
      const limit = windowLimit(7);
      const window = new WindowCounter();
      let t = 0;
      const admitted: number[] = [];
      for (let i = 0; i < 2000; i++) {
        t += random() * 60;
        const inWindow = admitted.filter((e) => e > t - limit.windowMs).length;
        if (window.waitMs(1, t, limit) === 0) {
          assert.ok(inWindow < limit.count);
          window.add(1, t);
          admitted.push(t);
        } else {
          assert.equal(inWindow, limit.count);
        }
      }
      assert.equal(peak(admitted, limit.windowMs), 7);
    });

    it('frees an entry exactly windowMs after it was recorded', () => {
      const limit = windowLimit(1);
      const window = new WindowCounter();
      window.add(1, 1000);
      assert.equal(window.waitMs(1, 1999.9, limit) > 0, true);
      assert.equal(window.waitMs(1, 2000, limit), 0);
    });

    it('computes the wait until enough weight leaves the window', () => {
      const limit = windowLimit(5);
      const window = new WindowCounter();
      for (const t of [0, 100, 200, 300, 400]) window.add(1, t);
      assert.equal(window.waitMs(1, 450, limit), 550); // the entry at 0 leaves at 1000
      assert.equal(window.waitMs(3, 450, limit), 750); // entries at 0, 100, 200 must leave
      assert.equal(window.occupancy(450, limit), 5);
      assert.equal(window.occupancy(1250, limit), 2);
    });

    it('counts an album as its weight and admits a too-large album only into an empty window', () => {
      const limit = windowLimit(5);
      const window = new WindowCounter();
      assert.equal(window.waitMs(3, 0, limit), 0);
      window.add(3, 0);
      assert.equal(window.waitMs(3, 10, limit), 990);
      assert.equal(window.waitMs(2, 10, limit), 0);
      assert.equal(window.waitMs(8, 10, limit), 990); // wait for the window to empty
      assert.equal(window.waitMs(8, 1000, limit), 0);
    });

    it('keeps counting correctly after many entries (compaction)', () => {
      const limit = windowLimit(3);
      const times = Array.from({ length: 10_000 }, (_, i) => i);
      const admitted = offer(times, limit);
      assert.equal(peak(admitted.slice(-30), limit.windowMs), 3);
      assert.equal(admitted.length, 30);
    });
  });

  describe('retryAfterSeconds', () => {
    it('rounds up to whole seconds, at least 1', () => {
      assert.equal(retryAfterSeconds(0), 1);
      assert.equal(retryAfterSeconds(0.5), 1);
      assert.equal(retryAfterSeconds(1000), 1);
      assert.equal(retryAfterSeconds(1000.1), 2);
      assert.equal(retryAfterSeconds(59_000.5), 60);
    });
  });

  describe('KeyedWindows', () => {
    it('keeps one window per key and forgets idle keys', () => {
      const windows = new KeyedWindows(windowLimit(1));
      windows.add(1, 1, 0);
      assert.equal(windows.waitMs(1, 1, 10), 990);
      assert.equal(windows.waitMs(2, 1, 10), 0);
      windows.add(2, 1, 500);
      assert.equal(windows.activeKeys(600), 2);
      assert.equal(windows.activeKeys(1200), 1);
      assert.equal(windows.occupancy(2, 1200), 1);
      assert.equal(windows.activeKeys(1500), 0);
    });

    it('applies a changed limit to entries already recorded', () => {
      const windows = new KeyedWindows(windowLimit(1));
      windows.add(7, 1, 0);
      windows.limit = windowLimit(2);
      assert.equal(windows.waitMs(7, 1, 10), 0);
    });
  });
});
