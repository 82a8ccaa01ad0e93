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
 *   stricter group: three workers on a backlog to 60 groups × 150, the sandbox holding each group to half
 *     of what the workers are told (10 vs 20 per window); the group window is BENCH_GROUP_WINDOW_MS
 *     (3 000 ms by default, sandbox and workers alike, so the run takes ~45 s instead of 15 minutes)
 * BENCH_ONLY=formation,steady picks the parts; BENCH_ONLY=stricter (or stricter-group, cold, rolling, kill) one row of formation.
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
import { startSandboxProcess, getJson, machine, table, firstDeliveryAfter, knowingSenderDrain } from './lib';
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
const GROUP_WINDOW_MS = Number(process.env.BENCH_GROUP_WINDOW_MS ?? 3_000);
if (!(GROUP_WINDOW_MS >= 100)) throw new Error(`BENCH_GROUP_WINDOW_MS must be at least 100 ms, got ${process.env.BENCH_GROUP_WINDOW_MS}`);
/** BENCH_LOG_DIR: the formation workers log at info into files there, with each run's deliveries per 100 ms (to see where time went). */
const LOG_DIR = process.env.BENCH_LOG_DIR;

async function main(): Promise<void> {
  // `-- --nats-nodes 3`: the node-failure scenarios on a three-node NATS cluster (bench/cluster-failover.ts).
  const natsNodes = natsNodesFlag(process.argv);
  if (natsNodes > 1) return runClusterFailover(natsNodes).then(() => process.exit(0));
  if (['formation', 'cold', 'rolling', 'kill', 'stricter', 'stricter-group'].some((x) => only.has(x))) await formation();
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
    /**
     * Groups instead of private chats: the backlog goes to `chats` groups, the sandbox takes `serverPerMin`
     * per group, the workers are told `toldPerMin`, both over `windowMs` windows. The ideal is then a sender's
     * that knows the server's limits (bench/lib.ts knowingSenderDrain), the rate the groups' sum.
     */
    groups?: { serverPerMin: number; toldPerMin: number; windowMs: number };
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
  const g = opts.groups;
  const sandbox = await startSandboxProcess([
    '--global-rate',
    String(server),
    '--chat-rate',
    String(CHAT),
    ...(g ? ['--group-rate-per-min', String(g.serverPerMin), '--group-window-ms', String(g.windowMs)] : []),
  ]);
  const nc = await connect({ servers: NATS_URL });
  const procs: Proc[] = [];
  const launch = (pname: string): Proc => {
    const child = spawn(process.execPath, ['--import', 'tsx', WORKER_MAIN], {
      env: {
        ...workerEnv(url, sandbox.apiRoot, pname, t, LOG_DIR ? 'info' : 'warn'),
        ...(g ? { TELEGRAM_GROUP_RATE_PER_MIN: String(g.toldPerMin), TELEGRAM_GROUP_WINDOW_MS: String(g.windowMs) } : {}),
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
    // Groups have negative ids; interleaved, as a broadcast to several groups would be queued.
    const data = Array.from({ length: opts.n }, (_, i) => ({ telegram_id: (g ? -1 : 1) * (400_000 + (i % opts.chats)), message_text: `${name}-${i}` }));
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
      // Per chat: first and last delivery (s from the run's first) and its longest gap, worst first: who started late or stalled.
      const byChat = new Map<number, number[]>();
      for (const x of d) byChat.set(x.chatId, [...(byChat.get(x.chatId) ?? []), x.at]);
      const chatLines = [...byChat]
        .map(([id, a]) => {
          a.sort((x, y) => x - y);
          const gap = Math.max(0, ...a.slice(1).map((x, i) => x - a[i]!));
          // Groups: how much longer than a window the server's window took to refill (mean of at[k + per] - at[k] - window).
          const per = g ? Math.round((g.serverPerMin * g.windowMs) / 60_000) : 0;
          const drifts = g ? a.slice(per).map((x, k) => x - a[k]! - g.windowMs) : [];
          const drift = drifts.length ? drifts.reduce((x, y) => x + y, 0) / drifts.length : 0;
          return { id, first: (a[0]! - ats[0]!) / 1000, last: (a[a.length - 1]! - ats[0]!) / 1000, gap: gap / 1000, n: a.length, drift };
        })
        .sort((x, y) => y.last - x.last)
        .map(
          (c) =>
            `${c.id} n ${c.n} first ${c.first.toFixed(2)} last ${c.last.toFixed(2)} longest gap ${c.gap.toFixed(2)}${g ? ` window refilled ${c.drift.toFixed(0)} ms late` : ''}`,
        );
      writeFileSync(`${LOG_DIR}/${t}-chats.txt`, `${chatLines.join('\n')}\n`);
    }
    const wall = (ats[ats.length - 1]! - ats[0]!) / 1000;
    const ideal = g ? knowingSenderDrain(data, server, g.serverPerMin, g.windowMs) : Math.max(opts.n / server, Math.ceil(opts.n / opts.chats) / CHAT);
    // The server's real rate: bot-wide, or the groups' sum when that is lower.
    const rate = g ? Math.min(server, opts.chats * (g.serverPerMin / 60)) : server;
    // The same with the documented waits: the dead process's unsent rows go at the full rate only
    // after the lease TTL and one chat window (the others' rows may all go before).
    const idealW = waits ? Math.max(ideal, (waits.killAt - ats[0]!) / 1000 + TTL / 1000 + 1 / CHAT + waits.deadRows / server) : ideal;
    const rl = st.rateLimited;
    const r429 = rl.global + rl.chat + rl.group;
    const pct = (k: number): string => ((k / Math.max(1, st.requests)) * 100).toFixed(2);
    const distinct = new Set(d.map((x) => x.text)).size;
    const ph = phases(ats, rate);
    // Groups: each group's rate once settled (from the delivery after its first refusal, over whole windows' worth)
    // ÷ the server's per-group rate: the controller's steady state, without the cluster's start-up.
    let settled = '–';
    if (g) {
      const per = Math.round((g.serverPerMin * g.windowMs) / 60_000);
      let sends = 0;
      let spanMs = 0;
      const byGroup = new Map<number, number[]>();
      for (const x of d) byGroup.set(x.chatId, [...(byGroup.get(x.chatId) ?? []), x.at]);
      for (const a of byGroup.values()) {
        a.sort((x, y) => x - y);
        const last = per + Math.floor((a.length - 1 - per) / per) * per;
        if (last <= per) continue;
        sends += last - per;
        spanMs += a[last]! - a[per]!;
      }
      settled = (((sends / spanMs) * 1000) / (g.serverPerMin / 60)).toFixed(3);
    }
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
      settled,
      `${rl.global}/${rl.chat}/${rl.group}`,
      `${pct(r429)} % (${pct(rl.global)}/${pct(rl.chat)}/${pct(rl.group)})`,
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
  if (pick('stricter-group')) {
    // 60 groups × 150: the server takes 10 per group per window (100/min at Telegram's minute), the workers are
    // told 20; 60 × 10 per 3 s is 200/s, under the bot's 300/s, so the groups' windows bind.
    const windows = GROUP_WINDOW_MS / 1000;
    rows.push(
      await formationRun(`stricter group (10 per ${windows} s, told 20; 60 groups × 150)`, {
        n: 9000,
        chats: 60,
        procs: 3,
        groups: { serverPerMin: (10 * 60_000) / GROUP_WINDOW_MS, toldPerMin: (20 * 60_000) / GROUP_WINDOW_MS, windowMs: GROUP_WINDOW_MS },
        run: async ({ launch }) => ['a', 'b', 'c'].forEach((p) => launch(p)),
      }),
    );
  }
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
        'groups settled ÷ rate',
        '429s global/chat/group',
        '429 % of sends (global/chat/group)',
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
  console.log(
    "\"stricter group\": the ideal is a sender's that knows the server's limits (each message at the first instant the bot's and its group's windows admit it), so ideal÷actual is the achieved share of the server's real rate; \"mid\" is relative to the groups' summed rate; \"groups settled\" is each group's rate from the delivery after its first refusal, over whole windows, ÷ the server's per-group rate.",
  );
  console.log('\nTargets: 429s ≤ 0.1 % of sends (stricter server, global or group: ≤ 1 %, ≥ 0.95 of its rate), 0 chat-scope 429s, 0 lost.\n');
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
