import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { connect } from 'nats';
import { NatsCluster } from '../helpers/nats-cluster';

describe('test rig: a three-node NATS cluster (test/helpers/nats-cluster.ts)', function () {
  this.timeout(60_000);
  let cluster: NatsCluster | undefined;
  afterEach(async () => {
    await cluster?.stop();
    cluster = undefined;
  });

  it('elects a meta leader, replicates a bucket R3, survives a SIGKILL of the meta leader, restarts the node, cleans up', async () => {
    cluster = await NatsCluster.start();
    const leader = await cluster.waitForMetaLeader();
    assert.ok(['n1', 'n2', 'n3'].includes(leader));
    const nc = await connect({ servers: cluster.urls.split(','), maxReconnectAttempts: -1, reconnectTimeWait: 100 });
    try {
      const kv = await nc.jetstream().views.kv('rig', { replicas: 3, history: 1 });
      await kv.put('k', new TextEncoder().encode('v1'));
      const si = await (await nc.jetstreamManager()).streams.info('KV_rig');
      assert.equal(si.config.num_replicas, 3);
      assert.ok(await cluster.waitForStreamLeader('KV_rig'));
      await cluster.kill(leader);
      assert.equal(cluster.node(leader).proc, undefined);
      const next = await cluster.waitForMetaLeader(20_000);
      assert.notEqual(next, leader, 'a surviving node leads');
      assert.equal(new TextDecoder().decode((await kv.get('k'))!.value), 'v1', 'the replicated value survives');
      await cluster.restart(leader);
      assert.equal(cluster.running().length, 3);
      await cluster.waitForMetaLeader();
    } finally {
      await nc.close();
    }
    const dir = cluster.node('n1').storeDir;
    await cluster.stop();
    assert.equal(existsSync(dir), false, 'store directories removed');
  });
});
