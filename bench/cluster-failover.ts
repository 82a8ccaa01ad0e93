/**
 * `npm run bench:cluster -- --nats-nodes 3` — a node of a three-node NATS cluster dies.
 *
 * A real cluster (test/helpers/nats-cluster.ts: three nats-servers on loopback, each with
 * its own store), every stream and bucket R3 (NATS_REPLICAS=3), the default lease TTL.
 *
 *   delivery, leader: three worker processes (src/main.ts) drain a backlog against the
 *     sandbox (its own process, Telegram's limits ×10: 300 msg/s global, 10 per chat);
 *     SIGKILL of the node leading both the JetStream meta layer and the lease bucket; it
 *     stays down for DOWN_S seconds, then restarts;
 *   delivery, bystander: the same with a node that leads neither;
 *   crash: SIGKILL of a worker process on the cluster: time until its shards deliver again;
 *   views: two view-counter processes and a gateway; beacons from CONCURRENCY loops;
 *     SIGKILL of the node leading the views stream (and the meta layer).
 *
 * Reports per-second delivery around the kill (a text plot), time to full rate, lost,
 * duplicates, 429s by scope, shards that changed holder; beacons answered (202 / 503),
 * views counted, exactness.
 * Env: BENCH_DATABASE_URL (a server; a scratch database is created and dropped),
 * BENCH_FAILOVER_N (default 9000 rows per delivery run), BENCH_DOWN_S (default 15),
 * BENCH_FAILOVER_ONLY=leader (only the leader kill), BENCH_FAILOVER_LOG=<file> (every
 * worker's log lines, info and up, with the kill instants, written there at the end),
 * BENCH_FAILOVER_TRACE=1 (every worker's status every 250 ms for 14 s after the kill). Each
 * delivery run prints what each worker did after the kill: lease renewals succeeding again,
 * fences and resumes, budget grants lapsing and coming back, sends per second.
 * `npx tsx bench/cluster-election.ts`: the election alone (kill → first successful KV write).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import os from 'node:os';
import { connect, type NatsConnection } from 'nats';
import { createDb, type Knex } from '../src/db/knex';
import { migrateLatest } from '../src/db/migrate';
import { createLogger } from '../src/log';
import { Metrics } from '../src/metrics';
import { connectNats } from '../src/nats/connection';
import { shardOf } from '../src/outbox/shard';
import { loadAdsConfig, startGatewayRole } from '../src/roles/ads';
import type { ClusterStatus, ProcessStatus } from '../src/roles/cluster';
import type { DeliveredEntry, SandboxStats } from '../sandbox/types';
import { NatsCluster } from '../test/helpers/nats-cluster';
import { firstDeliveryAfter, getJson, machine, startSandboxProcess, table } from './lib';

const GLOBAL = 300;
const CHAT = 10;
const N = Number(process.env.BENCH_FAILOVER_N ?? 9000);
const DOWN_S = Number(process.env.BENCH_DOWN_S ?? 15);
const ONLY_LEADER = process.env.BENCH_FAILOVER_ONLY === 'leader';
const LOG_FILE = process.env.BENCH_FAILOVER_LOG;
/** BENCH_FAILOVER_TRACE=1: every worker's status every 250 ms for 14 s after the kill, printed under the timeline. */
const TRACE = process.env.BENCH_FAILOVER_TRACE === '1';
const CONCURRENCY = 24;
const TOKEN = '123456:BENCH-token-abcdefghijklmnopqrstuv';
const ROOT_DB = process.env.BENCH_DATABASE_URL ?? 'mysql://root@127.0.0.1:3306/test';

/** `--nats-nodes N` on the command line (1 when absent). */
export function natsNodesFlag(argv: readonly string[]): number {
  const i = argv.indexOf('--nats-nodes');
  if (i < 0) return 1;
  const n = Number(argv[i + 1]);
  if (!Number.isInteger(n) || n < 1) throw new Error(`--nats-nodes expects a positive integer, got ${JSON.stringify(argv[i + 1])}`);
  return n;
}

interface Proc {
  name: string;
  child: ChildProcess;
  exited: Promise<void>;
}

interface DeliveryResult {
  name: string;
  killed: string;
  plot: string;
  fullRateS: string;
  lost: number;
  duplicates: number;
  r429: SandboxStats['rateLimited'];
  moved: number;
  takeovers: number;
  fenceLines: number;
  /** What each worker did around the kill (see `timeline`). */
  timeline: string;
}

export async function runClusterFailover(nodes: number): Promise<void> {
  if (nodes !== 3) throw new Error('--nats-nodes: only 3 is implemented (the failure of one node out of three)');
  const load0 = os.loadavg();
  const tag = `benchfo${Date.now().toString(36)}`;
  const root = createDb({ url: ROOT_DB, poolMax: 1 });
  await root.raw(`CREATE DATABASE ${tag}`);
  const url = ROOT_DB.replace(/\/[^/]*$/, `/${tag}`);
  const db = createDb({ url, poolMax: 4 });
  await migrateLatest(db);
  const cluster = await NatsCluster.start();
  const sandbox = await startSandboxProcess(['--global-rate', String(GLOBAL), '--chat-rate', String(CHAT)]);
  const nc = await connect({ servers: cluster.urls.split(','), maxReconnectAttempts: -1, reconnectTimeWait: 100 });
  const procs: Proc[] = [];
  const results: DeliveryResult[] = [];
  const out: { crash: Array<string | number>; views: Array<Array<string | number>> } = { crash: [], views: [] };
  const logs = new Map<string, string[]>([['bench', []]]);
  const launch = (name: string, entry: string, env: Record<string, string>): Proc => {
    const child = spawn(process.execPath, ['--import', 'tsx', resolve(__dirname, '..', entry)], {
      env: { PATH: process.env.PATH ?? '', DATABASE_URL: url, NATS_URL: cluster.urls, NATS_REPLICAS: '3', METRICS_PORT: '0', LOG_LEVEL: 'info', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const lines: string[] = [];
    logs.set(name, lines);
    const onData = (b: Buffer): void => void lines.push(...b.toString('utf8').split('\n').filter(Boolean));
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    const p = {
      name,
      child,
      exited: new Promise<void>((r) => {
        child.once('exit', () => {
          r();
        });
      }),
    };
    procs.push(p);
    return p;
  };
  const worker = (name: string): Proc =>
    launch(name, 'src/main.ts', {
      TELEGRAM_BOT_TOKEN: TOKEN,
      TELEGRAM_API_ROOT: sandbox.apiRoot,
      TELEGRAM_GLOBAL_RATE: String(GLOBAL),
      TELEGRAM_CHAT_RATE: String(CHAT),
      INSTANCE_ID: `${name}-${tag}`,
      CLUSTER_BUCKET: tag,
      NATS_SUBJECT_PREFIX: `${tag}.`,
      VIEWS_STREAM: `${tag}_wv`,
      ROLE: 'worker',
    });
  const status = async (): Promise<ClusterStatus> =>
    JSON.parse(new TextDecoder().decode((await nc.request(`${tag}.notify.cluster.status`, new Uint8Array(), { timeout: 5_000 })).data)) as ClusterStatus;
  const balanced = async (n: number): Promise<ClusterStatus> => {
    const t0 = Date.now();
    for (;;) {
      if (Date.now() - t0 > 60_000) throw new Error(`the shards are not balanced over ${n} processes 60 s on`);
      try {
        const s = await status();
        const counts = s.processes.map((p) => p.owned.length);
        if (s.processes.length === n && counts.reduce((a, b) => a + b, 0) === 64 && counts.every((c) => c >= Math.floor(64 / n) && c <= Math.ceil(64 / n)))
          return s;
      } catch {
        /* not up yet */
      }
      await sleep(200);
    }
  };
  const sent = async (): Promise<number> =>
    Number(((await db('telegram_notifications').where({ status: 'sent' }).count({ n: '*' }))[0] as { n: number | string }).n);
  const fill = async (prefix: string, chats: number[], n: number): Promise<void> => {
    await fetch(`${sandbox.apiRoot}sandbox/reset`, { method: 'POST' });
    await db.raw('TRUNCATE telegram_notifications');
    const data = Array.from({ length: n }, (_, i) => ({ telegram_id: chats[i % chats.length]!, message_text: `${prefix}-${i}` }));
    for (let i = 0; i < data.length; i += 1000) await db('telegram_notifications').insert(data.slice(i, i + 1000));
  };
  const delivered = (): Promise<number> => getJson<SandboxStats>(`${sandbox.apiRoot}sandbox/stats`).then((s) => s.accepted.messages);

  /** One delivery run: kill `pick()`'s node after 5 s of steady delivery, keep it down DOWN_S s. */
  const deliveryRun = async (name: string, pick: () => Promise<string>): Promise<void> => {
    const before = await balanced(3);
    const fenceBefore = [...logs.values()].reduce((a, l) => a + l.filter((x) => x.includes('lease not renewed in time')).length, 0);
    const chats = Array.from({ length: 600 }, (_, i) => 400_000 + i);
    await fill(name, chats, N);
    // A run that never gets going fails (with its logs) instead of waiting forever.
    const filledAt = Date.now();
    while ((await delivered()) < 5 * GLOBAL * 0.9) {
      if (Date.now() - filledAt > 60_000) throw new Error(`${name}: ${await delivered()} delivered 60 s after the fill`);
      await sleep(50);
    }
    const victim = await pick();
    // Moving a stream's leader is an election of its own (writes fail for a moment): the kill comes
    // once the bucket takes writes again and the workers have renewed since (as before a real failure).
    const kv = await nc.jetstream().views.kv(tag);
    const writes = (): Promise<boolean> =>
      kv.put('bench.settle', new Uint8Array([1])).then(
        () => true,
        () => false,
      );
    const t0 = Date.now();
    while (!(await writes())) {
      if (Date.now() - t0 > 30_000) throw new Error('the lease bucket takes no writes 30 s after its leader moved');
      await sleep(50);
    }
    await sleep(1_000);
    const killedAt = Date.now();
    logs.get('bench')?.push(JSON.stringify({ time: killedAt, msg: `${name}: SIGKILL of ${victim}` }));
    await cluster.kill(victim);
    const trace = TRACE ? sampleStatus(nc, `${tag}.notify.status.all`, killedAt, 14_000) : Promise.resolve('');
    await sleep(DOWN_S * 1000);
    await cluster.restart(victim);
    await cluster.waitForMetaLeader(30_000);
    // A stalled cluster fails the run (and still writes BENCH_FAILOVER_LOG) instead of waiting forever.
    while ((await sent()) < N) {
      if (Date.now() - killedAt > 180_000) throw new Error(`delivery stalled: ${await sent()} of ${N} rows sent 180 s after the kill`);
      await sleep(200);
    }
    await sleep(1_000);
    const d = await getJson<DeliveredEntry[]>(`${sandbox.apiRoot}sandbox/delivered`);
    const st = await getJson<SandboxStats>(`${sandbox.apiRoot}sandbox/stats`);
    const after = await status();
    const distinct = new Set(d.map((x) => x.text)).size;
    const moved = Object.entries(before.map).filter(([s, h]) => after.map[Number(s)] !== h).length;
    const fenceAfter = [...logs.values()].reduce((a, l) => a + l.filter((x) => x.includes('lease not renewed in time')).length, 0);
    const { plot, fullRateS } = ratePlot(
      d.map((x) => x.at),
      killedAt,
      DOWN_S,
    );
    results.push({
      name,
      killed: victim,
      plot,
      fullRateS,
      lost: N - distinct,
      duplicates: d.length - distinct,
      r429: st.rateLimited,
      moved,
      takeovers: after.takeovers.length,
      fenceLines: fenceAfter - fenceBefore,
      timeline:
        timeline(logs, killedAt, d, before) +
        (TRACE ? `\nstatus every 250 ms (share/mode, queued, in flight, buffered, gate occupied/waiting):\n${await trace}` : ''),
    });
  };

  try {
    worker('a');
    worker('b');
    worker('c');
    await balanced(3);
    const kvStream = `KV_${tag}`;
    await deliveryRun('leader', async () => {
      const meta = await cluster.waitForMetaLeader();
      return cluster.moveStreamLeader(nc, kvStream, meta);
    });
    if (!ONLY_LEADER)
      await deliveryRun('bystander', async () => {
        const meta = await cluster.waitForMetaLeader();
        const kv = await cluster.waitForStreamLeader(kvStream);
        return cluster.nodes.find((n) => n.name !== meta && n.name !== kv)!.name;
      });

    // ---- crash of a worker process on the cluster -------------------------------
    if (!ONLY_LEADER) {
      const st = await balanced(3);
      const cShards = new Set(st.processes.find((p) => p.instance.startsWith('c-'))!.owned);
      const chats = Array.from({ length: 300 }, (_, i) => 500_000 + i);
      const cChats = new Set(chats.filter((c) => cShards.has(shardOf(c, 64))));
      await fill('crash', chats, 3000);
      const filledAt = Date.now();
      while ((await delivered()) < 600) {
        if (Date.now() - filledAt > 60_000) throw new Error(`crash: ${await delivered()} delivered 60 s after the fill`);
        await sleep(50);
      }
      const victim = procs.find((p) => p.name === 'c')!;
      victim.child.kill('SIGKILL');
      const killedAt = Date.now();
      await victim.exited;
      const firstAfter = await firstDeliveryAfter(sandbox.apiRoot, killedAt + 50, cChats);
      while ((await sent()) < 3000) await sleep(200);
      const d = await getJson<DeliveredEntry[]>(`${sandbox.apiRoot}sandbox/delivered`);
      const distinct = new Set(d.map((x) => x.text)).size;
      out.crash = [((firstAfter - killedAt) / 1000).toFixed(2), 3000 - distinct, d.length - distinct];
    }
    for (const p of procs) p.child.kill('SIGTERM');
    await Promise.race([Promise.all(procs.map((p) => p.exited)), sleep(20_000)]);

    // ---- views --------------------------------------------------------------------
    if (!ONLY_LEADER) out.views = await viewsRun(db, url, cluster, nc, tag, launch);
  } finally {
    if (LOG_FILE) writeFileSync(LOG_FILE, [...logs].flatMap(([name, lines]) => lines.map((l) => `${name} ${l}`)).join('\n') + '\n');
    for (const p of procs) p.child.kill('SIGKILL');
    await Promise.all(procs.map((p) => p.exited));
    await nc.close().catch(() => undefined);
    await cluster.stop();
    await sandbox.stop();
    await db.destroy();
    await root.raw(`DROP DATABASE ${tag}`);
    await root.destroy();
  }
  const load1 = os.loadavg();
  console.log(
    `\nbench:cluster --nats-nodes 3 — 3 nats-servers (R3), 3 worker processes, default lease TTL; sandbox ${GLOBAL} msg/s global, ${CHAT} msg/s per chat; ${machine()}`,
  );
  console.log(`load average before ${load0.map((x) => x.toFixed(2)).join(' ')}, after ${load1.map((x) => x.toFixed(2)).join(' ')}\n`);
  for (const r of results) {
    console.log(`delivery, ${r.name}: node ${r.killed} SIGKILLed at 0 s, restarted at ${DOWN_S} s (msgs delivered per second; | = ${GLOBAL}/s)`);
    console.log(r.plot);
    console.log(`\nwhat each worker did (s after the kill; sends per second by the process holding the chat's shard):\n${r.timeline}\n`);
  }
  console.log(
    table(
      [
        'kill',
        'node',
        'full rate (≥ 95 % for 5 s) from, s',
        'lost',
        'duplicates',
        '429 global',
        '429 chat',
        '429 group',
        'shards moved',
        'takeovers',
        'fence events',
      ],
      results.map((r) => [r.name, r.killed, r.fullRateS, r.lost, r.duplicates, r.r429.global, r.r429.chat, r.r429.group, r.moved, r.takeovers, r.fenceLines]),
    ),
  );
  console.log('\nTargets: 0 lost, duplicates only sends in flight, 429s ≤ 0.1 %, no shard moves between live processes, full rate within 10 s.\n');
  console.log(table(['worker SIGKILL → first delivery from its shards, s', 'lost', 'duplicates'], [out.crash]));
  console.log('\nTarget: ≤ 10 s.\n');
  console.log(
    table(
      ['views: killed node', 'beacons 202', 'beacons 503 (retried)', '503 with Retry-After', 'other / hung', 'views counted', 'expected', 'exact'],
      out.views,
    ),
  );
  console.log('');
}

/** Messages per second from 5 s before to DOWN_S + 10 s after the kill; the first second from which the rate stays ≥ 95 % of the limit for 5 s. */
function ratePlot(ats: number[], killedAt: number, downS: number): { plot: string; fullRateS: string } {
  const from = -5;
  const to = downS + 10;
  const counts = new Map<number, number>();
  for (const at of ats) {
    const s = Math.floor((at - killedAt) / 1000);
    if (s >= from && s < to) counts.set(s, (counts.get(s) ?? 0) + 1);
  }
  const lines: string[] = [];
  let full: number | undefined;
  for (let s = from; s < to; s++) {
    const n = counts.get(s) ?? 0;
    if (full === undefined && s >= 0 && [0, 1, 2, 3, 4].every((k) => s + k >= to || (counts.get(s + k) ?? 0) >= 0.95 * GLOBAL)) full = s;
    lines.push(
      `${String(s).padStart(4)} s ${String(n).padStart(4)} ${'#'.repeat(Math.round(n / 10))}${n >= GLOBAL ? '' : ' '.repeat(Math.round((GLOBAL - n) / 10))}|`,
    );
  }
  const last = ats.length ? Math.max(...ats) : killedAt;
  return { plot: lines.join('\n'), fullRateS: full === undefined ? (last - killedAt < to * 1000 ? 'backlog done first' : 'not within the plot') : `${full}` };
}

/** Log lines that say where the time after a kill goes (every warning and error too). */
const TIMELINE_INFO = [
  'lease renewals succeed again',
  'fenced shards valid again',
  'budget coordinator lease renewals succeed again',
  'granting again',
  'budget share mode changed',
  'elected budget coordinator',
  'NATS connection',
  'shards acquired',
];

/**
 * Per worker, from 2 s before to 30 s after the kill: its lease, budget and NATS events (repeats of
 * one message folded into "×n first–last"), and its sends per second (deliveries to chats whose shard
 * it held before the kill; no shard moves in a good run).
 */
function timeline(logs: Map<string, string[]>, killedAt: number, d: DeliveredEntry[], before: ClusterStatus): string {
  const out: string[] = [];
  const rel = (t: number): string => ((t - killedAt) / 1000).toFixed(2);
  for (const [name, lines] of logs) {
    if (!/^[abc]$/.test(name)) continue;
    const events: Array<{ at: number; msg: string; extra: string }> = [];
    for (const l of lines) {
      let j: Record<string, unknown>;
      try {
        j = JSON.parse(l) as Record<string, unknown>;
      } catch {
        continue;
      }
      const at = Date.parse(String(j.time));
      const msg = typeof j.msg === 'string' ? j.msg : '';
      if (!(at >= killedAt - 2_000 && at <= killedAt + 30_000)) continue;
      if (Number(j.level) < 40 && !TIMELINE_INFO.some((m) => msg.includes(m))) continue;
      const { level: _l, time: _t, pid: _p, msg: _m, hostname: _h, ...rest } = j;
      events.push({ at, msg, extra: JSON.stringify(rest).slice(0, 160) });
    }
    const folded: string[] = [];
    for (let i = 0; i < events.length;) {
      let k = i;
      while (k + 1 < events.length && events[k + 1]!.msg === events[i]!.msg) k++;
      const e = events[i]!;
      folded.push(
        k > i ? `  ${rel(e.at).padStart(6)} ${e.msg} ×${k - i + 1} (to ${rel(events[k]!.at)}) ${e.extra}` : `  ${rel(e.at).padStart(6)} ${e.msg} ${e.extra}`,
      );
      i = k + 1;
    }
    const holder = before.processes.find((p) => p.instance.startsWith(`${name}-`))?.holder;
    const mine = new Set(
      Object.entries(before.map)
        .filter(([, h]) => h === holder)
        .map(([s]) => Number(s)),
    );
    const perS = new Map<number, number>();
    const ats: number[] = [];
    for (const x of d) {
      if (!mine.has(shardOf(x.chatId, 64))) continue;
      ats.push(x.at);
      const s = Math.floor((x.at - killedAt) / 1000);
      if (s >= -2 && s < 25) perS.set(s, (perS.get(s) ?? 0) + 1);
    }
    const sends = Array.from({ length: 27 }, (_, i) => perS.get(i - 2) ?? 0).join(' ');
    // The longest silence after the kill: when this process's sends stopped and started again.
    ats.sort((x, y) => x - y);
    let gap = { from: killedAt, to: killedAt };
    for (let i = 1; i < ats.length; i++)
      if (ats[i]! > killedAt && ats[i - 1]! < killedAt + 25_000 && ats[i]! - ats[i - 1]! > gap.to - gap.from) gap = { from: ats[i - 1]!, to: ats[i]! };
    out.push(
      `worker ${name} (${mine.size} shards) sends/s from -2 s: ${sends}; longest silence ${rel(gap.from)}–${rel(gap.to)} s (${((gap.to - gap.from) / 1000).toFixed(2)} s)`,
      ...folded,
    );
  }
  return out.join('\n');
}

/** Every worker's `notify.status.all` answer every 250 ms for `forMs` after `from`, one line per sample. */
async function sampleStatus(nc: NatsConnection, subject: string, from: number, forMs: number): Promise<string> {
  const lines: string[] = [];
  while (Date.now() - from < forMs) {
    const at = Date.now();
    const parts: string[] = [];
    try {
      for await (const m of await nc.requestMany(subject, new Uint8Array(), { maxWait: 200, maxMessages: 3 })) {
        const p = JSON.parse(new TextDecoder().decode(m.data)) as ProcessStatus;
        if (!p.instance) continue;
        parts.push(
          `${p.instance[0]} ${p.budget.share}/${p.budget.mode[0]} q${p.queued} f${p.inFlight} b${p.buffered} g${p.pipeline.gate.occupied}/${p.pipeline.gate.waiting} s${p.owned.length}`,
        );
      }
    } catch {
      /* no answer */
    }
    lines.push(`  ${((at - from) / 1000).toFixed(2).padStart(6)} ${parts.sort().join(' | ')}`);
    await sleep(Math.max(0, 250 - (Date.now() - at)));
  }
  return lines.join('\n');
}

async function viewsRun(
  db: Knex,
  url: string,
  cluster: NatsCluster,
  nc: NatsConnection,
  tag: string,
  launch: (name: string, entry: string, env: Record<string, string>) => Proc,
): Promise<Array<Array<string | number>>> {
  const ids: number[] = [];
  for (let i = 0; i < 20; i++) ids.push(Number((await db('advertisements').insert({ owner_id: 1, title: `bench ${i}` }))[0]));
  // Every beacon comes from 127.0.0.1: lift the per-IP visitor cap (docs/security.md) as bench:views does.
  const env = {
    NATS_SUBJECT_PREFIX: `${tag}v.`,
    VIEWS_STREAM: `${tag}_views`,
    VIEWS_CONSUMER: 'counter',
    VIEW_HASH_SALT: 'bench',
    RATE_LIMIT_MAX: '100000000',
    VIEW_VISITORS_PER_IP: '100000',
    ADS_PARTS: 'views',
    NATS_REPLICAS: '3',
    VIEW_FLUSH_MS: '200',
  };
  const counters = [
    launch('v1', 'test/fixtures/ads-worker.ts', { ...env, INSTANCE_ID: `${tag}-v1` }),
    launch('v2', 'test/fixtures/ads-worker.ts', { ...env, INSTANCE_ID: `${tag}-v2` }),
  ];
  const jsm = await nc.jetstreamManager();
  for (const deadline = Date.now() + 60_000; ;) {
    const ok = await jsm.consumers.info(env.VIEWS_STREAM, env.VIEWS_CONSUMER).then(
      () => true,
      () => false,
    );
    if (ok) break;
    if (Date.now() > deadline || counters.every((c) => c.child.exitCode !== null))
      throw new Error(`the view counters did not start: ${counters.map((c) => c.name).join(', ')} exited; see their output`);
    await sleep(200);
  }
  const log = createLogger({ level: 'error' });
  const gnc = await connectNats({ url: cluster.urls, name: `${tag}-gw` }, log);
  const gw = await startGatewayRole({ db, nc: gnc, config: loadAdsConfig({ ...env, DATABASE_URL: url }), log, metrics: new Metrics(), port: 0 });
  const meta = await cluster.waitForMetaLeader();
  const victim = await cluster.moveStreamLeader(nc, env.VIEWS_STREAM, meta);
  const accepted = new Map<number, Set<string>>(ids.map((id) => [id, new Set()]));
  const tally = { ok: 0, unavailable: 0, retryAfter: 0, other: 0 };
  let running = true;
  const beacon = async (ad: number, visitor: string): Promise<void> => {
    for (;;) {
      try {
        const res = await fetch(`http://127.0.0.1:${gw.port}/ads/${ad}/views`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ visitor_id: visitor }),
          signal: AbortSignal.timeout(10_000),
        });
        await res.arrayBuffer();
        if (res.status === 202) {
          tally.ok++;
          accepted.get(ad)!.add(visitor);
          return;
        }
        if (res.status !== 503) {
          tally.other++;
          return;
        }
        tally.unavailable++;
        if (res.headers.get('retry-after')) tally.retryAfter++;
        await sleep(200);
      } catch {
        tally.other++;
        return;
      }
    }
  };
  const loops = Array.from({ length: CONCURRENCY }, async (_, k) => {
    for (let n = 0; running; n++) await beacon(ids[(k + n) % ids.length]!, `b${k}-${n}`);
  });
  await sleep(5_000);
  await cluster.kill(victim);
  await sleep(15_000);
  running = false;
  await Promise.all(loops);
  const expected = [...accepted.values()].reduce((a, s) => a + s.size, 0);
  const counted = async (): Promise<number> =>
    Number(((await db('advertisements').whereIn('id', ids).sum({ n: 'views_count' }))[0] as { n: number | string }).n);
  const deadline = Date.now() + 60_000;
  while ((await counted()) < expected && Date.now() < deadline) await sleep(200);
  await sleep(1_000);
  const total = await counted();
  const rows: Array<{ id: number | string; views_count: number | string }> = await db('advertisements').whereIn('id', ids).select('id', 'views_count');
  const exact = rows.every((r) => Number(r.views_count) === accepted.get(Number(r.id))!.size);
  await gw.stop();
  await gnc.close();
  await cluster.restart(victim);
  for (const c of counters) c.child.kill('SIGTERM');
  await Promise.race([Promise.all(counters.map((c) => c.exited)), sleep(20_000)]);
  return [
    [`${victim} (meta + views stream leader), down 15 s`, tally.ok, tally.unavailable, tally.retryAfter, tally.other, total, expected, exact ? 'yes' : 'NO'],
  ];
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
