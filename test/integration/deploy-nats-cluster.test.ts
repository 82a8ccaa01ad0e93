import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { spawnSync } from 'node:child_process';
import { connect } from 'nats';
import { NATS_SERVER, NatsCluster, type NatsNode } from '../helpers/nats-cluster';

const DIR = resolve(__dirname, '../../deploy/nats-cluster');

/**
 * deploy/nats-cluster/n1.conf..n3.conf, as shipped: each is valid for nats-server 2.9, and
 * the three form a JetStream cluster that replicates a bucket R3 once host names, ports
 * and store directories are put in for one machine (loopback, free ports, temp dirs).
 */
describe('deploy/nats-cluster: the three node configurations', function () {
  this.timeout(60_000);

  it('each file passes nats-server -t', () => {
    for (const n of [1, 2, 3]) {
      const r = spawnSync(NATS_SERVER, ['-t', '-c', resolve(DIR, `n${n}.conf`)], { encoding: 'utf8' });
      assert.equal(r.status, 0, `n${n}.conf: ${r.stderr}${r.stdout}`);
    }
  });

  it('the three form a cluster with a meta leader and replicate a bucket on all three', async () => {
    const onLoopback = (node: NatsNode, all: readonly NatsNode[]): string => {
      const i = Number(node.name.slice(1));
      let text = readFileSync(resolve(DIR, `n${i}.conf`), 'utf8');
      text = text.replace('listen: 0.0.0.0:4222', `listen: 127.0.0.1:${node.port}`);
      text = text.replace('http: 127.0.0.1:8222', `http: 127.0.0.1:${node.httpPort}`);
      text = text.replace('listen: 0.0.0.0:6222', `listen: 127.0.0.1:${node.clusterPort}`);
      text = text.replace('store_dir: "/var/lib/nats"', `store_dir: "${node.storeDir}"`);
      text = text.replace(/nats-route:\/\/nats-(\d):6222/g, (_, k: string) => `nats-route://127.0.0.1:${all[Number(k) - 1]!.clusterPort}`);
      // The rig finds nodes by n1..n3; the files name them nats-1..nats-3.
      assert.match(text, new RegExp(`server_name: nats-${i}`));
      return text.replace(`server_name: nats-${i}`, `server_name: n${i}`);
    };
    const cluster = await NatsCluster.start({ configFor: onLoopback });
    try {
      assert.ok(await cluster.waitForMetaLeader());
      const nc = await connect({ servers: cluster.urls.split(',') });
      try {
        const kv = await nc.jetstream().views.kv('deploycheck', { replicas: 3 });
        await kv.put('k', new TextEncoder().encode('v'));
        const si = await (await nc.jetstreamManager()).streams.info('KV_deploycheck');
        assert.equal(si.cluster?.replicas?.length, 2, 'a leader and two replicas');
      } finally {
        await nc.close();
      }
    } finally {
      await cluster.stop();
    }
  });
});
