/**
 * npm run bench:delivery — the delivery pipeline against a strict sandbox with Telegram's
 * limits ×10 (300 msg/s global, 10 msg/s per chat), in its own process.
 *
 * Workloads: 3,000 notifications to 500 users, Zipf(s=1) recipients, then uniform.
 * Then 200 single enqueues on an idle system (latency to the sandbox's receipt).
 */
import { connect } from 'nats';
import { loadConfig } from '../src/config';
import { createLogger } from '../src/log';
import { Metrics } from '../src/metrics';
import { TelegrafClient } from '../src/telegram/client';
import { startPipeline } from '../src/roles/pipeline';
import { createDb } from '../src/db/knex';
import { migrateLatest } from '../src/db/migrate';
import { encodeJson } from '../src/nats/codec';
import { rng, startSandboxProcess, getJson, machine, table, percentile } from './lib';
import type { DeliveredEntry, SandboxStats } from '../sandbox/types';

const GLOBAL = 300;
const CHAT = 10;
const N = 3000;
const USERS = 500;
const TOKEN = '123456:BENCH-token-abcdefghijklmnopqrstuv';
const ROOT_DB = process.env.BENCH_DATABASE_URL ?? 'mysql://root@127.0.0.1:3306/test';
const NATS_URL = process.env.NATS_URL ?? 'nats://127.0.0.1:4222';

function zipfRecipients(n: number, users: number, seed: number): number[] {
  const h = Array.from({ length: users }, (_, k) => 1 / (k + 1)).reduce((a, b) => a + b, 0);
  const r = rng(seed);
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    let u = r() * h;
    let k = 0;
    while (k < users - 1 && u > 1 / (k + 1)) u -= 1 / ++k;
    out.push(k);
  }
  return out;
}

async function main(): Promise<void> {
  const dbName = `bench_delivery_${Date.now().toString(36)}`;
  const root = createDb({ url: ROOT_DB, poolMax: 1 });
  await root.raw(`CREATE DATABASE ${dbName}`);
  const url = ROOT_DB.replace(/\/[^/]*$/, `/${dbName}`);
  const loader = createDb({ url, poolMax: 2 });
  await migrateLatest(loader);
  const sandbox = await startSandboxProcess(['--global-rate', String(GLOBAL), '--chat-rate', String(CHAT)]);
  const nc = await connect({ servers: NATS_URL });
  const results: Array<Array<string | number>> = [];
  let latencyRow: Array<string | number> = [];
  try {
    for (const workload of ['zipf', 'uniform'] as const) {
      await fetch(`${sandbox.apiRoot}sandbox/reset`, { method: 'POST' });
      await loader.raw('TRUNCATE telegram_notifications');
      const recipients = workload === 'zipf' ? zipfRecipients(N, USERS, 42) : Array.from({ length: N }, (_, i) => i % USERS);
      const perChat = new Map<number, number>();
      const rows = recipients.map((k, i) => {
        const chat = 10_000 + k;
        perChat.set(chat, (perChat.get(chat) ?? 0) + 1);
        return { telegram_id: chat, message_text: `${workload}-${i}` };
      });
      for (let i = 0; i < rows.length; i += 1000) await loader('telegram_notifications').insert(rows.slice(i, i + 1000));
      const maxPerChat = Math.max(...perChat.values());
      const ideal = Math.max(N / GLOBAL, maxPerChat / CHAT);

      const config = loadConfig({ DATABASE_URL: url, NATS_URL, TELEGRAM_BOT_TOKEN: TOKEN, TELEGRAM_API_ROOT: sandbox.apiRoot, TELEGRAM_GLOBAL_RATE: String(GLOBAL), TELEGRAM_CHAT_RATE: String(CHAT), INSTANCE_ID: `bench-${workload}`, LOG_LEVEL: 'warn', NATS_SUBJECT_PREFIX: 'benchdelivery.' });
      const db = createDb({ url, poolMax: 10 });
      let statements = 0;
      db.on('query', () => statements++);
      const t0 = Date.now();
      const pipeline = await startPipeline({ ownAllShards: true, config, log: createLogger({ level: 'warn' }), metrics: new Metrics(), db, nc, telegram: new TelegrafClient({ token: TOKEN, apiRoot: sandbox.apiRoot, timeoutMs: 10_000 }) });
      for (;;) {
        const [[r]] = (await loader.raw("SELECT COUNT(*) AS n FROM telegram_notifications WHERE status IN ('sent','failed')")) as [[{ n: number }]];
        if (Number(r.n) >= N) break;
        await new Promise((res) => setTimeout(res, 100));
      }
      const delivered = await getJson<DeliveredEntry[]>(`${sandbox.apiRoot}sandbox/delivered`);
      const stats = await getJson<SandboxStats>(`${sandbox.apiRoot}sandbox/stats`);
      const wall = (Math.max(...delivered.map((d) => d.at)) - t0) / 1000;
      await pipeline.stop();
      const stmts = statements;
      await db.destroy();
      const distinct = new Set(delivered.map((d) => d.text)).size;
      const [[sentRow]] = (await loader.raw("SELECT COUNT(*) AS n FROM telegram_notifications WHERE status = 'sent'")) as [[{ n: number }]];
      const rejected = stats.rejected['429'] ?? 0;
      results.push([workload, N, maxPerChat, ideal.toFixed(1), wall.toFixed(2), (ideal / wall).toFixed(3), rejected, `${((rejected / Math.max(1, stats.requests)) * 100).toFixed(2)} %`, N - Number(sentRow.n), delivered.length - distinct, (stmts / N).toFixed(3)]);
    }

    // Idle latency: one enqueue at a time on an idle system, until the sandbox received it.
    await fetch(`${sandbox.apiRoot}sandbox/reset`, { method: 'POST' });
    await loader.raw('TRUNCATE telegram_notifications');
    const config = loadConfig({ DATABASE_URL: url, NATS_URL, TELEGRAM_BOT_TOKEN: TOKEN, TELEGRAM_API_ROOT: sandbox.apiRoot, TELEGRAM_GLOBAL_RATE: String(GLOBAL), TELEGRAM_CHAT_RATE: String(CHAT), INSTANCE_ID: 'bench-idle', LOG_LEVEL: 'warn', NATS_SUBJECT_PREFIX: 'benchdelivery.' });
    const db = createDb({ url, poolMax: 10 });
    const pipeline = await startPipeline({ ownAllShards: true, config, log: createLogger({ level: 'warn' }), metrics: new Metrics(), db, nc, telegram: new TelegrafClient({ token: TOKEN, apiRoot: sandbox.apiRoot, timeoutMs: 10_000 }) });
    const lat: number[] = [];
    for (let i = 0; i < 200; i++) {
      const chat = 50_000 + i;
      const t = Date.now();
      const r = JSON.parse(new TextDecoder().decode((await nc.request(pipeline.subjects.enqueue, encodeJson({ chat_id: chat, text: `idle-${i}` }), { timeout: 5_000 })).data)) as { ok: boolean };
      if (!r.ok) throw new Error('enqueue failed');
      for (;;) {
        const d = await getJson<DeliveredEntry[]>(`${sandbox.apiRoot}sandbox/delivered?chat_id=${chat}`);
        if (d.length) {
          lat.push(d[0]!.at - t);
          break;
        }
        await new Promise((res) => setTimeout(res, 2));
      }
      await new Promise((res) => setTimeout(res, 20));
    }
    await pipeline.stop();
    await db.destroy();
    lat.sort((a, b) => a - b);
    latencyRow = [200, percentile(lat, 50), percentile(lat, 99), lat[lat.length - 1]!];
  } finally {
    await nc.close();
    await sandbox.stop();
    await loader.destroy();
    await root.raw(`DROP DATABASE ${dbName}`);
    await root.destroy();
  }

  console.log(`\nbench:delivery — sandbox limits ${GLOBAL} msg/s global, ${CHAT} msg/s per chat; ${machine()}\n`);
  console.log(table(['workload', 'notifications', 'max/chat', 'ideal s', 'wall s', 'ideal÷actual', '429s', '429 %', 'lost', 'duplicates', 'DB stmts/notif'], results));
  console.log('\nTargets: ideal÷actual ≥ 0.97, 0 lost, 0 duplicates, 429s ≤ 0.1 % of sends, ≤ 0.1 DB statements per notification.\n');
  console.log(table(['idle enqueues', 'p50 ms', 'p99 ms', 'max ms'], [latencyRow]));
  console.log('\nTarget: idle p99 ≤ 50 ms (enqueue request → sandbox received the sendMessage).\n');
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
