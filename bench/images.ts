/**
 * `npm run bench:images` — new-order admin notifications sent end to end: 200 orders over
 * 50 products (images 50 KB–2 MB) in MariaDB, 200 `new_order` notifications spread over 20
 * admin groups, delivered by the real pipeline (OrderAwarePlanner → fetcher actor → sender
 * → TelegrafClient) to the Telegram sandbox, once per cache bound.
 *
 * Processes:
 * - this process (orchestrator): scratch database and data, the HTTP image server (so the
 *   number of downloads is the server's own request count), the final checks;
 * - the sandbox (sandbox/cli.ts), in its own process, as in bench:delivery;
 * - one worker process per cache bound (this file with `--worker`): the actor system, the
 *   image fetcher and the pipeline, started in-process with startPipeline. A fresh process
 *   per bound, so its peak RSS is the pipeline's alone (no image server, no earlier run).
 *
 * Limits: Telegram's ×10 for private chats and the global rate (300 msg/s, 10 msg/s per
 * chat), ×60 for groups (1,200 msg/min), in the sandbox and in the pipeline alike; albums
 * count n messages. Ideal wall time = max(messages / global rate, max messages to one chat
 * / that chat's rate) with messages counting album items.
 *
 * Env: BENCH_ORDERS (200), BENCH_PRODUCTS (50), BENCH_CHATS (20 admin groups),
 * BENCH_CACHE_BOUNDS (comma-separated bytes; default "268435456,20971520"),
 * BENCH_DATABASE_URL or TEST_DATABASE_URL (root URL; a scratch database is created and
 * dropped), NATS_URL, BENCH_LOG_LEVEL (worker's log level, 'warn'), BENCH_RUN_TIMEOUT_MS
 * (150000 per bound).
 */
import { spawn } from 'node:child_process';
import { connect } from 'nats';
import pino from 'pino';
import { loadConfig } from '../src/config/core';
import { createLogger } from '../src/log';
import { Metrics } from '../src/metrics';
import { createDb, type Knex } from '../src/db/knex';
import { migrateLatest } from '../src/db/migrate';
import { startPipeline } from '../src/roles/pipeline';
import { TelegrafClient } from '../src/telegram/client';
import { startActorSystem, stopActorSystem, query } from '../src/runtime/actor';
import { spawnFetcher, type FetcherMessage, type FetcherStats } from '../actors/image-fetcher';
import { fetcherImageSource } from '../actors/image-fetcher';
import { loadImagesConfig } from '../src/config/images';
import { OrderAwarePlanner } from '../src/orders/planner';
import { startImageServer } from '../test/helpers/image-server';
import { rng, startSandboxProcess, getJson, machine, table } from './lib';
import type { DeliveredEntry, SandboxStats } from '../sandbox/types';

const GLOBAL = 300;
const CHAT = 10;
const GROUP_PER_MIN = 1200;
const TOKEN = '123456:BENCH-token-abcdefghijklmnopqrstuv';
const ROOT_DB = process.env.BENCH_DATABASE_URL ?? process.env.TEST_DATABASE_URL ?? 'mysql://root@127.0.0.1:3306/test';
const NATS_URL = process.env.NATS_URL ?? 'nats://127.0.0.1:4222';
const RUN_TIMEOUT_MS = Number(process.env.BENCH_RUN_TIMEOUT_MS ?? 150_000);

/** What the orchestrator tells a worker (env BENCH_IMAGES_WORKER, JSON). */
interface WorkerInput {
  dbUrl: string;
  apiRoot: string;
  imageBase: string;
  cacheMaxBytes: number;
  adminChats: number[];
  notifications: number;
}

/** What a worker reports back over IPC. */
interface WorkerResult {
  startedAt: number;
  doneAt: number;
  stats: FetcherStats;
  peakCacheBytes: number;
  peakRssBytes: number;
  statsSamples: number;
  /** CPU seconds (user + system) the worker used from pipeline start to done. */
  cpuSeconds: number;
  sent: number;
  failed: number;
}

// ---------------------------------------------------------------------------------------
// Worker: the pipeline with the order-aware planner and one fetcher, in this process.
// ---------------------------------------------------------------------------------------

async function worker(input: WorkerInput): Promise<WorkerResult> {
  // Synchronous to stderr, so that nothing is lost when the worker exits.
  const log = createLogger({ level: process.env.BENCH_LOG_LEVEL ?? 'warn', destination: pino.destination({ fd: 2, sync: true }) });
  const metrics = new Metrics();
  const db = createDb({ url: input.dbUrl, poolMax: 10 });
  const nc = await connect({ servers: NATS_URL });
  const system = startActorSystem('bench-images', log);
  const imagesConfig = loadImagesConfig({
    IMAGE_BASE_URL: input.imageBase,
    IMAGE_CACHE_MAX_BYTES: String(input.cacheMaxBytes),
    ADMIN_CHAT_IDS: input.adminChats.join(','),
  });
  const fetcher = spawnFetcher(system, { config: imagesConfig, metrics });
  const stats = (): Promise<FetcherStats> => query<FetcherMessage, FetcherStats>(fetcher, (replyTo) => ({ type: 'stats', replyTo }), 10_000);
  const planner = new OrderAwarePlanner(db, fetcherImageSource(fetcher, { timeoutMs: imagesConfig.fetchTimeoutMs * 3 }), imagesConfig, log);
  const config = loadConfig({
    DATABASE_URL: input.dbUrl,
    NATS_URL,
    TELEGRAM_BOT_TOKEN: TOKEN,
    TELEGRAM_API_ROOT: input.apiRoot,
    TELEGRAM_GLOBAL_RATE: String(GLOBAL),
    TELEGRAM_CHAT_RATE: String(CHAT),
    TELEGRAM_GROUP_RATE_PER_MIN: String(GROUP_PER_MIN),
    TELEGRAM_REQUEST_TIMEOUT_MS: '30000',
    INSTANCE_ID: `bench-images-${input.cacheMaxBytes}`,
    LOG_LEVEL: 'warn',
  });

  let peakRss = process.memoryUsage().rss;
  let peakCache = 0;
  let samples = 0;
  let aboveBound: string | undefined;
  const rssTimer = setInterval(() => (peakRss = Math.max(peakRss, process.memoryUsage().rss)), 10);
  const cacheTimer = setInterval(() => {
    stats().then(
      (s) => {
        samples++;
        peakCache = Math.max(peakCache, s.bytes);
        if (s.bytes > input.cacheMaxBytes) aboveBound ??= `cache held ${s.bytes} bytes, above its bound ${input.cacheMaxBytes}`;
      },
      () => undefined,
    );
  }, 50);

  const startedAt = Date.now();
  const cpu0 = process.cpuUsage();
  const pipeline = await startPipeline({
    ownAllShards: true,
    config,
    log,
    metrics,
    db,
    nc,
    telegram: new TelegrafClient({ token: TOKEN, apiRoot: input.apiRoot, timeoutMs: config.telegramRequestTimeoutMs }),
    planner,
    system,
  });
  let sent: number;
  let failed: number;
  for (;;) {
    const rows = await db('telegram_notifications').select('status').count<Array<{ status: string; n: number | string }>>({ n: '*' }).groupBy('status');
    sent = Number(rows.find((r) => r.status === 'sent')?.n ?? 0);
    failed = Number(rows.find((r) => r.status === 'failed')?.n ?? 0);
    if (sent + failed >= input.notifications) break;
    if (Date.now() - startedAt > RUN_TIMEOUT_MS) throw new Error(`not done after ${RUN_TIMEOUT_MS} ms: ${JSON.stringify(rows)} of ${input.notifications}`);
    await new Promise((res) => setTimeout(res, 50));
  }
  const doneAt = Date.now();
  const cpu = process.cpuUsage(cpu0);
  clearInterval(cacheTimer);
  clearInterval(rssTimer);
  const final = await stats();
  peakCache = Math.max(peakCache, final.bytes);
  await pipeline.stop();
  stopActorSystem(system);
  await nc.close();
  await db.destroy();
  if (aboveBound) throw new Error(aboveBound);
  return {
    startedAt,
    doneAt,
    stats: final,
    peakCacheBytes: peakCache,
    peakRssBytes: peakRss,
    statsSamples: samples,
    cpuSeconds: (cpu.user + cpu.system) / 1e6,
    sent,
    failed,
  };
}

function runWorker(input: WorkerInput): Promise<WorkerResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', __filename, '--worker'], {
      env: { ...process.env, BENCH_IMAGES_WORKER: JSON.stringify(input) },
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    let result: WorkerResult | undefined;
    let error: string | undefined;
    child.on('message', (m: { ok: true; result: WorkerResult } | { ok: false; error: string }) => {
      if (m.ok) result = m.result;
      else error = m.error;
    });
    child.once('error', reject);
    child.once('exit', (code) => {
      if (result) resolve(result);
      else reject(new Error(`worker exited with ${code}: ${error ?? 'no result'}`));
    });
  });
}

// ---------------------------------------------------------------------------------------
// Orchestrator.
// ---------------------------------------------------------------------------------------

interface OrderSpec {
  id: number;
  chatId: number;
  /** Expected captions, in order-line order. */
  captions: string[];
}

interface Seeded {
  orders: OrderSpec[];
  sizes: number[];
  photoRequests: number;
  /** The telegram_notifications rows, inserted anew before each run. */
  rows: Array<Record<string, unknown>>;
}

async function seed(db: Knex, nOrders: number, nProducts: number, chats: number[]): Promise<Seeded> {
  const rand = rng(42);
  const sizes = Array.from({ length: nProducts }, (_, i) => Math.round(50 * 1024 + ((2 * 1024 * 1024 - 50 * 1024) * i) / Math.max(1, nProducts - 1)));
  const products: Array<{ id: number; name: string; price: number }> = [];
  for (const [i, size] of sizes.entries()) {
    const name = `Товар ${i + 1}`;
    const price = 100 + i * 10;
    const [id] = await db('products').insert({ name, price: price.toFixed(2), image_path: `${i % 2 ? 'jpeg' : 'png'}/${size}/product-${i + 1}` });
    products.push({ id: Number(id), name, price });
  }
  const orders: OrderSpec[] = [];
  let photoRequests = 0;
  const rows: Array<Record<string, unknown>> = [];
  for (let o = 0; o < nOrders; o++) {
    // 1–15 distinct products per order, skewed to small orders; popular products more often.
    const count = 1 + Math.floor(rand() ** 2 * 15);
    const chosen = new Set<number>();
    while (chosen.size < Math.min(count, products.length)) chosen.add(Math.floor(rand() ** 1.5 * products.length));
    const lines = [...chosen].map((k) => products[k]!);
    const total = lines.reduce((a, p) => a + p.price, 0);
    const [orderId] = await db('orders').insert({ customer_chat_id: 1000 + o, customer_user_id: 1000 + o, total: total.toFixed(2) });
    // Order lines are read back in id order: insert them in the order we expect the photos.
    await db('order_items').insert(lines.map((p) => ({ order_id: orderId, product_id: p.id, quantity: 1, price: p.price.toFixed(2) })));
    const chatId = chats[o % chats.length]!;
    orders.push({ id: Number(orderId), chatId, captions: lines.map((p) => `Товар: ${p.name}\nЦена: ${p.price} руб.`) });
    rows.push({ telegram_id: chatId, kind: 'new_order', order_id: orderId, message_text: `🛒 НОВЫЙ ЗАКАЗ #${orderId}\nСумма: ${total} руб.` });
    photoRequests += lines.length;
  }
  return { orders, sizes, photoRequests, rows };
}

/**
 * Attributes each chat's deliveries to orders (a notification's parts follow its text in
 * the chat) and compares with what each order should show: lost and duplicated texts and
 * photos, and photos that arrived under the wrong order or out of order.
 */
function check(
  delivered: DeliveredEntry[],
  orders: OrderSpec[],
): { lostTexts: number; dupTexts: number; lostPhotos: number; extraPhotos: number; misplaced: number; unavailable: number } {
  const byId = new Map(orders.map((o) => [o.id, o]));
  const got = new Map<number, { texts: number; captions: string[] }>();
  const current = new Map<number, number | undefined>();
  let misplaced = 0;
  let unavailable = 0;
  for (const d of [...delivered].sort((a, b) => a.seq - b.seq)) {
    if (d.method === 'sendMessage') {
      const m = /НОВЫЙ ЗАКАЗ #(\d+)/.exec(d.text ?? '');
      if (m) {
        const id = Number(m[1]);
        const g = got.get(id) ?? { texts: 0, captions: [] };
        g.texts++;
        got.set(id, g);
        current.set(d.chatId, id);
      } else if (/image unavailable/.test(d.text ?? '')) unavailable++;
      continue;
    }
    const id = current.get(d.chatId);
    const captions = (d.media ?? []).map((x) => x.caption ?? '');
    if (id === undefined) {
      misplaced += captions.length;
      continue;
    }
    got.get(id)!.captions.push(...captions);
  }
  let lostTexts = 0;
  let dupTexts = 0;
  let lostPhotos = 0;
  let extraPhotos = 0;
  for (const o of orders) {
    const g = got.get(o.id) ?? { texts: 0, captions: [] };
    if (g.texts === 0) lostTexts++;
    dupTexts += Math.max(0, g.texts - 1);
    lostPhotos += Math.max(0, o.captions.length - g.captions.length);
    extraPhotos += Math.max(0, g.captions.length - o.captions.length);
    if (g.captions.length === o.captions.length && g.captions.some((c, i) => c !== o.captions[i])) misplaced++;
  }
  for (const id of got.keys()) if (!byId.has(id)) misplaced++;
  return { lostTexts, dupTexts, lostPhotos, extraPhotos, misplaced, unavailable };
}

const mb = (n: number): string => `${(n / 1024 / 1024).toFixed(1)} MB`;
const mib = (n: number): string => (n % (1024 * 1024) === 0 ? `${n / 1024 / 1024} MiB` : mb(n));

async function main(): Promise<void> {
  const env = process.env;
  const nOrders = Number(env.BENCH_ORDERS ?? 200);
  const nProducts = Number(env.BENCH_PRODUCTS ?? 50);
  const nChats = Number(env.BENCH_CHATS ?? 20);
  const bounds = (env.BENCH_CACHE_BOUNDS ?? `${256 * 1024 * 1024},${20 * 1024 * 1024}`).split(',').map(Number);
  const chats = Array.from({ length: nChats }, (_, i) => -1001000000001 - i);

  const dbName = `bench_images_${Date.now().toString(36)}`;
  const root = createDb({ url: ROOT_DB, poolMax: 1 });
  await root.raw(`CREATE DATABASE \`${dbName}\` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci`);
  const dbUrl = ROOT_DB.replace(/\/[^/]*$/, `/${dbName}`);
  const db = createDb({ url: dbUrl, poolMax: 2 });
  const srv = await startImageServer();
  const sandbox = await startSandboxProcess(['--global-rate', String(GLOBAL), '--chat-rate', String(CHAT), '--group-rate-per-min', String(GROUP_PER_MIN)]);
  const out: Array<Array<string | number>> = [];
  let header: string;
  let idealNote = '';
  try {
    await migrateLatest(db);
    const { orders, sizes, photoRequests, rows } = await seed(db, nOrders, nProducts, chats);
    const catalogueBytes = sizes.reduce((a, b) => a + b, 0);
    const distinct = new Set((await db('order_items').distinct<Array<{ product_id: number }>>('product_id')).map((r) => r.product_id)).size;
    header = `${nOrders} orders (${photoRequests} photo lines) over ${nProducts} products of 50 KB–2 MB (catalogue ${mb(catalogueBytes)}, ${distinct} distinct images ordered), ${nOrders} notifications to ${nChats} admin groups`;

    for (const cacheMaxBytes of bounds) {
      await db.raw('TRUNCATE telegram_notifications');
      await db('telegram_notifications').insert(rows);
      await getJson(`${sandbox.apiRoot}sandbox/reset`, { method: 'POST' });
      srv.resetHits();

      const w = await runWorker({ dbUrl, apiRoot: sandbox.apiRoot, imageBase: `${srv.origin}/`, cacheMaxBytes, adminChats: chats, notifications: nOrders });

      const delivered = await getJson<DeliveredEntry[]>(`${sandbox.apiRoot}sandbox/delivered`);
      const stats = await getJson<SandboxStats>(`${sandbox.apiRoot}sandbox/stats`);
      const downloads = srv.totalHits();
      const albums = delivered.filter((d) => d.method === 'sendMediaGroup');
      const singles = delivered.filter((d) => d.method === 'sendPhoto').length;
      const photos = delivered.filter((d) => d.method !== 'sendMessage').reduce((a, d) => a + d.mediaCount, 0);
      const messages = delivered.reduce((a, d) => a + d.mediaCount, 0);
      const uploaded = delivered.flatMap((d) => d.media ?? []).reduce((a, m) => a + (m.bytes ?? 0), 0);
      const perChat = new Map<number, number>();
      for (const d of delivered) perChat.set(d.chatId, (perChat.get(d.chatId) ?? 0) + d.mediaCount);
      const maxPerChat = Math.max(...perChat.values());
      const ideal = Math.max(messages / GLOBAL, maxPerChat / (GROUP_PER_MIN / 60));
      idealNote ||= `max(${messages} messages / ${GLOBAL} msg/s = ${(messages / GLOBAL).toFixed(2)} s, ${maxPerChat} to the busiest group / ${GROUP_PER_MIN / 60} msg/s = ${(maxPerChat / (GROUP_PER_MIN / 60)).toFixed(2)} s)`;
      const wall = (Math.max(...delivered.map((d) => d.at)) - w.startedAt) / 1000;
      const c = check(delivered, orders);
      const s = w.stats;
      const hitRatio = s.hits / Math.max(1, s.hits + s.misses + s.shared);
      const rejected429 = stats.rejected['429'] ?? 0;
      out.push([
        mib(cacheMaxBytes),
        `${downloads}${downloads === distinct ? ' (= distinct)' : ''}`,
        `${(hitRatio * 100).toFixed(1)} %`,
        `${mb(w.peakCacheBytes)}${w.peakCacheBytes <= cacheMaxBytes ? ' ≤ bound' : ' ABOVE BOUND'}`,
        mb(w.peakRssBytes),
        w.cpuSeconds.toFixed(1),
        `${albums.length} (+${singles})`,
        photos,
        messages,
        `${(uploaded / 1e9).toFixed(2)} GB`,
        rejected429,
        `${w.sent}/${nOrders}`,
        `${c.lostTexts + c.lostPhotos}`,
        `${c.dupTexts + c.extraPhotos}`,
        c.misplaced,
        ideal.toFixed(1),
        wall.toFixed(1),
        (ideal / wall).toFixed(2),
      ]);
      if (s.downloads !== downloads) console.error(`note: fetcher counted ${s.downloads} downloads, the image server ${downloads} requests`);
      if (c.unavailable > 0 || w.failed > 0) console.error(`note: ${c.unavailable} "image unavailable" texts, ${w.failed} notifications failed`);
      const ats = delivered.map((d) => d.at).sort((a, b) => a - b);
      let gap = 0;
      let gapAt = 0;
      for (let i = 1; i < ats.length; i++) if (ats[i]! - ats[i - 1]! > gap) [gap, gapAt] = [ats[i]! - ats[i - 1]!, ats[i - 1]! - w.startedAt];
      process.stderr.write(
        `  bound ${mib(cacheMaxBytes)}: ${wall.toFixed(1)} s (first receipt at ${((ats[0]! - w.startedAt) / 1000).toFixed(2)} s, longest pause ${gap} ms at ${(gapAt / 1000).toFixed(1)} s), ` +
          `worker CPU ${w.cpuSeconds.toFixed(1)} s, ${w.statsSamples} cache samples, ${s.evictions} evictions, ${s.shared} single-flight joins, ${stats.requests} Bot API requests\n`,
      );
    }
  } finally {
    await sandbox.stop();
    await srv.close();
    await db.destroy();
    await root.raw(`DROP DATABASE IF EXISTS \`${dbName}\``);
    await root.destroy();
  }

  console.log(`\nbench:images — ${header}; sent through the pipeline (order-aware planner, fetcher actor, uploads) to the sandbox`);
  console.log(`limits (sandbox and pipeline): ${GLOBAL} msg/s global, ${CHAT} msg/s per private chat, ${GROUP_PER_MIN} msg/min per group; albums count n`);
  console.log(
    'processes: image server in the bench process; sandbox in its own process; pipeline + fetcher in a fresh worker process per bound (peak RSS and CPU are its own)\n',
  );
  console.log(
    table(
      [
        'cache bound',
        'downloads',
        'hit ratio',
        'peak cache bytes',
        'peak RSS',
        'worker CPU s',
        'albums (+sendPhoto)',
        'photos',
        'messages',
        'uploaded',
        '429s',
        'sent',
        'lost',
        'dup',
        'misplaced',
        'ideal s',
        'wall s',
        'ideal÷wall',
      ],
      out,
    ),
  );
  console.log(`\nTargets: downloads = distinct images while they fit in the cache; peak cache bytes ≤ bound; 0 lost, 0 duplicates, 0 misplaced, 0 429s.`);
  console.log(`Ideal = ${idealNote}, album items counted as messages; wall = pipeline start → last request the sandbox accepted.`);
  console.log(`Machine: ${machine()}; MariaDB and NATS on localhost.\n`);
}

if (require.main === module) {
  if (process.argv.includes('--worker')) {
    const send = (m: unknown): Promise<void> => new Promise((res) => process.send!(m, () => res()));
    worker(JSON.parse(process.env.BENCH_IMAGES_WORKER ?? '{}') as WorkerInput).then(
      async (result) => {
        await send({ ok: true, result });
        process.exit(0);
      },
      async (e: unknown) => {
        console.error(e);
        await send({ ok: false, error: e instanceof Error ? e.message : String(e) });
        process.exit(1);
      },
    );
  } else {
    main().then(
      () => process.exit(0),
      (e: unknown) => {
        console.error(e);
        process.exit(1);
      },
    );
  }
}
