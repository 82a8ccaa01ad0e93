import assert from 'node:assert/strict';
import { ChatLimiter, windowAt } from '../../src/limits/chat-limits';
import { seedFor } from '../../actors/pipeline/pipeline';
import { MAX_CHATS, MAX_LEARNED, handoffRecord, parseHandoffRecord } from '../../src/cluster/handoff';
import { WindowCounter, groupWindowLimit, retryAfterSeconds, windowLimit } from '../../sandbox/window';
import type { WindowLimit } from '../../src/limits/window';

const T0 = 1_700_000_000_000;
const settings = { chatLimit: { count: 1, windowMs: 1_000 }, groupLimit: { count: 20, windowMs: 60_000 } };

/** Sends one message to `chat` at `at` through the limiter (reserve, answer 1 ms later). */
function send(l: ChatLimiter, chat: number, at: number): boolean {
  const w = l.window(chat);
  if (w.availableAt(at) > at) return false;
  const r = w.reserve();
  w.settle(r, at + 1);
  l.answered(chat, at + 1);
  return true;
}

/**
 * One chat with an endless backlog against a strict server (the sandbox's own window), on a fake clock from 0:
 * the sender's loop in miniature (send when the chat's window allows, 1 ms answers, honour retry_after, tick
 * every second). `server(t)` is the server's limit at t.
 */
function simulate(chat: number, told: WindowLimit, server: (t: number) => WindowLimit, durationMs: number): { accepted: number[]; refused: number[] } {
  return drive(new ChatLimiter({ chatLimit: told, groupLimit: told }), chat, new WindowCounter(), server, 0, durationMs);
}

/** The loop of `simulate` with a given limiter and server state, from `from` to `to` (a handoff continues the server's windows). */
function drive(
  l: ChatLimiter,
  chat: number,
  srv: WindowCounter,
  server: (t: number) => WindowLimit,
  from: number,
  to: number,
): { accepted: number[]; refused: number[] } {
  const accepted: number[] = [];
  const refused: number[] = [];
  let t = from;
  let pausedUntil = from;
  let nextTick = from + 1_000;
  while (t < to) {
    const w = l.window(chat);
    const at = Math.max(t, pausedUntil, w.availableAt(t));
    if (at > nextTick) {
      t = nextTick;
      l.tick(t);
      nextTick += 1_000;
      continue;
    }
    t = at;
    const r = w.reserve();
    const wait = srv.waitMs(1, t, server(t));
    const answered = t + 1;
    w.settle(r, answered);
    if (wait > 0) {
      refused.push(t);
      pausedUntil = answered + retryAfterSeconds(wait) * 1_000;
      l.throttled(chat, answered);
    } else {
      srv.add(1, t);
      accepted.push(t);
      l.answered(chat, answered);
    }
    t = answered;
  }
  return { accepted, refused };
}

const HOUR = 3_600_000;

describe('per-chat limits (ChatLimiter)', () => {
  describe('a server stricter than configured, over hours (fake clock)', () => {
    it('a group at 10/min told 20/min: one 429 to learn, then probes ever rarer (10, 20, 40, 80 min apart); ≥ 0.99 of the server rate, ≤ 0.25 % 429s', () => {
      const { accepted, refused } = simulate(-5, { count: 20, windowMs: 60_000 }, () => groupWindowLimit(10), 4 * HOUR);
      const gapsMin = refused.slice(1).map((t, i) => Math.round((t - refused[i]!) / 60_000));
      assert.deepEqual(gapsMin, [10, 20, 40, 80]);
      const sends = accepted.length + refused.length;
      assert.ok(refused.length / sends <= 0.0025, `${refused.length} × 429 in ${sends} sends`);
      assert.ok(accepted.length >= 0.99 * 4 * 60 * 10, `${accepted.length} accepted of ${4 * 60 * 10}`);
    });

    it('probes stop growing rarer at 16 × the first memory (a group: every 160 min)', () => {
      const { refused } = simulate(-5, { count: 20, windowMs: 60_000 }, () => groupWindowLimit(10), 12 * HOUR);
      const gapsMin = refused.slice(1).map((t, i) => Math.round((t - refused[i]!) / 60_000));
      assert.deepEqual(gapsMin, [10, 20, 40, 80, 160, 160, 160]);
    });

    it('a server that relaxes (10/min, then 20/min after an hour) is found again: the group is back at its ceiling', () => {
      const { accepted } = simulate(-5, { count: 20, windowMs: 60_000 }, (t) => groupWindowLimit(t < HOUR ? 10 : 20), 3 * HOUR);
      const lastHour = accepted.filter((t) => t >= 2 * HOUR).length;
      assert.equal(lastHour, 20 * 60);
    });

    it('a group back at its ceiling starts learning afresh when the server tightens again (probes 10, 20 min apart)', () => {
      const limit = (t: number) => groupWindowLimit(t < HOUR || t >= 3 * HOUR ? 10 : 20);
      const { refused } = simulate(-5, { count: 20, windowMs: 60_000 }, limit, 4 * HOUR);
      const after = refused.filter((t) => t >= 3 * HOUR);
      // Seconds after the change: refused at once, lowered twice within its first windows (what the
      // server took before it tightened still counted), then probes 10 and 20 min apart.
      assert.deepEqual(
        after.map((t) => Math.round((t - 3 * HOUR) / 1_000)),
        [2, 4, 64, 664, 1865],
      );
    });

    it('a short group window (10 per 3 s told 20 per 3 s, as the integration test runs it) behaves the same', () => {
      const { accepted, refused } = simulate(-5, { count: 20, windowMs: 3_000 }, () => groupWindowLimit(200, 3_000), HOUR);
      assert.ok(refused.length <= 6, `${refused.length} × 429`);
      assert.ok(accepted.length >= 0.99 * 1_200 * 10, `${accepted.length} accepted`);
    });

    it('a private chat held to 1 per 2 s while told 1/s: ≤ 1 % 429s, ≥ 0.9 of the server rate (was 9.6 % and 0.83: growth went back to the refused rate)', () => {
      const { accepted, refused } = simulate(5, { count: 1, windowMs: 1_000 }, () => windowLimit(0.5), HOUR);
      const sends = accepted.length + refused.length;
      assert.ok(refused.length / sends <= 0.01, `${refused.length} × 429 in ${sends} sends`);
      assert.ok(accepted.length >= 0.9 * 1_800, `${accepted.length} accepted of 1800`);
    });

    it('a server exactly as configured: no 429, the full rate', () => {
      const group = simulate(-5, { count: 20, windowMs: 60_000 }, () => groupWindowLimit(20), HOUR);
      assert.deepEqual([group.refused.length, group.accepted.length], [0, 1_200]);
      const chat = simulate(5, { count: 1, windowMs: 1_000 }, () => windowLimit(1), HOUR);
      assert.equal(chat.refused.length, 0);
      assert.ok(chat.accepted.length >= 0.99 * 3_600);
    });
  });

  it("a 429 processed late still counts every send of the server's window: they were answered after the refused one went out, less a window", () => {
    // 20 per 3 s told, the server takes 10: the ten sends trickle out over 2.7 s (a process waiting for its first
    // budget grant), the 11th goes out at 2.95 s and its 429 is handled at 3.4 s (a loaded process).
    const l = new ChatLimiter({ chatLimit: { count: 1, windowMs: 1_000 }, groupLimit: { count: 20, windowMs: 3_000 } });
    const g = -100777;
    for (let i = 0; i < 10; i++) assert.ok(send(l, g, T0 + i * 300));
    const rate = l.throttled(g, T0 + 3_400, T0 + 2_950);
    assert.equal(Math.round(rate * 3), 10, `lowered to ${(rate * 3).toFixed(2)} per 3 s, the server's 10`);
    // Counting back from when the 429 was handled sees 8 of them (the first two answered before 0.4 s): 20 % low.
    const old = new ChatLimiter({ chatLimit: { count: 1, windowMs: 1_000 }, groupLimit: { count: 20, windowMs: 3_000 } });
    for (let i = 0; i < 10; i++) send(old, g, T0 + i * 300);
    assert.equal(Math.round(old.throttled(g, T0 + 3_400) * 3), 8);
  });

  it('a group server at 10/min while told 20/min: after one 429 the group never exceeds 10 in any minute', () => {
    const l = new ChatLimiter(settings);
    const g = -100123;
    for (let i = 0; i < 10; i++) assert.ok(send(l, g, T0 + i * 100));
    // The 11th is refused by the server (429 at the group scope).
    const rate = l.throttled(g, T0 + 1_100);
    assert.ok(rate * 60 <= 10, `lowered to ${(rate * 60).toFixed(2)}/min`);
    const sent: number[] = [];
    for (let t = T0 + 1_100; t < T0 + 600_000; t += 250) {
      l.tick(t);
      if (send(l, g, t)) sent.push(t);
    }
    const all = [...Array.from({ length: 10 }, (_, i) => T0 + i * 100), ...sent];
    for (let i = 0; i < all.length; i++) {
      const inMinute = all.filter((t) => t >= all[i]! && t < all[i]! + 60_000).length;
      assert.ok(inMinute <= 10, `${inMinute} sends in the minute from ${all[i]! - T0} ms`);
    }
    assert.ok(sent.length >= 88, `still sends near the server's rate: ${sent.length} in ~10 min`);
  });

  it('a window outlives the chat queue: a group that got 20 in a minute gets nothing more that minute', () => {
    const l = new ChatLimiter(settings);
    for (let i = 0; i < 20; i++) assert.ok(send(l, -5, T0 + i * 10));
    l.tick(T0 + 1_000); // the sender's periodic tick must not forget a chat with slots in its window
    assert.equal(send(l, -5, T0 + 1_000), false);
    assert.equal(send(l, -5, T0 + 60_000), false, 'the first slot frees one window after its answer');
    assert.ok(send(l, -5, T0 + 60_003));
  });

  it('a lowered chat recovers towards its ceiling after clean intervals, then is forgotten', () => {
    const l = new ChatLimiter(settings);
    send(l, 7, T0);
    l.throttled(7, T0 + 1_000);
    assert.equal(l.lowered().length, 1);
    let t = T0 + 1_000;
    for (let i = 0; i < 40; i++) {
      t += 10_000;
      send(l, 7, t);
      l.tick(t);
    }
    assert.equal(l.lowered().length, 0, 'back at the ceiling');
  });

  it("handoff: the new owner seeded with the old owner's sends waits for the window; a blind seed waits a full window", () => {
    const old = new ChatLimiter(settings);
    send(old, 42, T0);
    const h = old.handoff(T0 + 10);
    assert.deepEqual(h, { chats: { '42': [T0 + 1] }, learned: {} }, 'nothing learned: no learned part');
    const next = new ChatLimiter(settings, { kind: 'exact', at: T0 + 10, chats: h.chats, complete: true });
    assert.equal(next.window(42).availableAt(T0 + 20), T0 + 1 + 1_000 + 2);
    assert.equal(next.window(43).availableAt(T0 + 20), T0 + 20, 'a chat the old owner did not send to is free');
    const blind = new ChatLimiter(settings, { kind: 'blind', at: T0 });
    assert.equal(blind.window(44).availableAt(T0), T0 + 1_000 + 2);
    assert.equal(blind.window(-44).availableAt(T0), T0 + 60_000 + 2, 'a group waits a full group window');
  });

  it('seedFor: a record after a clean release is exact; an owner still named in the database means blind', () => {
    const record = { from: 'a:1', at: T0, chats: { '1': [T0] }, complete: true };
    assert.equal(seedFor(0, record, null, 'b:1', T0).kind, 'exact');
    assert.equal(seedFor(0, undefined, null, 'b:1', T0).kind, 'free');
    assert.deepEqual(seedFor(0, record, 'a:1', 'b:1', T0 + 5), { kind: 'blind', at: T0 + 5 });
    assert.deepEqual(seedFor(0, undefined, 'a:1', 'b:1', T0 + 5), { kind: 'blind', at: T0 + 5 });
  });

  describe('handoff of learned limits (encode → JSON → parse → seed, fake clock against the sandbox window)', () => {
    const told = { count: 20, windowMs: 60_000 };
    const groups = { chatLimit: { count: 1, windowMs: 1_000 }, groupLimit: told };
    const server = (): WindowLimit => groupWindowLimit(10);
    const MIN = 60_000;

    /** Owner a learns group -5 for 5 minutes and hands the shard to b, which sends for 5 more; `strip` drops the learned part. */
    const handover = (strip: boolean) => {
      const srv = new WindowCounter();
      const a = new ChatLimiter(groups);
      const first = drive(a, -5, srv, server, 0, 5 * MIN);
      const at = 5 * MIN;
      const stored = JSON.parse(JSON.stringify(handoffRecord('a:1', at, a.handoff(at)))) as Record<string, unknown>;
      if (strip) delete stored.learned; // a record written before learned limits were handed over
      const record = parseHandoffRecord(stored)!;
      const b = new ChatLimiter(groups, seedFor(0, record, null, 'b:1', at));
      const lowered = b.lowered();
      const second = drive(b, -5, srv, server, at, 10 * MIN);
      return { first, second, lowered, record, b };
    };

    it('a group that cost its first owner a 429 costs the next owner none: it sends at the learned 10/min from its first send', () => {
      const { first, second, lowered, record } = handover(false);
      assert.equal(first.refused.length, 1, 'the first owner paid one 429 to learn the limit');
      assert.deepEqual(Object.keys(record.learned ?? {}), ['-5']);
      assert.deepEqual(lowered, [{ chatId: -5, rate: 10 / 60, ceiling: 20 / 60 }], 'lowered before its first send');
      assert.equal(second.refused.length, 0, 'no 429 for the new owner');
      assert.ok(second.accepted.length >= 49, `${second.accepted.length} sends in 5 minutes at 10/min`);
    });

    it('without the learned part (an old record) the next owner pays another 429; the old record still loads', () => {
      const { second, record } = handover(true);
      assert.equal(record.learned, undefined);
      // One, not three: the handed-over sends count as what the server accepted in the window, so the 429 lowers
      // the rate straight to 10/min (before, it saw none and lowered by a step: 429s at 0, 1 s and 61 s).
      assert.deepEqual(second.refused, [5 * MIN]);
    });

    it('the learned limit is handed on even when the new owner never sent to the chat, with its memory and decrease time', () => {
      const { record } = handover(false);
      const b = new ChatLimiter(groups, seedFor(0, record, null, 'b:1', record.at));
      const again = b.handoff(record.at + 1_000);
      assert.deepEqual(again.learned, record.learned);
      const l = record.learned!['-5']!;
      assert.ok(l.decreasedAt < record.at && l.memoryMs === 10 * MIN, JSON.stringify(l));
    });

    it('a blind takeover (the owner died) still takes over the limits of the last record', () => {
      const { record } = handover(false);
      const seed = seedFor(0, record, 'x:1', 'b:1', record.at + 5_000);
      assert.equal(seed.kind, 'blind');
      const b = new ChatLimiter(groups, seed);
      assert.equal(b.lowered()[0]?.rate, 10 / 60);
      assert.equal(b.window(-5).availableAt(record.at + 5_000), record.at + 5_000 + MIN + 2, 'and waits a full window');
    });

    it('what is read is clamped to this configuration: never above the ceiling, never below the floor, memory within its range, no decrease in the future', () => {
      const at = T0;
      const seed = seedFor(
        0,
        parseHandoffRecord({
          from: 'a:1',
          at,
          chats: {},
          complete: true,
          learned: {
            '-1': { rate: 100, decreasedAt: at, memoryMs: 60_000 }, // above the ceiling: nothing to take over
            '-2': { rate: 1e-9, refused: 50, decreasedAt: at + 3_600_000, memoryMs: 1e12, known: 50 },
            '-3': { rate: 'fast', decreasedAt: at, memoryMs: 60_000 }, // malformed: learns again
            '-4': { rate: 0.1, decreasedAt: at - 1_000, memoryMs: 1 },
          },
        }),
        null,
        'b:1',
        at,
      );
      const b = new ChatLimiter(groups, seed);
      const l = b.handoff(at).learned;
      assert.deepEqual(Object.keys(l).sort(), ['-2', '-4']);
      assert.equal(l['-2']!.rate, (20 / 60) * 0.05, 'the floor: 5 % of the ceiling');
      assert.equal(l['-2']!.refused, 20 / 60, 'the remembered limit at most the ceiling');
      assert.equal(l['-2']!.known, 20 / 60);
      assert.equal(l['-2']!.decreasedAt, at, 'a decrease after the record is read as at the record');
      assert.equal(l['-2']!.memoryMs, 16 * 10 * MIN, 'memory at most 16 × its base');
      assert.equal(l['-4']!.memoryMs, 10 * MIN, 'memory at least its base');
      assert.equal(b.window(-1).current.count, 20, 'a rate above the ceiling leaves the chat at its ceiling');
      assert.equal(b.window(-4).current.count, 6, '0.1/s → 6 per minute');
    });

    it('parse: a malformed window makes the record incomplete; a record without `at` or chats is unusable', () => {
      const r = parseHandoffRecord({ from: 'a:1', at: T0, chats: { '1': [T0], '2': ['x'], abc: [T0] }, complete: true });
      assert.deepEqual(r, { from: 'a:1', at: T0, chats: { '1': [T0] }, complete: false });
      assert.equal(parseHandoffRecord({ from: 'a:1', chats: {} }), undefined);
      assert.equal(parseHandoffRecord([1, 2]), undefined);
      assert.equal(parseHandoffRecord(undefined), undefined);
    });

    it(`the record keeps at most ${MAX_CHATS} windows (then incomplete) and the ${MAX_LEARNED} most recently lowered chats`, () => {
      const learned = Object.fromEntries(
        Array.from({ length: MAX_LEARNED + 5 }, (_, i) => [String(-(i + 1)), { rate: 0.1, decreasedAt: T0 + i, memoryMs: 600_000 }]),
      );
      const chats = Object.fromEntries(Array.from({ length: MAX_CHATS + 1 }, (_, i) => [String(i + 1), [T0]]));
      const r = handoffRecord('a:1', T0 + 10_000, { chats, learned });
      assert.equal(Object.keys(r.chats).length, MAX_CHATS);
      assert.equal(r.complete, false);
      assert.equal(Object.keys(r.learned!).length, MAX_LEARNED);
      assert.ok(!(String(-1) in r.learned!) && String(-(MAX_LEARNED + 5)) in r.learned!, 'the oldest decreases are left out');
      assert.ok(JSON.stringify(r).length < 1024 * 1024 * 0.9, `${JSON.stringify(r).length} bytes: within NATS's payload`);
    });
  });

  it("windowAt keeps the ceiling's window length", () => {
    assert.deepEqual(windowAt(10 / 60, { count: 20, windowMs: 60_000 }), { count: 10, windowMs: 60_000 });
    assert.deepEqual(windowAt(9.8 / 60, { count: 20, windowMs: 60_000 }), { count: 9, windowMs: 60_000 });
    assert.deepEqual(windowAt(0.5, { count: 1, windowMs: 1_000 }), { count: 1, windowMs: 2_000 });
  });
});
