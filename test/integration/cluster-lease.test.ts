import assert from 'node:assert/strict';
import { connect, type NatsConnection } from 'nats';
import { encodeValue, openClusterBucket } from '../../src/cluster/kv';
import { KvLease, fenceAfterMs, leaseHolder } from '../../src/cluster/lease';
import type { AppError } from '../../src/errors';
import { KvLeaseSingleton } from '../../src/cluster/singleton';
import { NATS_URL, uniq, waitFor } from '../helpers/services';

describe('KV leases on nats-server (JetStream KV)', function () {
  this.timeout(30_000);
  let nc: NatsConnection;
  let bucket: string;
  beforeEach(async () => {
    nc = await connect({ servers: NATS_URL });
    bucket = uniq('lease');
  });
  afterEach(async () => {
    await nc
      .jetstream()
      .views.kv(bucket)
      .then((kv) => kv.destroy())
      .catch(() => undefined);
    await nc.close();
  });

  it('one holder at a time; CAS renewal; release frees it at once', async () => {
    const kv = await openClusterBucket(nc, bucket, { leaseTtlMs: 2_000, replicas: 1 });
    const a = new KvLease(kv, 'shard.1', { holder: 'a', instance: 'a', since: 0 }, 1_000);
    const b = new KvLease(kv, 'shard.1', { holder: 'b', instance: 'b', since: 0 }, 1_000);
    assert.equal(await a.acquire(), true);
    assert.equal(await b.acquire(), false, 'kv.create fails while a holds it');
    assert.equal(await a.renew(), true);
    assert.equal((await leaseHolder(kv, 'shard.1'))?.holder, 'a');
    await a.release();
    assert.equal(await leaseHolder(kv, 'shard.1'), undefined);
    assert.equal(await b.acquire(), true, 'free after the release (delete marker)');
    assert.equal(await a.renew(), false, 'a lost it: renew by compare-and-set fails');
  });

  it('a renewal whose answer was lost but which was written (the server died after committing it) does not lose the lease; a write by anyone else does', async () => {
    const kv = await openClusterBucket(nc, bucket, { leaseTtlMs: 2_000, replicas: 1 });
    const value = { holder: 'a', instance: 'a', since: 7 };
    const a = new KvLease(kv, 'shard.9', value, 1_000);
    assert.equal(await a.acquire(), true);
    // The lost renewal: our exact value, one revision on, and we never saw its answer.
    const lost = await kv.update('shard.9', encodeValue(value), a.currentRevision);
    assert.equal(await a.renew(), true, 'the key holds our own write: still ours');
    assert.ok(a.currentRevision > lost);
    // The same holder name with another value is not our write (another lease object, or a forgery).
    await kv.update('shard.9', encodeValue({ ...value, since: 8 }), a.currentRevision);
    assert.equal(await a.renew(), false);
    assert.equal(a.held, false);
  });

  it('an unrenewed lease is taken over once the taker saw it unchanged for the TTL, not before; the old holder had fenced itself', async () => {
    const kv = await openClusterBucket(nc, bucket, { leaseTtlMs: 1_000, replicas: 1 });
    const a = new KvLease(kv, 'shard.2', { holder: 'a', instance: 'a', since: 0 }, fenceAfterMs(1_000));
    assert.equal(await a.acquire(), true);
    assert.equal(a.valid(), true);
    const b = new KvLease(kv, 'shard.2', { holder: 'b', instance: 'b', since: 0 }, fenceAfterMs(1_000));
    const firstTry = Date.now();
    assert.equal(await b.acquire(), false, 'held: b only starts counting');
    await waitFor(() => b.acquire(), 10_000, 100, 'the holder to be silent for the TTL');
    const tookAfter = Date.now() - firstTry;
    assert.ok(tookAfter >= 1_000, `taken over after ${tookAfter} ms of silence, not sooner than the TTL`);
    assert.equal(b.acquiredBy, 'taken-over');
    assert.equal(b.takenFrom, 'a');
    assert.equal(a.valid(), false, 'a fenced itself before (no renewal for longer than the fence time)');
    assert.equal(await a.renew(), false, 'a learns it lost the key (compare-and-set fails)');
    assert.equal((await leaseHolder(kv, 'shard.2'))?.holder, 'b');
  });

  it('a holder that stopped acting on its lease takes its own key back once the TTL passed since its last write, not sooner', async () => {
    const kv = await openClusterBucket(nc, bucket, { leaseTtlMs: 1_000, replicas: 1 });
    const a = new KvLease(kv, 'shard.3', { holder: 'a', instance: 'a', since: 0 }, fenceAfterMs(1_000));
    // Taken before the write: the lease counts the TTL from when its write started, not from the answer.
    const wroteAt = Date.now();
    assert.equal(await a.acquire(), true);
    a.forget();
    const again = new KvLease(kv, 'shard.3', { holder: 'a', instance: 'a', since: 1 }, fenceAfterMs(1_000));
    assert.equal(await again.acquire(), false, 'what it did under the old lease may still be running');
    await waitFor(() => again.acquire(), 5_000, 50, 'the TTL since its own last write');
    assert.ok(Date.now() - wroteAt >= 1_000);
    assert.equal(again.acquiredBy, 'retaken');
  });

  it('refuses to reuse a bucket with another TTL or replica count, naming both values and the migration step', async () => {
    await openClusterBucket(nc, bucket, { leaseTtlMs: 8_000, replicas: 1 });
    await assert.rejects(openClusterBucket(nc, bucket, { leaseTtlMs: 9_000, replicas: 1 }), (e: AppError) => {
      assert.equal(e.code, 'NATS_STREAM_MISMATCH');
      assert.match(e.message, /max_age 24000 ms but SHARD_LEASE_TTL_MS=9000 .* asks for 27000 ms/);
      assert.match(e.message, new RegExp(`nats stream edit KV_${bucket} --max-age=27000ms`));
      return true;
    });
    await assert.rejects(openClusterBucket(nc, bucket, { leaseTtlMs: 8_000, replicas: 3 }), (e: AppError) => {
      assert.equal(e.code, 'NATS_STREAM_MISMATCH');
      assert.match(e.message, /replicas 1 but NATS_REPLICAS asks for 3/);
      assert.match(e.message, new RegExp(`nats stream edit KV_${bucket} --replicas=3`));
      assert.match(e.message, /docs\/deploy\.md/);
      return true;
    });
  });

  it('KvLeaseSingleton: one leader; it renews on its own; another takes over after release', async () => {
    const kv = await openClusterBucket(nc, bucket, { leaseTtlMs: 1_500, replicas: 1 });
    const s1 = new KvLeaseSingleton(kv, 'job', 'p1', 'p1', 1_500);
    const s2 = new KvLeaseSingleton(kv, 'job', 'p2', 'p2', 1_500);
    assert.equal(await s1.isLeader(), true);
    assert.equal(await s2.isLeader(), false);
    await new Promise((r) => setTimeout(r, 2_500)); // longer than the TTL: only the self-renewal keeps it
    assert.equal(await s1.isLeader(), true, 'still leader thanks to its own renewals');
    assert.equal(await s2.isLeader(), false);
    await s1.release();
    assert.equal(await s2.isLeader(), true);
    await s2.release();
  });
});
