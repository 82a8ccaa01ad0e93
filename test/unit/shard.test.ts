import assert from 'node:assert/strict';
import { isGroupChat, shardOf } from '../../src/outbox/shard';

describe('outbox/shard', () => {
  it('is CRC32 of the decimal id modulo the count (what MariaDB computes)', () => {
    // CRC32("123456789") = 0xCBF43926, the standard check value.
    assert.equal(shardOf(123456789, 64), 0xcbf43926 % 64);
    assert.equal(shardOf(123456789, 1000), 0xcbf43926 % 1000);
  });

  it('is deterministic and in range, for private and group ids', () => {
    const ids = [1, 2, 777000, 123456789, 2 ** 40 + 1, -1, -4242, -1001234567890];
    for (const n of [1, 2, 7, 64, 4096]) {
      for (const id of ids) {
        const s = shardOf(id, n);
        assert.ok(Number.isInteger(s) && s >= 0 && s < n, `shardOf(${id}, ${n}) = ${s}`);
      }
    }
    assert.equal(shardOf(42, 1), 0);
  });

  it('a group id and its absolute value are different keys', () => {
    const differ = [11, 12, 13, 14, 15, 16].filter((id) => shardOf(id, 64) !== shardOf(-id, 64));
    assert.ok(differ.length > 0);
  });

  it('spreads 10,000 sequential ids over 64 shards within ±40% of the mean', () => {
    for (const start of [1, 100_000_000, -1_000_000_000_000]) {
      const counts = new Array<number>(64).fill(0);
      for (let i = 0; i < 10_000; i++) counts[shardOf(start + i, 64)]!++;
      const mean = 10_000 / 64;
      for (const [shard, c] of counts.entries()) {
        assert.ok(c >= mean * 0.6 && c <= mean * 1.4, `start ${start}: shard ${shard} has ${c} (mean ${mean})`);
      }
    }
  });

  it('isGroupChat: negative ids are groups', () => {
    assert.equal(isGroupChat(-1001234567890), true);
    assert.equal(isGroupChat(-5), true);
    assert.equal(isGroupChat(5), false);
  });
});
