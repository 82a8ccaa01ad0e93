import { strict as assert } from 'node:assert';
import { BudgetBook, EXPIRY_SLACK_MS, MEMBER_SILENT_MS, coordinatorTiming, type Split } from '../../../src/cluster/budget-plan';
import type { BudgetDemand } from '../../../src/nats/payloads';

/**
 * The budget coordinator's arithmetic without NATS or timers: a fake clock (`t`) and fake
 * members that acknowledge whatever they are granted. Global limit 20 per 200 ms (100/s),
 * lease TTL 1.6 s, grants live 600 ms.
 */
describe('BudgetBook: the budget coordinator’s split and grant arithmetic (fake clock)', () => {
  const GLOBAL = { count: 20, windowMs: 200 };
  const W = GLOBAL.windowMs;
  let t: number;
  let book: BudgetBook;

  beforeEach(() => {
    t = 1_000_000;
    book = new BudgetBook({ global: GLOBAL, leaseTtlMs: 1_600, grantLifeMs: 600 }, t);
  });

  const report = (holder: string, demand: number, extra: Partial<BudgetDemand> = {}) =>
    book.report({ holder, instance: holder, demand, share: book.cur.get(holder) ?? 1, at: t, granted: book.acked.has(holder), ...extra }, t);
  /** Every member acknowledges its grant; `freeAt` for the ones that shrank. */
  const ackAll = (split: Split, freeAt: (holder: string) => number | null = () => null) => {
    for (const g of split.grants) book.acknowledged(split, g, { ok: true, share: g.share, free_at: g.share < g.prev ? freeAt(g.holder) : null }, t);
  };
  const shares = (split: Split) => Object.fromEntries(split.grants.map((g) => [g.holder, g.share]));
  /** What may be in use now, summed over every process the book knows. */
  const inUse = () => [...new Set([...book.cur.keys(), ...book.pending.keys()])].reduce((a, h) => a + book.reserved(h, t), 0);

  it('splits the capacity by demand, keeps one floor free for a joiner, and never reserves more than the limit', () => {
    // Both ran on a previous coordinator's grants: they may hold more than they last reported.
    assert.deepEqual(report('a:1', 50, { granted: true }), { split: true, settled: false }, 'a process that finds demand asks for a split at once');
    assert.deepEqual(report('a:1', 50, { granted: true }), { split: false, settled: false });
    report('b:1', 50, { granted: true });
    book.elected(t);
    // Right after an election the members' shares are what they reported: nobody grows before acknowledging.
    const first = book.split(t);
    assert.equal(first.known, false);
    assert.deepEqual(shares(first), { 'a:1': 1, 'b:1': 1 });
    assert.equal(first.waitingToGrow, true);
    ackAll(first);
    assert.equal(book.nextSplitIn(first, t), 0, 'the acknowledgements were what growth waited for: split again now');
    const second = book.split(t);
    assert.deepEqual(shares(second), { 'a:1': 10, 'b:1': 9 }, 'one floor (1) of 20 stays free');
    assert.ok(inUse() <= GLOBAL.count);
    ackAll(second);
    assert.equal(second.expiresAt - second.issuedAt, 600);
  });

  it('after granting stopped and resumed (an election), the split counts each member’s demand from before for two windows, so the first one back does not take the whole budget', () => {
    report('a:1', 50);
    report('b:1', 50);
    book.elected(t);
    ackAll(book.split(t));
    const before = book.split(t);
    assert.deepEqual(shares(before), { 'a:1': 10, 'b:1': 9 });
    ackAll(before);
    book.paused(t, false);
    // The election fenced both processes' shards: their rows went back, their demand fell to 0; a claims first.
    t += 3_000;
    report('a:1', 50);
    report('b:1', 0);
    book.paused(t, true);
    const resumed = book.split(t);
    assert.deepEqual(shares(resumed), { 'a:1': 10, 'b:1': 9 }, 'b keeps its share while it claims again');
    ackAll(resumed);
    t += 2 * W;
    report('a:1', 50);
    report('b:1', 0);
    const later = book.split(t);
    assert.ok(shares(later)['b:1']! <= 1, 'two windows on, the demand reported counts again (b shrinks to the floor)');
    assert.ok(inUse() <= GLOBAL.count);
  });

  it('an increase comes only from what nobody may use: a shrunk process keeps its old share reserved until its free_at', () => {
    report('a:1', 50);
    book.elected(t);
    ackAll(book.split(t));
    let s = book.split(t);
    assert.equal(shares(s)['a:1'], 19, 'alone, a takes all but the floor');
    ackAll(s);
    t += 100;
    report('b:1', 50);
    s = book.split(t);
    // a shrinks (someone needs the room); b cannot grow while a's sends under 19 may still be in its window.
    assert.deepEqual(shares(s), { 'a:1': 10, 'b:1': 1 });
    assert.ok(inUse() <= GLOBAL.count, 'the pending decrease still counts as 19 until acknowledged');
    const freeAt = t + 150;
    ackAll(s, () => freeAt);
    assert.deepEqual(book.held.get('a:1'), [{ share: 19, until: freeAt + 50 }]);
    assert.equal(book.lastDecreaseAt, 0, 'a shrink of a known size holds back only its own old share, not every increase');
    t = freeAt + 49;
    s = book.split(t);
    assert.equal(shares(s)['b:1'], 1, 'a may still hold 19');
    assert.equal(s.waitingToGrow, true);
    assert.equal(book.nextSplitIn(s, t), 11, 'split again once the old share is free');
    ackAll(s);
    t += 1;
    s = book.split(t);
    assert.deepEqual(shares(s), { 'a:1': 10, 'b:1': 9 });
    ackAll(s);
    assert.ok(inUse() <= GLOBAL.count);
  });

  it('an unacknowledged grant stays reserved until it expires; a silent member is dropped', () => {
    report('a:1', 50);
    book.elected(t);
    ackAll(book.split(t));
    const s = book.split(t);
    assert.equal(shares(s)['a:1'], 19);
    // No answer: a may or may not use 19 until the grant expires.
    for (const g of s.grants) book.acknowledged(s, g, undefined, t);
    assert.equal(book.reserved('a:1', t + 599), 19);
    assert.equal(book.reserved('a:1', t + 600), 0, 'expired: neither the old share (expired too) nor the grant');
    t += MEMBER_SILENT_MS + 1;
    report('b:1', 50);
    assert.deepEqual(
      book.split(t).grants.map((g) => g.holder),
      ['b:1'],
      'a stopped reporting: no grant for it',
    );
  });

  it('a process leaving frees its share once its sends leave its window; a free_at too far ahead is ignored', () => {
    report('a:1', 50);
    report('b:1', 50);
    book.elected(t);
    ackAll(book.split(t));
    ackAll(book.split(t));
    report('b:1', 0, { leaving: true, free_at: t + 3 * W });
    assert.ok(book.members.has('b:1'), 'a free_at more than two windows ahead is not believed');
    report('b:1', 0, { leaving: true, free_at: t + 100 });
    assert.ok(!book.members.has('b:1') && !book.cur.has('b:1'));
    assert.equal(book.lastDecreaseAt, t + 100 - W);
  });

  it('a flood waits for every member’s count at its instant, then lowers the rate under what the server took', () => {
    report('a:1', 50, { accepted: 12 });
    report('b:1', 50, { accepted: 6 });
    book.elected(t);
    const at = t - 10;
    assert.equal(book.startFlood(at, 'a:1'), 'wait');
    assert.equal(book.startFlood(at + 1, 'b:1'), 'busy', 'one flood at a time');
    assert.deepEqual(report('a:1', 50, { accepted: 10, accepted_at: at }), { split: false, settled: false });
    assert.deepEqual(report('b:1', 50, { accepted: 5, accepted_at: at }), { split: false, settled: true });
    assert.equal(book.members.get('a:1')!.accepted, 12, 'a flood answer does not replace the periodic count');
    const th = book.throttle(t, book.floodCounted());
    assert.equal(th.atFlood, 15);
    assert.equal(th.recent, 18);
    assert.equal(th.trusted, false, 'the counts at the instant are more than 5 % below the reports');
    assert.ok(th.rate < th.before && th.rate < 100);
    assert.equal(book.flood, null);
    assert.ok(book.capacity() < GLOBAL.count, 'the capacity follows the rate');
    const s = book.split(t);
    assert.ok(s.grants.reduce((a, g) => a + g.share, 0) <= book.capacity());
  });

  it('a new coordinator starts from the lowest rate any member heard', () => {
    report('a:1', 50, { rate: 80 });
    report('b:1', 50, { rate: 60 });
    book.elected(t);
    assert.equal(book.rate.rate, 60);
    assert.equal(book.status(true, t).processes.length, 2);
  });

  it('the timing keeps a grant inside the lease: fence time + grant life + one window + slack ≤ TTL; renewals every TTL/12', () => {
    for (const [ttl, w] of [
      [6_000, 1_000],
      [3_000, 1_000],
      [1_600, 200],
      [1_400, 200],
    ] as const) {
      const { grantLifeMs, fenceAfterMs, renewEveryMs } = coordinatorTiming(ttl, w);
      assert.ok(grantLifeMs >= 250, `grants outlive a round (TTL ${ttl})`);
      assert.ok(fenceAfterMs + grantLifeMs + w + EXPIRY_SLACK_MS <= ttl, `TTL ${ttl}, window ${w}`);
      assert.ok(fenceAfterMs >= 2 * renewEveryMs, `a renewal or two may fail before the coordinator stops granting (TTL ${ttl})`);
    }
    assert.deepEqual(coordinatorTiming(6_000, 1_000), { grantLifeMs: 1_000, fenceAfterMs: 3_750, renewEveryMs: 500 }, 'the defaults');
  });
});
