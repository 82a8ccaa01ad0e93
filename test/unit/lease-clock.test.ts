import assert from 'node:assert/strict';
import { LeaseClock, keyMaxAgeMs } from '../../src/cluster/kv';
import { fenceAfterMs } from '../../src/cluster/lease';

describe('LeaseClock: when a lease holder counts as silent', () => {
  const make = (ttl = 6_000): { clock: LeaseClock; at: (ms: number) => void } => {
    let now = 1_000_000;
    return { clock: new LeaseClock(ttl, () => now), at: (ms) => void (now = 1_000_000 + ms) };
  };

  it('a revision seen unchanged for the whole TTL is stale; a new revision restarts the count', () => {
    const { clock, at } = make();
    assert.equal(clock.stale('shard.1', 5), false);
    at(5_999);
    assert.equal(clock.stale('shard.1', 5), false);
    at(6_000);
    assert.equal(clock.stale('shard.1', 5), true);
    assert.equal(clock.stale('shard.1', 6), false, 'renewed: counting starts again');
    at(11_999);
    assert.equal(clock.stale('shard.1', 6), false);
  });

  it('a write refused with 503 restarts every count (an election nobody can write through makes nobody silent); a timeout does not', () => {
    const { clock, at } = make();
    clock.observe('shard.1', 5);
    clock.observe('shard.2', 9);
    at(4_000);
    clock.trouble(Object.assign(new Error('TIMEOUT'), { code: 'TIMEOUT' })); // says nothing about the others
    clock.trouble(Object.assign(new Error('503'), { code: '503' })); // our heartbeat: the bucket has no leader
    at(9_000);
    assert.equal(clock.stale('shard.1', 5), false, 'only 5 s of working KV so far');
    assert.equal(clock.stale('shard.2', 9), false);
    at(10_000);
    assert.equal(clock.stale('shard.1', 5), true);
    const other = make();
    other.clock.observe('k', 1);
    other.at(3_000);
    other.clock.trouble(Object.assign(new Error('TIMEOUT'), { code: 'TIMEOUT' }));
    other.at(6_000);
    assert.equal(other.clock.stale('k', 1), true, 'a timeout alone restarts nothing');
  });

  it('an older revision (a read from a lagging replica) neither restarts nor resets the count', () => {
    const { clock, at } = make();
    clock.observe('member.x', 7);
    at(3_000);
    assert.equal(clock.observe('member.x', 5), 3_000, 'the lagging read changes nothing');
    assert.equal(clock.newest('member.x'), 7);
    at(6_000);
    assert.equal(clock.stale('member.x', 6), true, 'revision 7 has been the newest for the TTL');
  });

  it('our own key: taken back only a TTL after our own last write', () => {
    const { clock, at } = make();
    clock.wrote('budget.coordinator', 1_000_000);
    at(5_999);
    assert.equal(clock.mayRetake('budget.coordinator', 3), false);
    at(6_000);
    assert.equal(clock.mayRetake('budget.coordinator', 3), true);
  });

  it('the fence time leaves a margin inside the TTL; keys outlive leases by far', () => {
    assert.equal(fenceAfterMs(6_000), 5_000);
    assert.equal(fenceAfterMs(3_000), 2_500);
    assert.ok(fenceAfterMs(600_000) < 600_000);
    assert.equal(keyMaxAgeMs(6_000), 18_000);
    assert.equal(keyMaxAgeMs(3_000), 15_000);
  });
});
