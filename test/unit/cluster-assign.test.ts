import assert from 'node:assert/strict';
import { assignShards } from '../../src/cluster/assign';
import { computeShares } from '../../src/cluster/shares';

describe('assignShards', () => {
  const counts = (m: Map<number, string>) => {
    const c = new Map<string, number>();
    for (const o of m.values()) c.set(o, (c.get(o) ?? 0) + 1);
    return c;
  };

  it('gives every member ⌊S/N⌋ or ⌈S/N⌉ shards, all shards placed', () => {
    for (const n of [1, 2, 3, 4, 5, 7, 64, 65]) {
      const members = Array.from({ length: n }, (_, i) => `m${i}`);
      const a = assignShards(64, members, new Map());
      assert.equal(a.size, 64);
      for (const c of counts(a).values()) assert.ok(c === Math.floor(64 / n) || c === Math.ceil(64 / n), `n=${n}: ${c}`);
    }
  });

  it('moves only what balance requires when a member joins', () => {
    const three = assignShards(64, ['a', 'b', 'c'], new Map());
    const four = assignShards(64, ['a', 'b', 'c', 'd'], three);
    let moved = 0;
    for (const [s, o] of four) if (three.get(s) !== o) moved++;
    assert.equal(moved, 16, 'exactly the 16 shards the newcomer needs');
    assert.ok([...four].filter(([, o]) => o === 'd').length === 16);
  });

  it("gives a dead member's shards to the living, keeping theirs", () => {
    const before = assignShards(64, ['a', 'b', 'c'], new Map());
    const after = assignShards(64, ['a', 'c'], before);
    for (const [s, o] of before) if (o !== 'b') assert.equal(after.get(s), o);
    assert.ok(![...after.values()].includes('b'));
    assert.equal(after.size, 64, 'every shard placed');
    assert.deepEqual([...counts(after).values()].sort(), [32, 32], "b's shards split between the living");
  });

  it('is the same whatever order members are listed in', () => {
    assert.deepEqual([...assignShards(10, ['x', 'y', 'z'], new Map())], [...assignShards(10, ['z', 'x', 'y'], new Map())]);
  });
});

describe('computeShares', () => {
  const sum = (m: Map<string, number>) => [...m.values()].reduce((a, b) => a + b, 0);

  it('never exceeds the capacity, and uses all of it when demand does', () => {
    for (const demands of [
      [300, 0, 0],
      [100, 100, 100],
      [500, 500, 1],
      [5, 7, 3000],
    ]) {
      const m = new Map(demands.map((d, i) => [`p${i}`, d]));
      assert.equal(sum(computeShares(300, m)), 300, JSON.stringify(demands));
    }
    const idle = computeShares(
      300,
      new Map([
        ['a', 0],
        ['b', 0],
        ['c', 0],
      ]),
    );
    assert.deepEqual([...idle.values()], [1, 1, 1], 'idle: floors only, the rest unallocated');
  });

  it('gives all but a small floor to the one process with demand', () => {
    const s = computeShares(
      300,
      new Map([
        ['a', 300],
        ['b', 0],
        ['c', 0],
      ]),
    );
    assert.ok(s.get('a')! >= 0.95 * 300, `a got ${s.get('a')}`);
    assert.ok(s.get('b')! >= 1 && s.get('c')! >= 1, 'idle processes keep a floor');
  });

  it('splits evenly under equal demand, max-min fair under unequal demand', () => {
    assert.deepEqual(
      [
        ...computeShares(
          300,
          new Map([
            ['a', 300],
            ['b', 300],
            ['c', 300],
          ]),
        ).values(),
      ],
      [100, 100, 100],
    );
    const s = computeShares(
      300,
      new Map([
        ['a', 20],
        ['b', 1000],
        ['c', 1000],
      ]),
    );
    assert.equal(s.get('a'), 20);
    assert.equal(s.get('b')! + s.get('c')!, 280);
    assert.ok(Math.abs(s.get('b')! - s.get('c')!) <= 1);
  });
});
