import assert from 'node:assert/strict';
import { aimdOptions, aimdStart, aimdThrottled, aimdTick } from '../../src/limits/aimd';
import { GlobalRate } from '../../src/limits/global-rate';
import { nearLimit, observeThrottle, EMPTY_FLOOD, FloodDetector } from '../../src/limits/flood';

const T0 = 1_000_000;

describe('AIMD controller', () => {
  const o = aimdOptions(30, { cleanMs: 1_000, holdMs: 1_000 });

  it('starts at the ceiling', () => {
    assert.equal(aimdStart(o, T0).rate, 30);
  });

  it('a 429 lowers multiplicatively and remembers the rejected rate', () => {
    const s = aimdThrottled(aimdStart(o, T0), o, T0 + 10);
    assert.equal(s.rate, 30 * 0.85);
    assert.equal(s.lastBad, 30);
  });

  it('a 429 lowers to just under what the server was seen to accept when that is lower', () => {
    const s = aimdThrottled(aimdStart(o, T0), o, T0, 10);
    assert.equal(s.rate, 10 * 0.98);
    assert.equal(s.lastBad, 10);
  });

  it('an observation that may lag lowers the rate but not the memory of the rejected rate', () => {
    const c = aimdOptions(30, { cleanMs: 1_000, holdMs: 1_000, trustObserved: false });
    const s = aimdThrottled(aimdStart(c, T0), c, T0, 12);
    assert.equal(s.rate, 12 * 0.98);
    assert.equal(s.lastBad, 30);
    assert.equal(aimdTick(s, c, T0 + 1_000).rate, 12 * 0.98 + 1.5, 'fast growth again');
  });

  it('successive 429s keep the lowest rejected rate (within the memory)', () => {
    let s = aimdThrottled(aimdStart(o, T0), o, T0); // rejected at 30
    s = { ...s, rate: 27 };
    s = aimdThrottled(s, o, T0 + 5_000); // rejected at 27
    assert.equal(s.lastBad, 27);
    s = { ...s, rate: 29 };
    s = aimdThrottled(s, o, T0 + 10_000);
    assert.equal(s.lastBad, 27, 'a higher rejected rate does not raise the memory');
    s = { ...s, rate: 29 };
    s = aimdThrottled(s, o, T0 + 80_000);
    assert.equal(s.lastBad, 29, 'after a minute without a 429 the memory starts afresh');
  });

  it('429s within the hold time are one event', () => {
    const a = aimdThrottled(aimdStart(o, T0), o, T0);
    const b = aimdThrottled(a, o, T0 + 999);
    assert.equal(b.rate, a.rate);
    const c = aimdThrottled(b, o, T0 + 1_000);
    assert.equal(c.rate, a.rate * 0.85);
  });

  it('never below the floor', () => {
    let s = aimdStart(o, T0);
    for (let i = 0; i < 100; i++) s = aimdThrottled(s, o, T0 + i * 2_000);
    assert.equal(s.rate, o.floor);
  });

  it('no increase before a full clean interval', () => {
    const s = aimdThrottled(aimdStart(o, T0), o, T0);
    assert.equal(aimdTick(s, o, T0 + 999).rate, s.rate);
  });

  it('recovers fast to just below the rejected rate, then probes slowly, never above the ceiling', () => {
    let s = aimdThrottled(aimdStart(o, T0), o, T0); // 25.5, lastBad 30
    s = aimdTick(s, o, T0 + 1_000);
    assert.equal(s.rate, 25.5 + 1.5);
    s = aimdTick(s, o, T0 + 2_000);
    assert.equal(s.rate, 28.5);
    s = aimdTick(s, o, T0 + 3_000);
    assert.equal(s.rate, 30 * 0.98, 'fast growth stops at 0.98 × the rejected rate');
    s = aimdTick(s, o, T0 + 4_000);
    assert.ok(Math.abs(s.rate - (29.4 + 0.006)) < 1e-9, 'then a probe step');
    for (let i = 5; i < 59; i++) s = aimdTick(s, o, T0 + i * 1_000);
    assert.ok(s.rate < 30, 'still probing before the memory of the 429 is a minute old');
    s = aimdTick(s, o, T0 + 60_000);
    s = aimdTick(s, o, T0 + 61_000);
    assert.equal(s.rate, 30, 'then fast again, capped at the ceiling');
  });

  it('an idle scope does not grow (it learned nothing)', () => {
    const s = aimdThrottled(aimdStart(o, T0), o, T0);
    assert.equal(aimdTick(s, o, T0 + 5_000, false).rate, s.rate);
  });

  it('a throttle restarts the clean interval', () => {
    let s = aimdThrottled(aimdStart(o, T0), o, T0);
    s = aimdThrottled(s, o, T0 + 900); // within hold: same event, but not clean
    assert.equal(aimdTick(s, o, T0 + 1_500).rate, s.rate);
  });

  describe('refine: the later 429s of one event (answers that were still in flight at the first)', () => {
    const r = aimdOptions(30, { cleanMs: 1_000, holdMs: 1_000, refine: true });

    it('a larger count within the hold raises the rate to just under it and moves the memory with it', () => {
      let s = aimdThrottled(aimdStart(r, T0), r, T0, 15); // the first 429 read while answers were on their way
      assert.equal(s.rate, 15 * 0.98);
      assert.equal(s.lastBad, 15);
      s = aimdThrottled(s, r, T0 + 30, 20);
      assert.equal(s.rate, 20 * 0.98);
      assert.equal(s.lastBad, 20);
      s = aimdThrottled(s, r, T0 + 60, 18);
      assert.equal(s.rate, 20 * 0.98, 'a smaller count of the same event changes nothing');
      assert.equal(s.lastDecreaseAt, T0, 'the event keeps its start: the hold is not extended');
    });

    it('never above the multiplicative decrease from the rate the event started at', () => {
      let s = aimdThrottled(aimdStart(r, T0), r, T0, 10);
      s = aimdThrottled(s, r, T0 + 10, 40);
      assert.equal(s.rate, 30 * 0.85);
      assert.equal(s.lastBad, 30);
    });

    it('an untrusted count raises the rate but leaves the memory of the rejected rate alone', () => {
      const u = { ...r, trustObserved: false };
      let s = aimdThrottled(aimdStart(u, T0), u, T0, 15);
      s = aimdThrottled(s, u, T0 + 30, 20);
      assert.equal(s.rate, 20 * 0.98);
      assert.equal(s.lastBad, 30);
    });

    it('after the hold a 429 is a new event again (a decrease, not a refinement)', () => {
      let s = aimdThrottled(aimdStart(r, T0), r, T0, 20);
      s = aimdThrottled(s, r, T0 + 1_000, 21);
      assert.equal(s.rate, 20 * 0.98 * 0.85);
    });

    it('off by default (chats and groups unchanged): the first count of an event stands', () => {
      let s = aimdThrottled(aimdStart(o, T0), o, T0, 15);
      s = aimdThrottled(s, o, T0 + 30, 20);
      assert.equal(s.rate, 15 * 0.98);
      assert.equal(o.refine, false);
    });

    it('a cold start against a server at 200/s told 300/s: one event, then at ≥ 0.97 of the server for the rest of a 15 s run', () => {
      // The whole first window goes out before the first answer; the 429s' counts grow as the answers come in.
      const g = aimdOptions(300, { cleanMs: 1_000, holdMs: 1_000, refine: true });
      let s = aimdStart(g, T0);
      for (const [dt, seen] of [
        [0, 150],
        [10, 170],
        [25, 200],
        [40, 190],
      ] as const)
        s = aimdThrottled(s, g, T0 + 600 + dt, seen);
      assert.equal(s.rate, 196);
      let throttles = 0;
      for (let t = 2; t <= 15; t++) {
        s = aimdTick(s, g, T0 + t * 1_000);
        if (s.rate > 200) throttles++;
        assert.ok(s.rate >= 0.97 * 200 && s.rate <= 200, `at ${t} s: ${s.rate}/s`);
      }
      assert.equal(throttles, 0);
    });
  });

  describe('decreaseSeen: a 429 with a count goes just under it, at most that far under the rate it came at', () => {
    it('a count above the rate (answers bunched on a loaded machine) costs 5 %, not 15 %', () => {
      const g = aimdOptions(150, { cleanMs: 1_000, holdMs: 1_000, decreaseSeen: 0.95 });
      const s = aimdThrottled({ ...aimdStart(g, T0), rate: 101 }, g, T0, 105);
      assert.equal(s.rate, 101 * 0.95);
      assert.equal(s.lastBad, 101, 'the memory is the rate the 429 came at');
      assert.equal(aimdThrottled({ ...aimdStart(g, T0), rate: 101 }, g, T0).rate, 101 * 0.85, 'without a count: the full decrease');
    });

    it('defaults to `decrease` (chats and groups unchanged)', () => {
      assert.equal(o.decreaseSeen, o.decrease);
    });

    it('GlobalRate against a server at 100/s told 150/s whose counts are ±5 % off: ≥ 0.95 of it over two minutes, few floods', () => {
      const g = new GlobalRate(150, T0);
      let floods = 0;
      let sum = 0;
      for (let t = 1; t <= 120; t++) {
        const now = T0 + t * 1_000;
        if (g.rate > 100) g.throttled(now, 100 * (floods++ % 2 === 0 ? 1.05 : 0.95));
        else g.tick(now, true);
        sum += Math.min(g.rate, 100);
        if (t === 10) assert.ok(g.rate >= 95 && g.rate <= 100 && floods <= 3, `at 10 s: ${g.rate}/s after ${floods} floods`);
      }
      assert.ok(sum / 120 >= 95, `mean ${(sum / 120).toFixed(1)}/s`);
      // Then a slow probe above the remembered rate: about one flood a minute (the server may have relaxed).
      assert.ok(floods <= 6, `${floods} floods`);
    });
  });

  it('settles under a server at 20/s when told 30/s (simulated: 429 whenever the rate exceeds 20)', () => {
    let s = aimdStart(o, T0);
    let throttles = 0;
    let sum = 0;
    const seconds = 300;
    for (let t = 0; t < seconds; t++) {
      const now = T0 + t * 1_000;
      if (s.rate > 20) {
        throttles++;
        s = aimdThrottled(s, o, now, 20);
      } else s = aimdTick(s, o, now);
      sum += Math.min(s.rate, 20);
    }
    assert.ok(sum / seconds / 20 >= 0.95, `mean ${(sum / seconds).toFixed(2)}/s`);
    assert.ok(s.rate <= 20.5 && s.rate >= 19, `settled at ${s.rate}`);
    assert.ok(throttles <= 6, `${throttles} throttles in ${seconds} s`);
  });
});

describe('flood detector', () => {
  it('two chats not near their limits within the window → global; the same chat twice → chat', () => {
    let r = observeThrottle(EMPTY_FLOOD, { chatId: 1, at: T0, nearLimit: false });
    assert.equal(r.scope, 'chat');
    assert.equal(observeThrottle(r.state, { chatId: 1, at: T0 + 100, nearLimit: false }).scope, 'chat');
    r = observeThrottle(r.state, { chatId: 2, at: T0 + 100, nearLimit: false });
    assert.equal(r.scope, 'global');
  });

  it('chats near their own limit are never evidence of a bot-wide flood', () => {
    const d = new FloodDetector();
    assert.equal(d.observe({ chatId: 1, at: T0, nearLimit: true }), 'chat');
    assert.equal(d.observe({ chatId: 2, at: T0 + 10, nearLimit: true }), 'chat');
    assert.equal(d.observe({ chatId: 3, at: T0 + 20, nearLimit: false }), 'chat');
  });

  it('old 429s age out of the window', () => {
    const d = new FloodDetector({ windowMs: 2_000, chats: 2 });
    d.observe({ chatId: 1, at: T0, nearLimit: false });
    assert.equal(d.observe({ chatId: 2, at: T0 + 2_000, nearLimit: false }), 'chat');
  });

  it('nearLimit: a private chat (1/s) sent 1.2 s before is near; 2 s before is not', () => {
    const lim = { count: 1, windowMs: 1_000 };
    assert.equal(nearLimit([T0 - 1_200], T0, lim), true);
    assert.equal(nearLimit([T0 - 2_000], T0, lim), false);
    assert.equal(nearLimit([], T0, lim), false);
  });

  it('nearLimit: a group told 20/min with 5 sends in the last minute is near (a server may allow it 5); with 4 it is not', () => {
    const lim = { count: 20, windowMs: 60_000 };
    assert.equal(
      nearLimit(
        Array.from({ length: 5 }, (_, i) => T0 - 1_000 * (i + 1)),
        T0,
        lim,
      ),
      true,
    );
    assert.equal(
      nearLimit(
        Array.from({ length: 4 }, (_, i) => T0 - 1_000 * (i + 1)),
        T0,
        lim,
      ),
      false,
    );
  });
});
