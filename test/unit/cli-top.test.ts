import assert from 'node:assert/strict';
import { bar, duration, rates, renderFrame, type TopSnapshot } from '../../src/cli/top';

const snap = (at: number, sent: [number, number], backlog: Array<[number, number]>): TopSnapshot => ({
  at,
  shardCount: 4,
  map: { 0: 'a:1', 1: 'a:1', 2: 'b:1' },
  windowMs: 1_000,
  botRate: { now: 27.5, ceiling: 30 },
  processes: [
    {
      instance: 'a',
      holder: 'a:1',
      owned: [0, 1],
      queued: 5,
      inFlight: 1,
      sent: sent[0],
      failed: 2,
      throttled: 3,
      throttledByScope: { chat: 2, group: 0, global: 1 },
      budget: { share: 20, mode: 'granted' },
    },
    {
      instance: 'b',
      holder: 'b:1',
      owned: [2],
      queued: 0,
      inFlight: 0,
      sent: sent[1],
      failed: 0,
      throttled: 4,
      rateLimitedChats: 2,
      budget: { share: 10, mode: 'fallback' },
    },
  ],
  backlogByShard: new Map(backlog),
  oldestByShard: new Map(backlog.map(([s]) => [s, at - 90_000 + s * 1000])),
});

describe('cli top: rendering (pure)', () => {
  it('plain text when not a terminal: no escape codes, ASCII bars, rates vs shares, backlog with ETA', () => {
    const a = snap(
      0,
      [100, 50],
      [
        [0, 300],
        [1, 100],
        [2, 200],
        [3, 10],
      ],
    );
    const b = snap(
      2_000,
      [140, 60],
      [
        [0, 280],
        [1, 80],
        [2, 190],
        [3, 10],
      ],
    );
    const r = rates(a, b);
    assert.deepEqual(
      [...r],
      [
        ['a:1', 20],
        ['b:1', 5],
      ],
    );
    const lines = renderFrame(b, r, { tty: false, width: 100, sentSinceStart: 50 });
    const text = lines.join('\n');
    assert.ok(!text.includes('\u001b'), 'no escape codes');
    assert.doesNotMatch(text, /[█░]/, 'ASCII only bars');
    assert.match(lines[0]!, /^shop-notify top — 1970-01-01T00:00:02\.000Z — 2 process\(es\), 4 shards$/);
    assert.equal(lines[2], 'bot rate 27.5/s of 30.0/s configured (lowered after 429s)');
    const rowA = lines.find((l) => l.startsWith('a '))!;
    assert.match(rowA, /^a\s+2\s+360\s+5\s+1\s+20\.0\s+20\.0\s+\[############\]\s+3 = 2\/0\/1\s+2\s+1m 30s$/);
    const rowB = lines.find((l) => l.startsWith('b '))!;
    assert.match(rowB, /^b\s+1\s+190\s+0\s+0\s+5\.0\s+10\.0 \(fallback\)\s+\[######\.\.\.\.\.\.\]\s+4, 2 waiting\s+0\s+1m 28s$/);
    assert.match(text, /^\(no owner\)\s+1\s+10\s/m);
    // 560 rows left at 25/s → 22 s.
    assert.match(lines.at(-1)!, /^backlog 560 {2}\[#{3}\.{37}\] {2}50 sent since start, 25\.0\/s, ETA 22s, oldest waiting 1m 30s$/);
  });

  it('terminal bars use block characters; helpers format durations', () => {
    assert.equal(bar(0.5, 4, true), '██░░');
    assert.equal(bar(2, 3, false), '[###]');
    assert.equal(duration(45_000), '45s');
    assert.equal(duration(200_000), '3m 20s');
    assert.equal(duration(7_500_000), '2h 05m');
    assert.equal(duration(Infinity), '∞');
  });
});
