import assert from 'node:assert/strict';
import { connect, type NatsConnection } from 'nats';
import { TelegramSandbox } from '../../sandbox/server';
import type { DeliveredEntry } from '../../sandbox/types';
import { shardOf } from '../../src/outbox/shard';
import type { ClusterStatus } from '../../src/roles/cluster';
import { createTestDb, waitFor, uniq, NATS_URL, type TestDb } from '../helpers/services';
import { cleanUpCluster, clusterStatusOf, clusterWorkerEnv, waitBalanced } from '../helpers/cluster-workers';
import { startWorker, type Worker } from '../helpers/processes';

const TTL = 3000;

/**
 * Rate control while a cluster forms or changes (issue 9): real worker processes, real
 * NATS and MariaDB, the sandbox over HTTP enforcing the same limits the workers are told.
 */
describe('rate control across real processes: formation and handoff', function () {
  this.timeout(180_000);
  let tdb: TestDb;
  let sandbox: TelegramSandbox;
  let nc: NatsConnection;
  let bucket: string;
  const workers: Worker[] = [];

  const setup = async (limits: { globalRate: number; chatRate: number }): Promise<void> => {
    bucket = uniq('cr');
    tdb = await createTestDb('cr');
    sandbox = new TelegramSandbox(limits);
    await sandbox.start();
    nc = await connect({ servers: NATS_URL });
  };
  afterEach(() => cleanUpCluster({ workers, nc, bucket, sandbox, tdb }));

  const start = (name: string, limits: { globalRate: number; chatRate: number; told?: number }, env: Record<string, string> = {}): Worker => {
    const w = startWorker(
      clusterWorkerEnv(
        { tdb, sandbox, bucket, name },
        {
          TELEGRAM_GLOBAL_RATE: String(limits.told ?? limits.globalRate),
          TELEGRAM_CHAT_RATE: String(limits.chatRate),
          SHARD_LEASE_TTL_MS: String(TTL),
          ...env,
        },
      ),
    );
    workers.push(w);
    return w;
  };
  const insert = async (rows: Array<{ chat: number; text: string }>): Promise<void> => {
    for (let i = 0; i < rows.length; i += 500)
      await tdb.db('telegram_notifications').insert(rows.slice(i, i + 500).map((r) => ({ telegram_id: r.chat, message_text: r.text })));
  };
  const count = async (status: string): Promise<number> =>
    Number(((await tdb.db('telegram_notifications').where({ status }).count({ n: '*' }))[0] as { n: number | string }).n);
  const clusterStatus = (): Promise<ClusterStatus> => clusterStatusOf(nc, bucket);
  const balanced = (n: number): Promise<ClusterStatus> => waitBalanced(nc, bucket, n);
  /** Smallest gap between two deliveries to one chat, in ms (by the sandbox's clock). */
  const minGap = (d: DeliveredEntry[], chats?: Set<number>): number => {
    const last = new Map<number, number>();
    let min = Infinity;
    for (const x of d) {
      if (chats && !chats.has(x.chatId)) continue;
      const prev = last.get(x.chatId);
      if (prev !== undefined) min = Math.min(min, x.at - prev);
      last.set(x.chatId, x.at);
    }
    return min;
  };

  it('three workers started at the same instant on a pre-filled outbox: 0 × 429, and the cluster forms before anyone takes a shard', async () => {
    // Server and workers agree on 60/s; 240 rows over 120 chats would take each lone process 4 s.
    const limits = { globalRate: 60, chatRate: 10 };
    await setup(limits);
    await insert(Array.from({ length: 240 }, (_, i) => ({ chat: 11_000 + (i % 120), text: `f-${i}` })));
    // The settle time covers how far apart three tsx processes on two loaded cores write their first member key.
    const ws = ['a', 'b', 'c'].map((n) => start(n, limits, { SHARD_FORMATION_MS: '4000' }));
    const formed = await Promise.all(ws.map((w) => w.waitForLine(/cluster formed: taking shards/)));
    await waitFor(async () => (await count('sent')) === 240, 60_000, 200, 'all sent');
    const stats = sandbox.stats();
    assert.deepEqual(stats.rateLimited, { global: 0, chat: 0, group: 0 }, 'no 429 while the cluster formed');
    assert.ok(stats.peakGlobalWindow <= 60, `peak ${stats.peakGlobalWindow} in one window`);
    assert.equal(new Set(sandbox.delivered().map((d) => d.text)).size, 240, 'every row delivered');
    // Each took its shards seeing all three: nobody took every shard first and handed most of them over again.
    for (const line of formed) assert.equal((JSON.parse(line) as { members: number }).members, 3, line);
    ws.forEach((w, i) => assert.ok(!w.lines.some((l) => l.includes('shards handed off')), `worker ${i}: no shard was handed over while the cluster formed`));
  });

  it('graceful handoff: the new owner sends to a chat only after its window since the old owner last sent there', async () => {
    // A chat window of 4 s (0.25/s): longer than a handoff takes, so sending at once would be a 429.
    const limits = { globalRate: 300, chatRate: 0.25 };
    await setup(limits);
    await insert(Array.from({ length: 120 }, (_, i) => ({ chat: 12_000 + (i % 40), text: `g-${i}` })));
    await start('a', limits).waitForLine(/delivery pipeline running/);
    await sandbox.waitForDelivered(40, 20_000); // every chat got its first message from a
    const bAt = Date.now();
    await start('b', limits).waitForLine(/delivery pipeline running/);
    await balanced(2);
    await waitFor(async () => (await count('sent')) === 120, 60_000, 200, 'all sent');
    const d = sandbox.delivered();
    assert.deepEqual(sandbox.stats().rateLimited, { global: 0, chat: 0, group: 0 }, 'no 429 across the handoff');
    const gap = minGap(d);
    assert.ok(gap >= 4_000, `two sends to one chat ${gap} ms apart (window 4000 ms)`);
    const status = await clusterStatus();
    const bShards = new Set(status.processes.find((p) => p.instance.startsWith('b-'))!.owned);
    const moved = d.filter((x) => bShards.has(shardOf(x.chatId, 64)) && x.at >= bAt);
    assert.ok(moved.length > 0, 'b sent for shards it took over');
  });

  it('kill -9: the new owner waits one full chat window before its first send to a chat', async () => {
    const limits = { globalRate: 300, chatRate: 0.2 }; // a 5 s chat window, longer than the 3 s lease TTL
    await setup(limits);
    const ws = [start('a', limits), start('b', limits)];
    await Promise.all(ws.map((w) => w.waitForLine(/delivery pipeline running/)));
    const st = await balanced(2);
    const aShards = new Set(st.processes.find((p) => p.instance.startsWith('a-'))!.owned);
    const chats: number[] = [];
    for (let c = 13_000; chats.length < 40; c++) chats.push(c);
    const aChats = new Set(chats.filter((c) => aShards.has(shardOf(c, 64))));
    assert.ok(aChats.size > 5, 'some chats live in a');
    await insert(Array.from({ length: 120 }, (_, i) => ({ chat: chats[i % chats.length]!, text: `k-${i}` })));
    await sandbox.waitForDelivered(40, 20_000);
    ws[0]!.kill('SIGKILL');
    await ws[0]!.exited;
    await waitFor(async () => new Set(sandbox.delivered().map((x) => x.text)).size === 120, 60_000, 200, 'all delivered');
    assert.deepEqual(sandbox.stats().rateLimited, { global: 0, chat: 0, group: 0 }, 'no 429 after the takeover');
    const gap = minGap(sandbox.delivered(), aChats);
    assert.ok(gap >= 5_000, `a dead owner's chat sent to again ${gap} ms after its last send (window 5000 ms)`);
  });

  it('the coordinator stops gracefully: the other process holds the whole budget within 2.5 s of its exit, 0 × 429', async () => {
    // Before: the successor stood for election once a second, then raised nobody for a grant's life plus a
    // window, and the leaver's share stayed reserved until its grant expired (main's workers: 3.8 s, twice).
    const limits = { globalRate: 100, chatRate: 10 };
    await setup(limits);
    await insert(Array.from({ length: 3000 }, (_, i) => ({ chat: 15_000 + (i % 300), text: `l-${i}` })));
    const ws = [start('a', limits), start('b', limits)];
    await Promise.all(ws.map((w) => w.waitForLine(/delivery pipeline running/)));
    await balanced(2);
    const leader = ws.find((w) => w.lines.some((l) => /elected budget coordinator/.test(l)))!;
    const other = ws.find((w) => w !== leader)!;
    const otherInstance = (JSON.parse(other.lines.find((l) => /delivery pipeline running/.test(l))!) as { instance: string }).instance;
    const share = async (): Promise<{ share: number; mode: string }> =>
      (
        JSON.parse(new TextDecoder().decode((await nc.request(`${bucket}.notify.status.${otherInstance}`, new Uint8Array(), { timeout: 2_000 })).data)) as {
          budget: { share: number; mode: string };
        }
      ).budget;
    assert.ok((await share()).share <= 60, 'the budget was split between two processes');
    leader.kill('SIGTERM');
    await leader.exited;
    const exitedAt = Date.now();
    let s = await share();
    while (!(s.mode === 'granted' && s.share >= 90) && Date.now() - exitedAt < 10_000) {
      await new Promise((r) => setTimeout(r, 50));
      s = await share();
    }
    const took = Date.now() - exitedAt;
    console.log(`      coordinator left: the other process at share ${s.share} (${s.mode}) ${took} ms after its exit`);
    assert.ok(s.share >= 90 && took <= 2_500, `share ${s.share} ${took} ms after the coordinator exited`);
    assert.deepEqual(sandbox.stats().rateLimited, { global: 0, chat: 0, group: 0 }, 'no 429 while the budget moved');
  });

  it("stricter server under three processes: the cluster's bot rate settles at 0.95–1 × the server's within 10 s, ≤ 1 % 429s", async () => {
    // The sandbox takes 100/s; the workers are told 150/s. 45 s at the server's rate: the sends in flight when the
    // first 429 comes (a cold start's first window goes out before any answer; 150/s × the answer time, ~40 at a load
    // average of 11 on this machine) are a fixed cost, and the target is a share of the run.
    const server = 100;
    await setup({ globalRate: server, chatRate: 10 });
    const n = 4500;
    await insert(Array.from({ length: n }, (_, i) => ({ chat: 14_000 + (i % 300), text: `s-${i}` })));
    const ws = ['a', 'b', 'c'].map((x) => start(x, { globalRate: server, chatRate: 10, told: 150 }));
    await Promise.all(ws.map((w) => w.waitForLine(/delivery pipeline running/)));
    // The coordinator's bot rate over the run: when it last stood outside 0.95–1 × the server's rate.
    let rate: number | undefined;
    let lastOutside = Date.now();
    const t0 = Date.now();
    const outside: string[] = [];
    await waitFor(
      async () => {
        // The coordinator's split (whichever process answers relays it); else the rate its grants carry (a busy
        // coordinator's answer may miss the answering process's 1 s gathering).
        const st = await clusterStatus().catch(() => undefined);
        const granted = st?.processes.filter((p) => p.budget.mode === 'granted').map((p) => p.budget.rate) ?? [];
        rate = st?.budget?.rate ?? (granted.length ? Math.max(...granted) : undefined) ?? rate;
        if (rate === undefined || rate < 0.95 * server || rate > server) {
          lastOutside = Date.now();
          outside.push(`${((Date.now() - t0) / 1000).toFixed(1)} s: ${rate?.toFixed(1)}`);
        }
        return (await count('sent')) === n;
      },
      120_000,
      100,
      'all sent',
    );
    const d = sandbox.delivered();
    const r429 = sandbox.stats().rateLimited;
    const floods = ws
      .flatMap((w) =>
        w.lines
          .filter((l) => /lowering the bot rate for the whole cluster/.test(l))
          .map((l) => JSON.parse(l) as { rate: number; accepted: number; recent: number; counted: boolean; time: string }),
      )
      .sort((x, y) => x.time.localeCompare(y.time));
    const lowered = floods.map((f) => f.rate);
    // The rate over a stretch of deliveries: the middle half is the settled rate; the drain's tail (a process whose
    // shards ran dry first, its share moving to the others) shows in the second half only.
    const rateOf = (from: number, to: number): number => ((to - from - 1) / (d[to - 1]!.at - d[from]!.at)) * 1000;
    const settled = rateOf(Math.floor(n / 4), Math.floor((3 * n) / 4));
    const secondHalf = rateOf(Math.floor(n / 2), n);
    const settledAfter = (lastOutside - d[0]!.at) / 1000;
    console.log(
      `      stricter global, 3 processes: 429s ${JSON.stringify(r429)} (${((r429.global * 100) / n).toFixed(2)} % of sends); floods ${floods
        .map((f) => `${f.rate} (counted ${f.accepted}, reports ${f.recent})`)
        .join(
          ', ',
        )}; coordinator at ${rate?.toFixed(1)}/s, in 0.95–1 × ${server}/s from ${settledAfter.toFixed(1)} s after the first delivery; delivered ${settled.toFixed(1)}/s in the middle half, ${secondHalf.toFixed(1)}/s in the second half`,
    );
    assert.equal(new Set(d.map((x) => x.text)).size, n, 'every row delivered');
    assert.equal(r429.chat + r429.group, 0);
    // A flood's count can be a few % high (answer times bunch on a loaded machine): a lowered rate may still be above
    // the server's, and the next flood then lowers it by 5 % at most; the rate it settles at is what counts.
    assert.ok(lowered.length > 0 && lowered.length <= 4, `${lowered.length} floods lowered the bot rate`);
    // Issue 9's targets: the bot rate settles at ≥ 0.95 of the server's real rate (never above it) within 10 s, and
    // 429s stay ≤ 1 % of sends. Every 429 of the first flood is counted by every process: the largest count of the
    // event is what the server took (the first alone was up to a quarter low while answers were in flight).
    assert.ok(rate !== undefined && rate >= 0.95 * server && rate <= server, `the coordinator's bot rate ${rate}/s`);
    assert.ok(settledAfter <= 10, `settled ${settledAfter.toFixed(1)} s after the first delivery; outside the band at ${outside.slice(-6).join(', ')}`);
    assert.ok(r429.global <= 0.01 * n, `${r429.global} × 429 for ${n} sends (target ≤ 1 %)`);
    // Delivered also depends on the CPU (three workers, NATS, MariaDB and the sandbox on 2 cores): a floor that
    // catches a rate stuck low or a share left unused; bench:cluster measures how close it gets.
    assert.ok(settled >= 0.9 * server, `delivered at ${settled.toFixed(1)}/s in the middle half`);
  });
});
