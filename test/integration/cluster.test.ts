import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createConnection } from 'node:net';
import { connect, type NatsConnection } from 'nats';
import { TelegramSandbox } from '../../sandbox/server';
import { shardOf } from '../../src/outbox/shard';
import type { ClusterStatus } from '../../src/roles/cluster';
import { createTestDb, waitFor, uniq, NATS_URL, type TestDb } from '../helpers/services';
import { assertExactlyOnceInOrder as assertInOrder, cleanUpCluster, clusterStatusOf, waitBalanced } from '../helpers/cluster-workers';
import { startWorker, type Worker } from '../helpers/processes';
import { TEST_TOKEN, waitForSandboxIdle } from '../helpers/pipeline';
import { freePort } from '../helpers/ports';

const TTL = 3000;

describe('scale-out across real processes (NATS KV leases, shared budget)', function () {
  this.timeout(120_000);
  let tdb: TestDb;
  let sandbox: TelegramSandbox;
  let nc: NatsConnection;
  let bucket: string;
  let natsUrl: string;
  const workers: Worker[] = [];

  const setup = async (url = NATS_URL): Promise<void> => {
    natsUrl = url;
    bucket = uniq('cl');
    tdb = await createTestDb('cl');
    sandbox = new TelegramSandbox({ globalRate: 300, chatRate: 10 });
    await sandbox.start();
    nc = await connect({ servers: url, maxReconnectAttempts: -1, reconnectTimeWait: 200 });
  };
  afterEach(() => cleanUpCluster({ workers, nc, bucket, sandbox, tdb }));

  const launch = async (name: string): Promise<Worker> => {
    const w = startWorker({
      DATABASE_URL: tdb.url,
      NATS_URL: natsUrl,
      TELEGRAM_BOT_TOKEN: TEST_TOKEN,
      TELEGRAM_API_ROOT: sandbox.apiRoot,
      TELEGRAM_GLOBAL_RATE: '300',
      TELEGRAM_CHAT_RATE: '10',
      INSTANCE_ID: `${name}-${bucket}`,
      OUTBOX_POLL_MS: '200',
      CLAIM_LEASE_MS: '3000',
      SHARD_LEASE_TTL_MS: String(TTL),
      CLUSTER_BUCKET: bucket,
      NATS_SUBJECT_PREFIX: `${bucket}.`,
      ROLE: 'worker',
    });
    workers.push(w);
    await w.waitForLine(/delivery pipeline running/);
    return w;
  };
  const clusterStatus = (): Promise<ClusterStatus> => clusterStatusOf(nc, bucket);
  const balanced = (n: number): Promise<ClusterStatus> => waitBalanced(nc, bucket, n);
  const insert = async (rows: Array<{ chat: number; text: string }>): Promise<void> => {
    for (let i = 0; i < rows.length; i += 500)
      await tdb.db('telegram_notifications').insert(rows.slice(i, i + 500).map((r) => ({ telegram_id: r.chat, message_text: r.text })));
  };
  const count = async (status: string): Promise<number> =>
    Number(((await tdb.db('telegram_notifications').where({ status }).count({ n: '*' }))[0] as { n: number | string }).n);
  const assertExactlyOnceInOrder = (n: number): void => assertInOrder(sandbox, n, (t) => Number(t.split('-')[1]));

  it('3 processes: shards balanced, every row delivered exactly once, per-chat order kept', async () => {
    await setup();
    await Promise.all([launch('a'), launch('b'), launch('c')]);
    const st = await balanced(3);
    assert.equal(Object.keys(st.map).length, 64);
    assert.ok(st.coordinator, 'a budget coordinator was elected');
    // Any process answers the cluster status; one that does not coordinate relays the coordinator's split.
    let other: ClusterStatus | undefined;
    await waitFor(
      async () => {
        const s = await clusterStatus();
        const coordinator = s.processes.find((p) => p.holder === s.coordinator)?.instance;
        if (coordinator !== undefined && s.answeredBy !== coordinator) other = s;
        return other !== undefined;
      },
      20_000,
      20,
      'a status answered by a process that does not coordinate',
    );
    assert.equal(other!.budget?.leader, true, `the budget in ${other!.answeredBy}'s answer: ${JSON.stringify(other!.budget)}`);
    assert.ok(other!.budget.rate > 0);
    await insert(Array.from({ length: 600 }, (_, i) => ({ chat: 5000 + (i % 120), text: `r-${i}` })));
    await waitFor(async () => (await count('sent')) === 600, 60_000, 200, 'all sent');
    assertExactlyOnceInOrder(600);
    assert.equal(sandbox.stats().rejected['429'] ?? 0, 0);
  });

  it('a 4th process joins mid-run: shards move by handoff, no duplicate, no loss', async () => {
    await setup();
    await Promise.all([launch('a'), launch('b'), launch('c')]);
    await balanced(3);
    await insert(Array.from({ length: 1200 }, (_, i) => ({ chat: 6000 + (i % 60), text: `j-${i}` })));
    await sandbox.waitForDelivered(200, 20_000);
    await launch('d');
    await balanced(4);
    await waitFor(async () => (await count('sent')) === 1200, 60_000, 200, 'all sent');
    assertExactlyOnceInOrder(1200);
    assert.equal(await count('claimed'), 0);
  });

  it('SIGKILL one process mid-run: its shards are taken over, every row delivered', async () => {
    await setup();
    const [a] = await Promise.all([launch('a'), launch('b'), launch('c')]);
    const st = await balanced(3);
    const aShards = new Set(st.processes.find((p) => p.instance.startsWith('a-'))!.owned);
    // Half the chats live in a's shards, so the kill interrupts real work.
    const chats: number[] = [];
    for (let c = 7000; chats.length < 40; c++) if (aShards.has(shardOf(c, 64)) === (chats.length % 2 === 0)) chats.push(c);
    await insert(Array.from({ length: 800 }, (_, i) => ({ chat: chats[i % chats.length]!, text: `k-${i}` })));
    await sandbox.waitForDelivered(150, 20_000);
    a.kill('SIGKILL');
    const killedAt = Date.now();
    await a.exited;
    await waitForSandboxIdle(sandbox);
    const deliveredAtKill = sandbox.delivered().length;
    const recordedAtKill = await count('sent');
    const aChats = new Set(chats.filter((c) => aShards.has(shardOf(c, 64))));
    const firstAfter = await new Promise<number>((resolve) => {
      const on = (e: { chatId: number; at: number }): void => {
        if (aChats.has(e.chatId)) {
          sandbox.off('delivered', on);
          resolve(e.at);
        }
      };
      sandbox.on('delivered', on);
    });
    const takeoverMs = firstAfter - killedAt;
    console.log(`      takeover: first delivery from a dead process's shard ${takeoverMs} ms after SIGKILL (lease TTL ${TTL} ms)`);
    assert.ok(takeoverMs <= TTL + 5_000, `takeover took ${takeoverMs} ms`);
    await waitFor(async () => (await count('sent')) === 800, 60_000, 200, 'all sent');
    const texts = sandbox.delivered().map((d) => d.text);
    assert.equal(new Set(texts).size, 800, 'none lost');
    assert.ok(
      texts.length - 800 <= deliveredAtKill - recordedAtKill,
      `duplicates (${texts.length - 800}) only among rows in flight at the kill (${deliveredAtKill - recordedAtKill})`,
    );
    const status = await clusterStatus();
    assert.ok(
      status.takeovers.some((t) => t.from.startsWith('a-')),
      'the takeover is reported by cluster status',
    );
  });

  it('cluster-wide budget: all backlog in one process never exceeds the global window', async () => {
    await setup();
    await Promise.all([launch('a'), launch('b'), launch('c')]);
    const st = await balanced(3);
    const aShards = new Set(st.processes.find((p) => p.instance.startsWith('a-'))!.owned);
    const chats: number[] = [];
    for (let c = 8000; chats.length < 150; c++) if (aShards.has(shardOf(c, 64))) chats.push(c);
    await insert(Array.from({ length: 1500 }, (_, i) => ({ chat: chats[i % chats.length]!, text: `b-${i}` })));
    await waitFor(async () => (await count('sent')) === 1500, 60_000, 200, 'all sent');
    const stats = sandbox.stats();
    assert.equal(stats.rejected['429'] ?? 0, 0, 'the sandbox never saw the global window exceeded');
    assert.ok(stats.peakGlobalWindow <= 300);
    assertExactlyOnceInOrder(1500);
  });

  it('a NATS outage: processes stop sending for shards they cannot renew, keep them and their rows, and go on after the restart: 0 lost, none twice', async () => {
    const port = await freePort();
    const dir = mkdtempSync(join(tmpdir(), 'nats-'));
    let server: ChildProcess | undefined;
    const startNats = async (): Promise<void> => {
      server = spawn('/usr/sbin/nats-server', ['-a', '127.0.0.1', '-p', String(port), '-js', '-sd', dir], { stdio: 'ignore' });
      await waitFor(() => portOpen(port), 10_000, 50, 'test nats-server up');
    };
    try {
      await startNats();
      await setup(`nats://127.0.0.1:${port}`);
      await Promise.all([launch('a'), launch('b')]);
      await balanced(2);
      await insert(Array.from({ length: 2400 }, (_, i) => ({ chat: 9000 + (i % 30), text: `n-${i}` })));
      await sandbox.waitForDelivered(100, 20_000);
      server!.kill('SIGKILL');
      // Within the fence time (TTL − max(500 ms, TTL/6)) every process fences itself (the watchdog, not just an expired budget
      // grant). The shards are still theirs (nobody can take them over without NATS), and so are the rows they claimed.
      await Promise.all(workers.map((w) => w.waitForLine(/lease not renewed in time: stopped sending/, TTL + 1_000)));
      const held = await count('claimed');
      const frozen = sandbox.delivered().length;
      await new Promise((r) => setTimeout(r, 2_000));
      assert.equal(sandbox.delivered().length, frozen, 'no sends while no process can renew its leases');
      assert.ok(frozen < 2400, 'the outage interrupted the run');
      assert.ok(held > 0 && (await count('claimed')) >= held, `the fenced processes keep their claimed rows (${held}, then ${await count('claimed')})`);
      await startNats();
      await waitFor(async () => (await count('sent')) === 2400, 60_000, 200, 'all sent after the restart');
      assertExactlyOnceInOrder(2400);
    } finally {
      server?.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

function portOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createConnection(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}
