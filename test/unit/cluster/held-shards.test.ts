import { strict as assert } from 'node:assert';
import { HeldShards, ShardLeaseBoard } from '../../../src/cluster/held-shards';
import type { KvLease } from '../../../src/cluster/lease';

/** A lease whose last successful renewal started at `renewedAt`, valid for `fenceMs` after it (KvLease.valid). */
const lease = (renewedAt: number, fenceMs: number): KvLease => ({ valid: (now: number) => now - renewedAt < fenceMs }) as unknown as KvLease;

describe('the senders’ view of the shard leases (ShardLeaseBoard over HeldShards)', () => {
  it('a shard may be sent for only while its lease is valid: at any instant, before the watchdog fenced it', () => {
    const held = new HeldShards();
    held.leases.set(3, lease(1_000, 5_000));
    const board = new ShardLeaseBoard();
    assert.equal(board.maySendFor(3, 1_500), false, 'nothing attached: no');
    board.attach(held);
    assert.ok(board.maySendFor(3, 5_999));
    assert.equal(board.maySendFor(3, 6_000), false, 'past the fence time, though not fenced yet');
    assert.deepEqual([...held.fenced], [], 'the watchdog had not run');
    assert.equal(board.maySendFor(4, 1_500), false, 'a shard not held');
    held.leases.set(3, lease(6_500, 5_000)); // a renewal
    assert.ok(board.maySendFor(3, 7_000), 'a renewal resumes it');
    held.drop([3]);
    assert.equal(board.maySendFor(3, 7_000), false, 'lost');
  });

  it('a restarted owner attaches its own leases; the stopped one detaching later does not unhook them', () => {
    const board = new ShardLeaseBoard();
    const first = new HeldShards();
    const second = new HeldShards();
    second.leases.set(1, lease(0, 5_000));
    board.attach(first);
    board.attach(second);
    board.detach(first);
    assert.ok(board.maySendFor(1, 100));
    board.detach(second);
    assert.equal(board.maySendFor(1, 100), false);
  });
});
