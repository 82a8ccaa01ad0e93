import { strict as assert } from 'node:assert';
import { connect, type KV, type NatsConnection } from 'nats';
import { spawnShardOwner, type OwnedShards, type ShardOwnerMsg, type ShardOwnerStatus } from '../../../../actors/cluster/shard-owner';
import type { OwnResult } from '../../../../actors/pipeline/pipeline';
import { encodeValue } from '../../../../src/cluster/kv';
import { openClusterBucket } from '../../../../src/cluster/kv';
import { leaseHolder } from '../../../../src/cluster/lease';
import { ShardLeaseBoard } from '../../../../src/cluster/held-shards';
import { Metrics } from '../../../../src/metrics';
import { query, startActorSystem, stopActorSystem, type ActorRef, type ActorSystem, type ReplyTo } from '../../../../src/runtime/actor';
import { NATS_URL, captureLogger, uniq, waitFor } from '../../../helpers/services';
import { deferred, type Deferred } from '../../../helpers/deferred';

/**
 * The shard owner's protocol with a fake pipeline (the OwnedShards port: the test answers
 * each own/fence call). It takes a real KV bucket, so it runs against the local
 * nats-server on a fresh bucket per test. TTL 1 s: a tick every 250 ms.
 */
describe('shard-owner actor (fake pipeline, KV on the local nats-server)', function () {
  this.timeout(10_000);
  const TTL = 1_000;
  let nc: NatsConnection;
  let kv: KV;
  let bucket: string;
  let system: ActorSystem;
  let owner: ActorRef<ShardOwnerMsg>;
  let owns: Array<{ shards: number[]; d: Deferred<OwnResult>; kvAtCall: string[] }>;
  let fences: number[][];
  let autoOwn: boolean;
  let previousOwners: OwnResult['previousOwners'];
  let keepAlive: NodeJS.Timeout | undefined;
  let board: ShardLeaseBoard;

  /** The shard keys 'a:1' holds now (read one by one: the test knows the four keys). */
  const heldKeys = async (): Promise<string[]> => {
    const out: string[] = [];
    for (let s = 0; s < 4; s++) if ((await leaseHolder(kv, `shard.${s}`))?.holder === 'a:1') out.push(`shard.${s}`);
    return out;
  };

  beforeEach(async () => {
    nc = await connect({ servers: NATS_URL });
    bucket = uniq('owner');
    kv = await openClusterBucket(nc, bucket, { leaseTtlMs: TTL, replicas: 1 });
    owns = [];
    fences = [];
    autoOwn = true;
    previousOwners = [];
    const pipeline: OwnedShards = {
      own: async (shards) => {
        const d = deferred<OwnResult>();
        const auto = autoOwn;
        owns.push({ shards: [...shards], d, kvAtCall: await heldKeys() });
        if (auto) d.resolve({ owned: [...shards].sort((a, b) => a - b), released: 0, reclaimed: 0, previousOwners });
        return d.promise;
      },
      fence: (shards) => {
        fences.push([...shards]);
        return Promise.resolve({ released: 0 });
      },
    };
    const { log } = captureLogger();
    board = new ShardLeaseBoard();
    system = startActorSystem('shard-owner-test', log);
    owner = spawnShardOwner(system, {
      kv,
      pipeline,
      log,
      metrics: new Metrics(),
      holder: 'a:1',
      instance: 'a',
      shardCount: 4,
      leaseTtlMs: TTL,
      formationMs: 0,
      board,
    });
  });
  afterEach(async () => {
    if (keepAlive) clearInterval(keepAlive);
    keepAlive = undefined;
    stopActorSystem(system);
    await kv.destroy().catch(() => undefined);
    await nc.close();
  });

  const status = () => query<ShardOwnerMsg, ShardOwnerStatus>(owner, (replyTo) => ({ type: 'status', replyTo }), 3000);
  const member = (holder: string) =>
    kv.put(`member.${holder.replace(/[^-/_=.a-zA-Z0-9]/g, '_')}`, encodeValue({ holder, instance: holder, since: Date.now() }));

  it('alone, it leases every shard, fences them in the pipeline, and reports the takeovers the pipeline found', async () => {
    previousOwners = [{ shard: 2, owner: 'dead:7' }];
    await waitFor(() => owns.length >= 1, 3000, 5, 'the pipeline told to own');
    assert.deepEqual([...owns[0]!.shards].sort(), [0, 1, 2, 3]);
    assert.deepEqual(owns[0]!.kvAtCall, ['shard.0', 'shard.1', 'shard.2', 'shard.3'], 'the leases are held before the pipeline claims');
    const s = await status();
    assert.deepEqual(s.owned, [0, 1, 2, 3]);
    assert.ok(s.members.includes('a:1'));
    assert.deepEqual(
      s.takeovers.map((t) => [t.shard, t.from]),
      [[2, 'dead:7']],
    );
    assert.equal((await kv.get('member.a_1'))?.operation, 'PUT', 'its member key heartbeats');
  });

  it('a new member: surplus shards are drained in the pipeline first, their leases deleted only after', async () => {
    await waitFor(() => owns.length === 1, 3000, 5, 'all four owned');
    autoOwn = false;
    await member('b:1');
    keepAlive = setInterval(() => void member('b:1').catch(() => undefined), 200);
    await waitFor(() => owns.length >= 2, 3000, 5, 'the handoff');
    const handoff = owns[1]!;
    assert.deepEqual([...handoff.shards].sort(), [0, 1], 'a keeps its quota; b gets shards 2 and 3');
    // The pipeline has not finished draining: the leases of 2 and 3 are still ours.
    assert.deepEqual(await heldKeys(), ['shard.0', 'shard.1', 'shard.2', 'shard.3']);
    handoff.d.resolve({ owned: [0, 1], released: 5, reclaimed: 0, previousOwners: [] });
    await waitFor(async () => (await heldKeys()).length === 2, 3000, 5, 'surplus leases deleted');
    assert.deepEqual(await heldKeys(), ['shard.0', 'shard.1']);
    assert.deepEqual((await status()).owned, [0, 1]);
  });

  it('a lease another process overwrote is fenced in the pipeline at the next renewal', async () => {
    await waitFor(async () => (await status()).owned.length === 4, 3000, 5, 'all four owned');
    await kv.put('shard.3', encodeValue({ holder: 'x:9', instance: 'x', since: Date.now() }));
    await waitFor(() => fences.length >= 1, 3000, 5, 'fenced');
    assert.deepEqual(fences[0], [3]);
    assert.ok(!(await status()).owned.includes(3));
  });

  it('leave: the pipeline gives everything back, then the leases and the member key are deleted', async () => {
    // The status answers while the pipeline call is still in flight: wait for the call itself.
    await waitFor(async () => owns.length >= 1 && (await status()).owned.length === 4, 3000, 5, 'all four owned');
    const n = owns.length;
    await query(owner, (replyTo: ReplyTo<void>): ShardOwnerMsg => ({ type: 'leave', replyTo }), 3000);
    assert.deepEqual(owns[n]!.shards, []);
    assert.equal(owns[n]!.kvAtCall.length, 4, 'leases still held while the pipeline drained');
    assert.deepEqual(await heldKeys(), []);
    assert.equal(await leaseHolder(kv, 'member.a_1'), undefined);
  });

  it('its I/O runs outside the mailbox: status answers while the pipeline call hangs; leave waits for it, then drains', async () => {
    autoOwn = false;
    await waitFor(() => owns.length === 1, 3000, 5, 'the first pipeline call');
    // The pipeline has not answered: the mailbox is free all the same.
    assert.deepEqual((await status()).owned, [0, 1, 2, 3]);
    let left = false;
    const leaving = query(owner, (replyTo: ReplyTo<void>): ShardOwnerMsg => ({ type: 'leave', replyTo }), 3000).then(() => {
      left = true;
    });
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(owns.length, 1, 'the drain does not overtake the call in flight');
    assert.equal(left, false);
    owns[0]!.d.resolve({ owned: [0, 1, 2, 3], released: 0, reclaimed: 0, previousOwners: [] });
    await waitFor(() => owns.length === 2, 3000, 5, 'the drain');
    assert.deepEqual(owns[1]!.shards, []);
    owns[1]!.d.resolve({ owned: [], released: 0, reclaimed: 0, previousOwners: [] });
    await leaving;
    assert.deepEqual(await heldKeys(), []);
  });

  it('renewals failing past the fence time (an election): the senders are held back, the pipeline keeps the shards and their rows; the first renewal lets them go on', async () => {
    await waitFor(async () => (await status()).owned.length === 4, 3000, 5, 'all four owned');
    const callsBefore = owns.length;
    const update = kv.update.bind(kv);
    let failing = true;
    kv.update = (...args: Parameters<KV['update']>) => (failing ? Promise.reject(Object.assign(new Error('503'), { code: '503' })) : update(...args));
    await waitFor(async () => (await status()).fenced.length === 4, 3000, 5, 'fenced');
    assert.equal(board.maySendFor(0, Date.now()), false, 'the senders may not send for a fenced shard');
    assert.deepEqual(fences, [], 'the pipeline is not told to give rows back: the shards are still ours');
    failing = false;
    await waitFor(async () => (await status()).fenced.length === 0, 3000, 5, 'resumed');
    assert.equal(board.maySendFor(0, Date.now()), true, 'the senders may send again');
    assert.deepEqual(fences, []);
    // No pipeline call took a shard away (a call owning fewer than four would drain their senders).
    assert.deepEqual(
      owns.slice(callsBefore).filter((o) => o.shards.length < 4),
      [],
    );
    assert.deepEqual((await status()).owned, [0, 1, 2, 3]);
  });

  it('a lease lost while a pipeline call was in flight: the pipeline gives it back, and no later call owns it again', async () => {
    autoOwn = false;
    await waitFor(() => owns.length === 1, 3000, 5, 'the first pipeline call, left hanging');
    await kv.put('shard.3', encodeValue({ holder: 'x:9', instance: 'x', since: Date.now() }));
    await waitFor(() => fences.length >= 1, 3000, 5, 'fenced');
    assert.deepEqual(fences[0], [3]);
    // The pipeline answers the call it took before the loss; it released shard 3 after.
    owns[0]!.d.resolve({ owned: [0, 1, 2, 3], released: 0, reclaimed: 0, previousOwners: [] });
    autoOwn = true;
    await waitFor(async () => (await status()).owned.join() === '0,1,2', 3000, 5, 'three held');
    assert.ok(
      owns.slice(1).every((o) => !o.shards.includes(3)),
      'no later call gives the pipeline shard 3',
    );
  });
});
