import assert from 'node:assert/strict';
import { ChatLimiter, windowAt } from '../../src/limits/chat-limits';
import { seedFor } from '../../actors/pipeline/pipeline';

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

describe('per-chat limits (ChatLimiter)', () => {
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
    const windows = old.handoff(T0 + 10);
    assert.deepEqual(windows, { '42': [T0 + 1] });
    const next = new ChatLimiter(settings, { kind: 'exact', at: T0 + 10, chats: windows, complete: true });
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

  it("windowAt keeps the ceiling's window length", () => {
    assert.deepEqual(windowAt(10 / 60, { count: 20, windowMs: 60_000 }), { count: 10, windowMs: 60_000 });
    assert.deepEqual(windowAt(9.8 / 60, { count: 20, windowMs: 60_000 }), { count: 9, windowMs: 60_000 });
    assert.deepEqual(windowAt(0.5, { count: 1, windowMs: 1_000 }), { count: 1, windowMs: 2_000 });
  });
});
