/**
 * `npm run bench:views` — throughput of the view path, against real MariaDB and NATS:
 *  1. autocannon against POST /ads/:id/views on a gateway in a child process
 *     (beacons/s answered 202 after the JetStream ack, p99 latency);
 *  2. a NATS publisher fills the stream with BENCH_VIEWS distinct views, then a view
 *     counter drains it (views/s counted through to the database);
 *  3. DB statements the counter sent per 1,000 views.
 * Env: DATABASE_URL (a server; a scratch database is created and dropped), NATS_URL,
 * BENCH_SECONDS (default 10), BENCH_CONNECTIONS (default 64), BENCH_VIEWS (default 200000).
 */
import { randomBytes } from 'node:crypto';
import autocannon from 'autocannon';
import { spawn } from 'node:child_process';
import { createDb, countStatements } from '../src/db/knex';
import { migrateLatest } from '../src/db/migrate';
import { createLogger } from '../src/log';
import { Metrics } from '../src/metrics';
import { connectNats } from '../src/nats/connection';
import { encodeJson } from '../src/nats/codec';
import { Subjects } from '../src/nats/subjects';
import { startActorSystem, stopActorSystem } from '../src/runtime/actor';
import { loadAdsConfig, startAds, startGatewayRole } from '../src/roles/ads';
import { ensureViewsConsumer, ensureViewsStream } from '../src/ads/views-stream';
import { machine, table } from './lib';

const ROOT_URL = process.env.DATABASE_URL ?? 'mysql://root@127.0.0.1:3306/test';
const NATS_URL = process.env.NATS_URL ?? 'nats://127.0.0.1:4222';
const SECONDS = Number(process.env.BENCH_SECONDS ?? 10);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 64);
const VIEWS = Number(process.env.BENCH_VIEWS ?? 200_000);
const ADS = 20;

/** Child mode: serve the gateway with the env we were given, print the port. */
async function serveGateway(): Promise<void> {
  const config = loadAdsConfig(process.env);
  const log = createLogger({ level: 'warn' });
  const db = createDb({ url: process.env.DATABASE_URL! });
  const nc = await connectNats({ url: NATS_URL, name: 'bench-gateway' }, log);
  const gw = await startGatewayRole({ db, nc, config, log, metrics: new Metrics(), port: 0 });
  process.stdout.write(`PORT ${gw.port}\n`);
  process.on(
    'SIGTERM',
    () =>
      void gw
        .stop()
        .then(() => nc.drain())
        .then(() => db.destroy())
        .then(() => process.exit(0)),
  );
}

async function main(): Promise<void> {
  const log = createLogger({ level: 'warn' });
  const dbName = `bench_views_${randomBytes(3).toString('hex')}`;
  const root = createDb({ url: ROOT_URL, poolMax: 1 });
  await root.raw(`CREATE DATABASE \`${dbName}\``);
  await root.destroy();
  const url = ROOT_URL.replace(/\/[^/]*$/, `/${dbName}`);
  const db = createDb({ url });
  const nc = await connectNats({ url: NATS_URL, name: 'bench-views' }, log);
  const tag = randomBytes(3).toString('hex');
  const env: Record<string, string> = {
    NATS_SUBJECT_PREFIX: `bench${tag}.`,
    VIEWS_STREAM: `BENCH_VIEWS_${tag}`,
    VIEWS_CONSUMER: 'bench-counter',
    RATE_LIMIT_MAX: '100000000',
    // One load generator is one IP inventing visitor ids: lift the per-IP visitor cap.
    VIEW_VISITORS_PER_IP: '100000',
    VIEW_HASH_SALT: 'bench',
    LOG_LEVEL: 'warn',
  };
  const config = loadAdsConfig(env);
  const rows: Array<[string, string, string, string]> = [];
  try {
    await migrateLatest(db);
    for (let i = 0; i < ADS; i++) await db('advertisements').insert({ owner_id: 1, title: `bench ${i}` });
    const jsm = await nc.jetstreamManager();
    await ensureViewsStream(jsm, config);
    await ensureViewsConsumer(jsm, config);

    // ---- 1. gateway ------------------------------------------------------------
    const child = spawn(process.execPath, ['--import', 'tsx', __filename, '--serve-gateway'], {
      env: { ...process.env, ...env, DATABASE_URL: url },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const port = await new Promise<number>((resolve, reject) => {
      let out = '';
      child.stdout.on('data', (d: Buffer) => {
        out += d.toString();
        const m = /PORT (\d+)/.exec(out);
        if (m) resolve(Number(m[1]));
      });
      child.once('exit', (code) => reject(new Error(`gateway exited ${code}`)));
    });
    const requests = Array.from({ length: ADS }, (_, i) => ({
      method: 'POST',
      path: `/ads/${i + 1}/views`,
      headers: { 'content-type': 'application/json' },
      body: '{"visitor_id":"v[<id>]"}',
    }));
    await autocannon({ url: `http://127.0.0.1:${port}`, connections: 8, duration: 2, requests, idReplacement: true }); // warm-up
    const r = await autocannon({ url: `http://127.0.0.1:${port}`, connections: CONNECTIONS, duration: SECONDS, requests, idReplacement: true });
    child.kill('SIGTERM');
    await new Promise((res) => child.once('exit', res));
    const gwOk = r.non2xx === 0 && r.errors === 0;
    rows.push([
      'gateway POST /ads/:id/views (202 after JetStream ack)',
      `${Math.round(r.requests.average).toLocaleString('en')} req/s, p99 ${r.latency.p99} ms${gwOk ? '' : ` (non-2xx ${r.non2xx}, errors ${r.errors})`}`,
      '≥ 8,000 beacons/s',
      r.requests.average >= 8_000 && gwOk ? 'PASS' : 'FAIL',
    ]);
    // Drop what the gateway phase stored so phase 2 measures its own views only.
    await jsm.streams.purge(config.viewsStream);

    // ---- 2. counter ------------------------------------------------------------
    const js = nc.jetstream();
    const ts = Date.now();
    const pubStart = Date.now();
    let acks: Array<Promise<unknown>> = [];
    for (let i = 0; i < VIEWS; i++) {
      const ad = (i % ADS) + 1;
      const visitor = (BigInt(i) + 1n).toString(16).padStart(32, '0');
      acks.push(js.publish(Subjects.adsView(config.subjectPrefix, ad), encodeJson({ ad_id: ad, visitor, ts })));
      if (acks.length >= 256) {
        await Promise.all(acks);
        acks = [];
      }
    }
    await Promise.all(acks);
    const pubRate = VIEWS / ((Date.now() - pubStart) / 1000);
    rows.push(['NATS publisher → JetStream (acks awaited in windows of 256)', `${Math.round(pubRate).toLocaleString('en')} views/s`, '(info)', '']);

    const before = (await db('advertisements').sum({ s: 'views_count' }))[0] as { s: number | string | null };
    const base = Number(before.s ?? 0);
    const counterDb = createDb({ url, poolMax: 4 });
    const statements = countStatements(counterDb);
    const system = startActorSystem('bench', log);
    const metrics = new Metrics();
    const t0 = Date.now();
    const ads = await startAds({ parent: system, db: counterDb, nc, config, log, metrics, parts: { viewCounter: true } });
    // Distinct visitors per view: exactly VIEWS must be counted; a bounded wait, so a lost view fails instead of hanging.
    let counted = 0;
    const deadline = Date.now() + 120_000;
    while (counted < VIEWS && Date.now() < deadline) {
      const s = (await db('advertisements').sum({ s: 'views_count' }))[0] as { s: number | string | null };
      counted = Number(s.s ?? 0) - base;
      if (counted < VIEWS) await new Promise((res) => setTimeout(res, 10));
    }
    const secs = (Date.now() - t0) / 1000;
    if (counted !== VIEWS) throw new Error(`the counter counted ${counted} of ${VIEWS} views`);
    const stmts = statements.count;
    await ads.stop();
    stopActorSystem(system);
    await counterDb.destroy();
    const rate = VIEWS / secs;
    rows.push([
      `view counter: ${VIEWS.toLocaleString('en')} views drained to MariaDB`,
      `${Math.round(rate).toLocaleString('en')} views/s`,
      '≥ 20,000 views/s',
      rate >= 20_000 ? 'PASS' : 'FAIL',
    ]);
    const per1000 = (stmts / VIEWS) * 1000;
    rows.push(['DB statements per 1,000 views (BEGIN/INSERT/UPDATE/COMMIT)', per1000.toFixed(2), '≤ 2', per1000 <= 2 ? 'PASS' : 'FAIL']);
  } finally {
    await (await nc.jetstreamManager()).streams.delete(config.viewsStream).catch(() => undefined);
    await nc.drain().catch(() => undefined);
    await db.destroy();
    const r2 = createDb({ url: ROOT_URL, poolMax: 1 });
    await r2.raw(`DROP DATABASE IF EXISTS \`${dbName}\``);
    await r2.destroy();
  }
  console.log(`\nbench:views on ${machine()}, ${SECONDS}s × ${CONNECTIONS} connections\n`);
  console.log(table(['measure', 'result', 'target', ''], rows));
  if (rows.some((r) => r[3] === 'FAIL')) process.exitCode = 1;
}

if (process.argv.includes('--serve-gateway')) void serveGateway();
else
  main().catch((e: unknown) => {
    console.error(e);
    process.exit(1);
  });
