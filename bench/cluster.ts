/**
 * npm run bench:cluster — three worker processes (real `src/main.ts` children) sharing one
 * bot budget against the sandbox with Telegram's limits ×10 (300 msg/s global, 10 msg/s
 * per chat, in its own process).
 *
 *   skewed : every recipient in the shards of ONE process (the others idle)
 *   uniform: recipients spread over all shards
 *   takeover: SIGKILL one process mid-run; time until its shards deliver again
 *
 * Rate control while the cluster forms or changes (issue 9), each on a pre-filled backlog,
 * each printing ideal ÷ actual, 429s by scope, lost, duplicates:
 *   cold start 3 / cold start 5: the workers started at the same instant
 *   rolling restart: three workers, each SIGTERMed and started again in turn
 *   kill -9: one of three SIGKILLed mid-run (its chats' windows unknown to the new owner)
 *   stricter global: three workers told 300/s, the sandbox at 200/s
 * BENCH_ONLY=formation,steady picks the parts; BENCH_ONLY=stricter (or cold, rolling, kill) one row of formation.
 *
 * `npm run bench:cluster -- --nats-nodes 3`: a node of a three-node NATS cluster dies instead
 * (bench/cluster-failover.ts).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { openSync, writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { connect } from 'nats';
import { createDb } from '../src/db/knex';
import { migrateLatest } from '../src/db/migrate';
import { shardOf } from '../src/outbox/shard';
import type { ClusterStatus } from '../src/roles/cluster';
import type { DeliveredEntry, SandboxStats } from '../sandbox/types';
import { startSandboxProcess, getJson, machine, table, firstDeliveryAfter } from './lib';
import { natsNodesFlag, runClusterFailover } from './cluster-failover';

const GLOBAL = 300;
const CHAT = 10;
const N = 6000;
const TOKEN = '123456:BENCH-token-abcdefghijklmnopqrstuv';
const ROOT_DB = process.env.BENCH_DATABASE_URL ?? 'mysql://root@127.0.0.1:3306/test';
const NATS_URL = process.env.NATS_URL ?? 'nats://127.0.0.1:4222';
const TTL = Number(process.env.SHARD_LEASE_TTL_MS ?? 6000);
const tag = `benchcl${Date.now().toString(36)}`;
/** The worker entry point; BENCH_WORKER_MAIN runs another checkout's workers (to compare two versions on the same machine). */
const WORKER_MAIN = process.env.BENCH_WORKER_MAIN ?? resolve(__dirname, '../src/main.ts');

/**
 * Where the time goes, from the sandbox's delivery times: `ramp` from the first delivery to the
 * start of the first 1 s window (sliding by 50 ms) holding ≥ 90 % of the server's rate, `tail`
 * from the end of the last such window to the last delivery, `mid` the rate between them ÷ the
 * server's rate.
 */
function phases(ats: number[], rate: number): { ramp: number; mid: number; tail: number } {
  const t0 = ats[0]!;
  const end = ats[ats.length - 1]!;
  let first = -1;
  let last = -1;
  let lo = 0;
  let hi = 0;
  for (let t = t0; t + 1000 <= end + 50; t += 50) {
    while (lo < ats.length && ats[lo]! < t) lo++;
    while (hi < ats.length && ats[hi]! < t + 1000) hi++;
    if (hi - lo >= 0.9 * rate) {
      if (first < 0) first = t;
      last = t + 1000;
    }
  }
  if (first < 0) return { ramp: (end - t0) / 1000, mid: 0, tail: 0 };
  const inside = ats.filter((a) => a >= first && a < last).length;
  return { ramp: (first - t0) / 1000, mid: inside / ((last - first) / 1000) / rate, tail: Math.max(0, end - last) / 1000 };
}

interface Proc {
  name: string;
  child: ChildProcess;
  exited: Promise<void>;
}

const only = new Set((process.env.BENCH_ONLY ?? 'formation,steady').split(','));
/** BENCH_LOG_DIR: the formation workers log at info into files there, with each run's deliveries per 100 ms (to see where time went). */
const LOG_DIR = process.env.BENCH_LOG_DIR;

async function main(): Promise<void> {
  // `-- --nats-nodes 3`: the node-failure scenarios on a three-node NATS cluster (bench/cluster-failover.ts).
  const natsNodes = natsNodesFlag(process.argv);
  if (natsNodes > 1) return runClusterFailover(natsNodes).then(() => process.exit(0));
  if (['formation', 'cold', 'rolling', 'kill', 'stricter'].some((x) => only.has(x))) await formation();
  if (only.has('steady')) await steady();
}

/** One scenario of the formation table: fresh DB, sandbox, bucket; the backlog inserted before anything starts. */
/**
 * What a scenario's run may say about waits the design makes on purpose: after a kill -9 the dead
 * process's shards wait for its lease to lapse (TTL) and then one full chat window; its rows still
 * unsent at the kill (`deadRows`) cannot go before that.
 */
interface Waits {
  killAt: number;
  deadRows: number;
}

async function formationRun(
  name: string,
  opts: {
    n: number;
    chats: number;
    procs: number;
    server?: number;
    run: (ctx: {
      launch: (p: string) => Proc;
      procs: Proc[];
      sentCount: () => Promise<number>;
      waitBalanced: (k: number) => Promise<void>;
      status: () => Promise<ClusterStatus>;
      unsentIn: (shards: number[]) => Promise<number>;
    }) => Promise<Waits> | Promise<void>;
  },
): Promise<Array<string | number>> {
  const t = `${tag}${name
    .replace(/[^a-z0-9]/gi, '')
    .slice(0, 10)
    .toLowerCase()}`;
  const root = createDb({ url: ROOT_DB, poolMax: 1 });
  await root.raw(`CREATE DATABASE ${t}`);
  const url = ROOT_DB.replace(/\/[^/]*$/, `/${t}`);
  const db = createDb({ url, poolMax: 4 });
  await migrateLatest(db);
  const server = opts.server ?? GLOBAL;
  const sandbox = await startSandboxProcess(['--global-rate', String(server), '--chat-rate', String(CHAT)]);
  const nc = await connect({ servers: NATS_URL });
  const procs: Proc[] = [];
  const launch = (pname: string): Proc => {
    const child = spawn(process.execPath, ['--import', 'tsx', WORKER_MAIN], {
      env: {
        ...workerEnv(url, sandbox.apiRoot, pname, t, LOG_DIR ? 'info' : 'warn'),
      },
      stdio: LOG_DIR ? ['ignore', openSync(`${LOG_DIR}/${t}-${pname}-${procs.length}.log`, 'a'), 'inherit'] : 'ignore',
    });
    const p = { name: pname, child, exited: new Promise<void>((r) => child.once('exit', () => r())) };
    procs.push(p);
    return p;
  };
  const sentCount = async (): Promise<number> =>
    Number(((await db('telegram_notifications').where({ status: 'sent' }).count({ n: '*' }))[0] as { n: number | string }).n);
  const status = async (): Promise<ClusterStatus> =>
    JSON.parse(new TextDecoder().decode((await nc.request(`${t}.notify.cluster.status`, new Uint8Array(), { timeout: 5_000 })).data)) as ClusterStatus;
  const unsentIn = async (shards: number[]): Promise<number> =>
    Number(((await db('telegram_notifications').whereIn('shard', shards).whereNot({ status: 'sent' }).count({ n: '*' }))[0] as { n: number | string }).n);
  const waitBalanced = async (k: number): Promise<void> => {
    for (;;) {
      try {
        const s = await status();
        const counts = s.processes.map((p) => p.owned.length);
        if (s.processes.length === k && counts.reduce((a, b) => a + b, 0) === 64 && counts.every((c) => c >= Math.floor(64 / k) && c <= Math.ceil(64 / k)))
          return;
      } catch {
        /* not up yet */
      }
      await new Promise((r) => setTimeout(r, 200));
    }
  };
  try {
    const data = Array.from({ length: opts.n }, (_, i) => ({ telegram_id: 400_000 + (i % opts.chats), message_text: `${name}-${i}` }));
    for (let i = 0; i < data.length; i += 1000) await db('telegram_notifications').insert(data.slice(i, i + 1000));
    // With BENCH_LOG_DIR: every process's budget (share, mode, demand, rate) four times a second.
    const trace: string[] = [];
    let tracing = LOG_DIR !== undefined;
    const tracer = (async () => {
      while (tracing) {
        const st = await status().catch(() => undefined);
        if (st)
          trace.push(
            `${new Date().toISOString()} ${st.processes
              .map((p) => `${p.instance[0]}:${p.budget.share}/${p.budget.demand}/${p.budget.mode[0]}/${p.queued + p.buffered}`)
              .join(' ')} rate ${st.budget?.rate.toFixed(1)}`,
          );
        await new Promise((r) => setTimeout(r, 250));
      }
    })();
    const waits = await opts.run({ launch, procs, sentCount, waitBalanced, status, unsentIn });
    while ((await sentCount()) < opts.n) await new Promise((r) => setTimeout(r, 200));
    tracing = false;
    await tracer;
    if (LOG_DIR) writeFileSync(`${LOG_DIR}/${t}-budget.txt`, `${trace.join('\n')}\n`);
    const d = await getJson<DeliveredEntry[]>(`${sandbox.apiRoot}sandbox/delivered`);
    const st = await getJson<SandboxStats>(`${sandbox.apiRoot}sandbox/stats`);
    const ats = d.map((x) => x.at).sort((a, b) => a - b);
    if (LOG_DIR) {
      const per = new Map<number, number>();
      for (const a of ats) per.set(Math.floor(a / 100), (per.get(Math.floor(a / 100)) ?? 0) + 1);
      const lines = [...per].map(([k, v]) => `${new Date(k * 100).toISOString()} ${v}`);
      writeFileSync(`${LOG_DIR}/${t}-delivered.txt`, `${lines.join('\n')}\n`);
    }
    const wall = (ats[ats.length - 1]! - ats[0]!) / 1000;
    const ideal = Math.max(opts.n / server, Math.ceil(opts.n / opts.chats) / CHAT);
    // The same with the documented waits: the dead process's unsent rows go at the full rate only
    // after the lease TTL and one chat window (the others' rows may all go before).
    const idealW = waits ? Math.max(ideal, (waits.killAt - ats[0]!) / 1000 + TTL / 1000 + 1 / CHAT + waits.deadRows / server) : ideal;
    const rl = st.rateLimited;
    const r429 = rl.global + rl.chat + rl.group;
    const distinct = new Set(d.map((x) => x.text)).size;
    const ph = phases(ats, server);
    const row = [
      name,
      opts.procs,
      opts.n,
      ideal.toFixed(1),
      wall.toFixed(2),
      (ideal / wall).toFixed(3),
      idealW.toFixed(1),
      (idealW / wall).toFixed(3),
      `${ph.ramp.toFixed(2)} / ${ph.mid.toFixed(3)} / ${ph.tail.toFixed(2)}`,
      `${rl.global}/${rl.chat}/${rl.group}`,
      `${((r429 / Math.max(1, st.requests)) * 100).toFixed(2)} %`,
      opts.n - distinct,
      d.length - distinct,
    ];
    console.log(`  ${row.join(' | ')}`);
    return row;
  } finally {
    for (const p of procs) p.child.kill('SIGTERM');
    await Promise.race([Promise.all(procs.map((p) => p.exited)), new Promise((r) => setTimeout(r, 20_000))]);
    for (const p of procs) p.child.kill('SIGKILL');
    const jsm = await nc.jetstreamManager();
    for (const b of [t, `${t}_handoff`]) await jsm.streams.delete(`KV_${b}`).catch(() => undefined);
    await nc.close();
    await sandbox.stop();
    await db.destroy();
    await root.raw(`DROP DATABASE ${t}`);
    await root.destroy();
  }
}

async function formation(): Promise<void> {
  const rows: Array<Array<string | number>> = [];
  const N2 = Number(process.env.BENCH_N ?? 3000);
  const CH = 600;
  const pick = (row: string): boolean => only.has('formation') || only.has(row);
  for (const k of pick('cold') ? [3, 5] : []) {
    rows.push(
      await formationRun(`cold start ${k}`, {
        n: N2,
        chats: CH,
        procs: k,
        run: async ({ launch }) => void Array.from({ length: k }, (_, i) => launch(String.fromCharCode(97 + i))),
      }),
    );
  }
  if (pick('rolling'))
    rows.push(
      await formationRun('rolling restart', {
        n: 6000,
        chats: CH,
        procs: 3,
        run: async ({ launch, procs, waitBalanced }) => {
          ['a', 'b', 'c'].forEach((p) => launch(p));
          await waitBalanced(3);
          for (const name of ['a', 'b', 'c']) {
            const p = procs.find((x) => x.name === name && x.child.exitCode === null && x.child.signalCode === null)!;
            p.child.kill('SIGTERM');
            await p.exited;
            launch(name);
            await waitBalanced(3);
          }
        },
      }),
    );
  if (pick('kill'))
    rows.push(
      await formationRun('kill -9', {
        n: N2,
        chats: CH,
        procs: 3,
        run: async ({ launch, sentCount, status, unsentIn }) => {
          const [a] = ['a', 'b', 'c'].map((p) => launch(p));
          while ((await sentCount()) < N2 / 4) await new Promise((r) => setTimeout(r, 50));
          const owned = (await status()).processes.find((p) => p.instance.startsWith('a-'))?.owned ?? [];
          a!.child.kill('SIGKILL');
          const killAt = Date.now();
          return { killAt, deadRows: await unsentIn(owned) };
        },
      }),
    );
  if (pick('stricter'))
    rows.push(
      await formationRun('stricter global (200/s, told 300/s)', {
        n: N2,
        chats: CH,
        procs: 3,
        server: 200,
        run: async ({ launch }) => ['a', 'b', 'c'].forEach((p) => launch(p)),
      }),
    );
  console.log(
    `\nbench:cluster — formation and change; workers told ${GLOBAL} msg/s global, ${CHAT} msg/s per chat; sandbox at the same limits unless the scenario says; lease TTL ${TTL} ms; ${machine()}\n`,
  );
  console.log(
    table(
      [
        'scenario',
        'processes',
        'notifications',
        'ideal s',
        'first→last s',
        'ideal÷actual',
        'ideal with waits s',
        '÷ actual',
        'ramp s / mid ÷ rate / tail s',
        '429s global/chat/group',
        '429 %',
        'lost',
        'duplicates',
      ],
      rows,
    ),
  );
  console.log(
    `\n"ideal with waits": kill -9 adds the waits the design makes on purpose: the dead process's rows unsent at the kill go only after the lease TTL (${TTL} ms) and one chat window, then at the full rate. The other scenarios have none (graceful handoffs carry the chat windows).`,
  );
  console.log(
    '"ramp / mid / tail": from the first delivery to the first 1 s window at ≥ 90 % of the server\'s rate; the rate between the first and the last such window ÷ the server\'s; from the last such window to the last delivery.',
  );
  console.log('\nTargets: 429s ≤ 0.1 % of sends (stricter server: ≤ 1 %, ≥ 0.95 of its rate), 0 chat-scope 429s, 0 lost.\n');
}

async function steady(): Promise<void> {
  const root = createDb({ url: ROOT_DB, poolMax: 1 });
  await root.raw(`CREATE DATABASE ${tag}`);
  const url = ROOT_DB.replace(/\/[^/]*$/, `/${tag}`);
  const db = createDb({ url, poolMax: 4 });
  await migrateLatest(db);
  const sandbox = await startSandboxProcess(['--global-rate', String(GLOBAL), '--chat-rate', String(CHAT)]);
  const nc = await connect({ servers: NATS_URL });
  const procs: Proc[] = [];
  const rows: Array<Array<string | number>> = [];
  let takeoverRow: Array<string | number>;
  const launch = (name: string): Proc => {
    const child = spawn(process.execPath, ['--import', 'tsx', WORKER_MAIN], {
      env: {
        ...workerEnv(url, sandbox.apiRoot, name, tag, 'warn'),
      },
      stdio: 'ignore',
    });
    const p = { name, child, exited: new Promise<void>((r) => child.once('exit', () => r())) };
    procs.push(p);
    return p;
  };
  const status = async (): Promise<ClusterStatus> =>
    JSON.parse(new TextDecoder().decode((await nc.request(`${tag}.notify.cluster.status`, new Uint8Array(), { timeout: 5_000 })).data)) as ClusterStatus;
  const balanced = async (n: number): Promise<ClusterStatus> => {
    for (;;) {
      try {
        const s = await status();
        const counts = s.processes.map((p) => p.owned.length);
        if (s.processes.length === n && counts.reduce((a, b) => a + b, 0) === 64 && counts.every((c) => c >= Math.floor(64 / n) && c <= Math.ceil(64 / n)))
          return s;
      } catch {
        /* not up yet */
      }
      await new Promise((r) => setTimeout(r, 200));
    }
  };
  const sent = async (): Promise<number> =>
    Number(((await db('telegram_notifications').where({ status: 'sent' }).count({ n: '*' }))[0] as { n: number | string }).n);
  const runWorkload = async (name: string, chats: number[]): Promise<void> => {
    await fetch(`${sandbox.apiRoot}sandbox/reset`, { method: 'POST' });
    await db.raw('TRUNCATE telegram_notifications');
    const data = Array.from({ length: N }, (_, i) => ({ telegram_id: chats[i % chats.length]!, message_text: `${name}-${i}` }));
    for (let i = 0; i < data.length; i += 1000) await db('telegram_notifications').insert(data.slice(i, i + 1000));
    while ((await sent()) < N) await new Promise((r) => setTimeout(r, 200));
    const d = await getJson<DeliveredEntry[]>(`${sandbox.apiRoot}sandbox/delivered`);
    const st = await getJson<SandboxStats>(`${sandbox.apiRoot}sandbox/stats`);
    const ats = d.map((x) => x.at).sort((a, b) => a - b);
    // Steady state: the time to deliver N messages, from the first to the last delivery.
    const wall = (ats[ats.length - 1]! - ats[0]!) / 1000;
    const rate = (N - 1) / wall;
    rows.push([
      name,
      N,
      chats.length,
      wall.toFixed(2),
      rate.toFixed(1),
      (rate / GLOBAL).toFixed(3),
      st.rejected['429'] ?? 0,
      N - new Set(d.map((x) => x.text)).size,
      d.length - new Set(d.map((x) => x.text)).size,
      st.peakGlobalWindow,
    ]);
  };
  try {
    launch('a');
    launch('b');
    launch('c');
    const st = await balanced(3);
    const ownerOf = (p: string) => new Set(st.processes.find((x) => x.instance.startsWith(`${p}-`))!.owned);
    const aShards = ownerOf('a');
    const skewed: number[] = [];
    for (let c = 100_000; skewed.length < 300; c++) if (aShards.has(shardOf(c, 64))) skewed.push(c);
    await runWorkload('skewed (all in one process)', skewed);
    await runWorkload(
      'uniform',
      Array.from({ length: 600 }, (_, i) => 200_000 + i),
    );

    // Takeover: kill c mid-run, time until a chat in its shards receives again.
    const cShards = ownerOf('c');
    await fetch(`${sandbox.apiRoot}sandbox/reset`, { method: 'POST' });
    await db.raw('TRUNCATE telegram_notifications');
    const chats = Array.from({ length: 300 }, (_, i) => 300_000 + i);
    const cChats = new Set(chats.filter((c) => cShards.has(shardOf(c, 64))));
    const data = Array.from({ length: 3000 }, (_, i) => ({ telegram_id: chats[i % chats.length]!, message_text: `k-${i}` }));
    for (let i = 0; i < data.length; i += 1000) await db('telegram_notifications').insert(data.slice(i, i + 1000));
    while ((await getJson<SandboxStats>(`${sandbox.apiRoot}sandbox/stats`)).accepted.messages < 600) await new Promise((r) => setTimeout(r, 50));
    const victim = procs.find((p) => p.name === 'c')!;
    victim.child.kill('SIGKILL');
    const killedAt = Date.now();
    await victim.exited;
    const firstAfter = await firstDeliveryAfter(sandbox.apiRoot, killedAt + 50, cChats);
    while ((await sent()) < 3000) await new Promise((r) => setTimeout(r, 200));
    const d = await getJson<DeliveredEntry[]>(`${sandbox.apiRoot}sandbox/delivered`);
    const distinct = new Set(d.map((x) => x.text)).size;
    takeoverRow = [TTL, ((firstAfter - killedAt) / 1000).toFixed(2), 3000 - distinct, d.length - distinct];
  } finally {
    for (const p of procs) p.child.kill('SIGTERM');
    await Promise.race([Promise.all(procs.map((p) => p.exited)), new Promise((r) => setTimeout(r, 20_000))]);
    for (const p of procs) p.child.kill('SIGKILL');
    await nc
      .jetstream()
      .views.kv(tag)
      .then((kv) => kv.destroy())
      .catch(() => undefined);
    await nc.close();
    await sandbox.stop();
    await db.destroy();
    await root.raw(`DROP DATABASE ${tag}`);
    await root.destroy();
  }
  console.log(`\nbench:cluster — 3 worker processes, sandbox limits ${GLOBAL} msg/s global, ${CHAT} msg/s per chat; ${machine()}\n`);
  console.log(
    table(['workload', 'notifications', 'chats', 'first→last s', 'msg/s', 'msg/s ÷ limit', '429s', 'lost', 'duplicates', 'peak global window'], rows),
  );
  console.log('\nTargets: ≥ 0.95 of the limit on both, 0 rejected, 0 lost.\n');
  console.log(table(['lease TTL ms', 'SIGKILL → first delivery from its shards, s', 'lost', 'duplicates (rows in flight at the kill)'], [takeoverRow]));
  console.log('\nTarget: takeover ≤ 10 s.\n');
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});

/** A bench worker's environment: one cluster (bucket and subject prefix `tag`), the bench's rates and lease TTL. */
function workerEnv(url: string, apiRoot: string, name: string, tag: string, logLevel: string): Record<string, string> {
  return {
    PATH: process.env.PATH ?? '',
    DATABASE_URL: url,
    NATS_URL,
    TELEGRAM_BOT_TOKEN: TOKEN,
    TELEGRAM_API_ROOT: apiRoot,
    TELEGRAM_GLOBAL_RATE: String(GLOBAL),
    TELEGRAM_CHAT_RATE: String(CHAT),
    INSTANCE_ID: `${name}-${tag}`,
    CLUSTER_BUCKET: tag,
    NATS_SUBJECT_PREFIX: `${tag}.`,
    SHARD_LEASE_TTL_MS: String(TTL),
    ROLE: 'worker',
    METRICS_PORT: '0',
    LOG_LEVEL: logLevel,
  };
}
