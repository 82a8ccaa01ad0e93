import assert from 'node:assert/strict';
import { connect, type NatsConnection } from 'nats';
import { TelegramSandbox } from '../../sandbox/server';
import { createTestDb, uniq, waitFor, type TestDb } from '../helpers/services';
import { startWorker, type Worker } from '../helpers/processes';
import { NatsCluster } from '../helpers/nats-cluster';
import { assertExactlyOnceInOrder, clusterStatusOf, clusterWorkerEnv, waitBalanced } from '../helpers/cluster-workers';
import type { ClusterStatus } from '../../src/roles/cluster';

/**
 * The longest election there is: two of three NATS nodes die, so JetStream has no quorum and
 * no lease can be renewed for as long as they stay down, while core NATS on the third node
 * still works. Past the fence time every worker stops sending, but the shards stay its own
 * and so do their claimed rows: nothing is given back to the outbox and claimed again, so
 * the first renewal after the nodes return lets the senders go on where they stopped.
 */
describe('three-node NATS cluster, R3: quorum lost for longer than the fence time', function () {
  this.timeout(120_000);
  let cluster: NatsCluster | undefined;
  let tdb: TestDb | undefined;
  let sandbox: TelegramSandbox | undefined;
  let nc: NatsConnection | undefined;
  const workers: Worker[] = [];

  afterEach(async () => {
    for (const w of workers.splice(0)) {
      w.kill('SIGKILL');
      await w.exited;
    }
    await nc?.close().catch(() => undefined);
    await cluster?.stop();
    await sandbox?.stop();
    await tdb?.drop();
    nc = cluster = sandbox = tdb = undefined;
  });

  const FENCED = /lease not renewed in time: stopped sending/;
  const RESUMED = /fenced shards valid again: sending for them/;

  const N = 2_400;
  /**
   * Two workers on a three-node cluster (R3) delivering a backlog (40 chats × 60 rows at 10/s per chat: ~6 s at
   * full rate); two nodes killed, so every worker ends up on the third, where core NATS works and JetStream does
   * not; resolves once both workers fenced.
   */
  const fencedOnBacklog = async (): Promise<{ ws: Worker[]; bucket: string; before: ClusterStatus; killedAt: number; survivor: string }> => {
    cluster = await NatsCluster.start();
    tdb = await createTestDb('qu');
    sandbox = new TelegramSandbox({ globalRate: 300, chatRate: 10 });
    await sandbox.start();
    const bucket = uniq('qu');
    nc = await connect({ servers: cluster.urls.split(','), maxReconnectAttempts: -1, reconnectTimeWait: 100 });
    const launch = (name: string): Worker => {
      const w = startWorker(clusterWorkerEnv({ tdb: tdb!, sandbox: sandbox!, bucket, name }, { NATS_URL: cluster!.urls, NATS_REPLICAS: '3' }));
      workers.push(w);
      return w;
    };
    const ws = [launch('a'), launch('b')];
    await Promise.all(ws.map((w) => w.waitForLine(/delivery pipeline running/, 60_000)));
    const before = await waitBalanced(nc, bucket, 2);
    const rows = Array.from({ length: N }, (_, i) => ({ telegram_id: 30_000 + (i % 40), message_text: `q-${30_000 + (i % 40)}-${Math.floor(i / 40)}` }));
    for (let i = 0; i < N; i += 500) await tdb.db('telegram_notifications').insert(rows.slice(i, i + 500));
    await sandbox.waitForDelivered(200, 20_000);
    const fencesBefore = ws.map((w) => w.lines.filter((l) => FENCED.test(l)).length);
    await Promise.all(cluster.nodes.slice(0, 2).map((n) => cluster!.kill(n.name)));
    const killedAt = Date.now();
    await Promise.all(ws.map((w, i) => waitFor(() => w.lines.filter((l) => FENCED.test(l)).length > fencesBefore[i]!, 20_000, 20, 'fenced')));
    return { ws, bucket, before, killedAt, survivor: cluster.nodes[2]!.name };
  };
  const sent = async (): Promise<number> =>
    Number(((await tdb!.db('telegram_notifications').where({ status: 'sent' }).count({ n: '*' }))[0] as { n: number | string }).n);

  it('the fenced workers keep their shards and claimed rows; after the election they go on: every row once, in order, no shard moved', async () => {
    const { ws, bucket, before, killedAt, survivor } = await fencedOnBacklog();
    const fencedAt = Date.now();
    const statusOf = async (ids: number[]): Promise<Record<string, number>> => {
      const rows: Array<{ status: string; n: number | string }> = await tdb!
        .db('telegram_notifications')
        .whereIn('id', ids)
        .select('status')
        .count({ n: '*' })
        .groupBy('status');
      return Object.fromEntries(rows.map((r) => [r.status, Number(r.n)]));
    };
    const held = (await tdb!.db('telegram_notifications').where({ status: 'claimed' }).select('id')).map((r: { id: number }) => r.id);
    assert.ok(held.length > 0, 'rows were claimed when the workers fenced');
    // Two more seconds without a quorum: none of the rows claimed at the fence goes back to the outbox (a fence that gave
    // them back made them all pending). Some may still turn `sent`: outcomes of sends made before the fence, written late.
    const samples: Array<Record<string, number>> = [];
    for (const until = Date.now() + 2_000; Date.now() < until;) {
      samples.push(await statusOf(held));
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.ok(
      samples.every((x) => (x.pending ?? 0) === 0 && (x.claimed ?? 0) > 0),
      `the ${held.length} rows claimed at the fence, while fenced: ${JSON.stringify(samples.slice(-3))} (none given back)`,
    );
    // Nothing dispatched after the fence (a request already on the wire is answered well within a second on loopback).
    const late = sandbox!.delivered().filter((x) => x.at > fencedAt + 1_000);
    assert.deepEqual(
      late.map((x) => x.text),
      [],
      'nothing sent while fenced',
    );

    const resumedBefore = ws.map((w) => w.lines.filter((l) => RESUMED.test(l)).length);
    await Promise.all(cluster!.nodes.slice(0, 2).map((n) => cluster!.restart(n.name)));
    await Promise.all(ws.map((w, i) => waitFor(() => w.lines.filter((l) => RESUMED.test(l)).length > resumedBefore[i]!, 30_000, 20, 'resumed')));
    await waitFor(async () => (await sent()) === N, 60_000, 200, 'every row sent');
    console.log(
      `      quorum lost for ${((Date.now() - killedAt) / 1000).toFixed(1)} s (survivor ${survivor}); ${held.length} rows stayed claimed through the fence`,
    );
    assertExactlyOnceInOrder(sandbox!, N, (t) => Number(t.split('-')[2]));
    const after = await clusterStatusOf(nc!, bucket);
    assert.deepEqual(
      Object.entries(before.map).filter(([s, h]) => after.map[Number(s)] !== h),
      [],
      'every shard is held by the process that held it before',
    );
    assert.deepEqual(after.takeovers, []);
    assert.equal(sandbox!.stats().rejected['429'] ?? 0, 0, 'no 429');
  });

  it('a worker killed while fenced: its claimed rows are taken over with its shards once the nodes return; every row once, in order', async () => {
    const { ws, bucket } = await fencedOnBacklog();
    const [a] = ws;
    const aHolder = (await tdb!.db('telegram_notifications').where({ status: 'claimed' }).where('claimed_by', 'like', 'a-%').count({ n: '*' }))[0] as {
      n: number | string;
    };
    assert.ok(Number(aHolder.n) > 0, 'the fenced worker held claimed rows when it was killed');
    a!.kill('SIGKILL');
    await a!.exited;
    await Promise.all(cluster!.nodes.slice(0, 2).map((n) => cluster!.restart(n.name)));
    await waitFor(async () => (await sent()) === N, 90_000, 200, 'every row sent');
    assertExactlyOnceInOrder(sandbox!, N, (t) => Number(t.split('-')[2]));
    const after = await clusterStatusOf(nc!, bucket);
    assert.ok(
      after.takeovers.some((t) => t.from.startsWith('a-')),
      `b took a's shards over: ${JSON.stringify(after.takeovers.slice(0, 3))}`,
    );
  });
});
