import assert from 'node:assert/strict';
import { connect, type NatsConnection } from 'nats';
import { openClusterBucket } from '../../src/cluster/kv';
import { KvLease, leaseHolder } from '../../src/cluster/lease';
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
    await nc.jetstream().views.kv(bucket).then((kv) => kv.destroy()).catch(() => undefined);
    await nc.close();
  });

  it('one holder at a time; CAS renewal; release frees it at once', async () => {
    const kv = await openClusterBucket(nc, bucket, 2_000);
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

  it('an unrenewed lease expires with the bucket TTL and can be taken', async () => {
    const kv = await openClusterBucket(nc, bucket, 1_000);
    const a = new KvLease(kv, 'shard.2', { holder: 'a', instance: 'a', since: 0 }, 500);
    assert.equal(await a.acquire(), true);
    assert.equal(a.valid(), true);
    const b = new KvLease(kv, 'shard.2', { holder: 'b', instance: 'b', since: 0 }, 500);
    await waitFor(() => b.acquire(), 10_000, 200, 'the key to expire');
    assert.equal(a.valid(), false, 'a fenced itself long before (no renewal for > TTL/2)');
  });

  it('refuses to reuse a bucket with another TTL (reopening would silently keep the old one)', async () => {
    await openClusterBucket(nc, bucket, 2_000);
    await assert.rejects(openClusterBucket(nc, bucket, 5_000), /SHARD_LEASE_TTL_MS=5000 but the existing KV bucket/);
  });

  it('KvLeaseSingleton: one leader; it renews on its own; another takes over after release', async () => {
    const kv = await openClusterBucket(nc, bucket, 1_500);
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
