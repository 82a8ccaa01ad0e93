/**
 * `npm run bench:images` — new-order plans through the fetcher over a local HTTP image
 * server and MariaDB: 200 orders over 50 products (images 50 KB–2 MB), run once with
 * a cache that holds every image and once with a bound smaller than the catalogue.
 *
 * Prints downloads, cache hit ratio, peak cache bytes vs the bound, peak RSS, albums
 * planned and wall time. `runImagesBench({ send })` takes a hook that receives each
 * order's parts (e.g. a sender over the sandbox) — the default only counts them.
 *
 * Env: BENCH_ORDERS (200), BENCH_PRODUCTS (50), BENCH_CONCURRENCY (8 orders at a time),
 * BENCH_CACHE_BOUNDS (comma-separated bytes; default "268435456,20971520"),
 * TEST_DATABASE_URL (the root URL; a scratch database is created and dropped).
 */
import { cpus, totalmem } from 'node:os';
import * as m0020 from '../migrations/0020_products';
import * as m0021 from '../migrations/0021_orders';
import * as m0022 from '../migrations/0022_order_items';
import { spawnFetcher, type FetcherMessage, type FetcherStats } from '../actors/fetcher';
import { startActorSystem, stopActorSystem, query } from '../src/runtime/actor';
import { fetcherImageSource } from '../src/images/source';
import { loadImagesConfig } from '../src/images/config';
import { planOrderNotification, orderRepository, type Part } from '../src/orders/plan';
import { createLogger } from '../src/log';
import { startImageServer } from '../test/helpers/image-server';
import { createTestDb } from '../test/helpers/services';

export interface ImagesBenchOptions {
  orders: number;
  products: number;
  /** Orders planned at once. */
  concurrency: number;
  cacheMaxBytes: number;
  /** Receives each order's plan; the lead plugs the sender in here. Default: nothing. */
  send?: (parts: Part[], orderId: number) => Promise<void>;
}

export interface ImagesBenchResult {
  orders: number;
  products: number;
  catalogueBytes: number;
  cacheMaxBytes: number;
  photoRequests: number;
  downloads: number;
  distinctImages: number;
  hitRatio: number;
  sharedFlights: number;
  evictions: number;
  peakCacheBytes: number;
  peakRssBytes: number;
  albums: number;
  singlePhotos: number;
  /** Telegram messages if sent, albums counted as n (see FIELD-NOTES). */
  messages: number;
  wallMs: number;
}

/** Deterministic PRNG (mulberry32) so every run plans the same orders. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export async function runImagesBench(opts: ImagesBenchOptions): Promise<ImagesBenchResult> {
  const log = createLogger({ level: 'error' });
  const srv = await startImageServer();
  const tdb = await createTestDb('bench_img');
  const system = startActorSystem('bench-images', log);
  let peakRss = process.memoryUsage().rss;
  const rssTimer = setInterval(() => (peakRss = Math.max(peakRss, process.memoryUsage().rss)), 10);
  try {
    for (const m of [m0020, m0021, m0022]) await m.up(tdb.db);
    const rand = rng(42);
    const sizes = Array.from({ length: opts.products }, (_, i) => Math.round(50 * 1024 + ((2 * 1024 * 1024 - 50 * 1024) * i) / Math.max(1, opts.products - 1)));
    const productIds: number[] = [];
    for (const [i, size] of sizes.entries()) {
      const [id] = await tdb.db('products').insert({ name: `Товар ${i + 1}`, price: (100 + i * 10).toFixed(2), image_path: `${i % 2 ? 'jpeg' : 'png'}/${size}/product-${i + 1}` });
      productIds.push(id!);
    }
    const orderIds: number[] = [];
    let photoRequests = 0;
    for (let o = 0; o < opts.orders; o++) {
      // 1–15 distinct products per order, skewed to small orders; popular products more often.
      const count = 1 + Math.floor(rand() ** 2 * 15);
      const chosen = new Set<number>();
      while (chosen.size < Math.min(count, productIds.length)) chosen.add(productIds[Math.floor(rand() ** 1.5 * productIds.length)]!);
      const [orderId] = await tdb.db('orders').insert({ customer_chat_id: 1000 + o, customer_user_id: 1000 + o, total: 0 });
      await tdb.db('order_items').insert([...chosen].map((pid) => ({ order_id: orderId, product_id: pid, quantity: 1, price: '100.00' })));
      orderIds.push(orderId!);
      photoRequests += chosen.size;
    }
    const distinct = new Set((await tdb.db('order_items').distinct('product_id')).map((r: { product_id: number }) => r.product_id));
    const catalogueBytes = sizes.reduce((a, b) => a + b, 0);

    const config = loadImagesConfig({ IMAGE_BASE_URL: `${srv.origin}/`, IMAGE_CACHE_MAX_BYTES: String(opts.cacheMaxBytes) });
    const fetcher = spawnFetcher(system, { config });
    const stats = (): Promise<FetcherStats> => query<FetcherMessage, FetcherStats>(fetcher, (replyTo) => ({ type: 'stats', replyTo }), 10_000);
    const deps = { orders: orderRepository(tdb.db), images: fetcherImageSource(fetcher, { timeoutMs: 60_000 }), config, log };

    let peakCache = 0;
    let albums = 0;
    let singles = 0;
    let messages = 0;
    const started = performance.now();
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < orderIds.length) {
        const orderId = orderIds[next++]!;
        const parts = await planOrderNotification(deps, { text: `НОВЫЙ ЗАКАЗ #${orderId}`, parseMode: null, orderId });
        for (const p of parts) {
          if (p.method === 'sendMediaGroup') {
            albums++;
            messages += p.items.length;
          } else {
            if (p.method === 'sendPhoto') singles++;
            messages++;
          }
        }
        if (opts.send) await opts.send(parts, orderId);
        const s = await stats();
        peakCache = Math.max(peakCache, s.bytes);
        if (s.bytes > opts.cacheMaxBytes) throw new Error(`cache holds ${s.bytes} bytes, above its bound ${opts.cacheMaxBytes}`);
      }
    };
    await Promise.all(Array.from({ length: opts.concurrency }, worker));
    const wallMs = performance.now() - started;
    const s = await stats();
    return {
      orders: opts.orders,
      products: opts.products,
      catalogueBytes,
      cacheMaxBytes: opts.cacheMaxBytes,
      photoRequests,
      downloads: s.downloads,
      distinctImages: distinct.size,
      hitRatio: s.hits / Math.max(1, s.hits + s.misses + s.shared),
      sharedFlights: s.shared,
      evictions: s.evictions,
      peakCacheBytes: peakCache,
      peakRssBytes: peakRss,
      albums,
      singlePhotos: singles,
      messages,
      wallMs,
    };
  } finally {
    clearInterval(rssTimer);
    stopActorSystem(system);
    await srv.close();
    await tdb.drop();
  }
}

const mb = (n: number): string => `${(n / 1024 / 1024).toFixed(1)} MB`;

async function main(): Promise<void> {
  const env = process.env;
  const orders = Number(env.BENCH_ORDERS ?? 200);
  const products = Number(env.BENCH_PRODUCTS ?? 50);
  const concurrency = Number(env.BENCH_CONCURRENCY ?? 8);
  const bounds = (env.BENCH_CACHE_BOUNDS ?? `${256 * 1024 * 1024},${20 * 1024 * 1024}`).split(',').map(Number);
  console.log(`machine: ${cpus().length} × ${cpus()[0]?.model ?? '?'}, ${mb(totalmem())} RAM, Node ${process.version}`);
  for (const cacheMaxBytes of bounds) {
    const r = await runImagesBench({ orders, products, concurrency, cacheMaxBytes });
    console.log(`\n== ${r.orders} orders over ${r.products} products (catalogue ${mb(r.catalogueBytes)}), cache bound ${mb(r.cacheMaxBytes)}, ${concurrency} orders at a time`);
    console.log(`photo requests        ${r.photoRequests}`);
    console.log(`downloads made        ${r.downloads}  (distinct images ordered: ${r.distinctImages})`);
    console.log(`cache hit ratio       ${(r.hitRatio * 100).toFixed(1)} %  (single-flight joins: ${r.sharedFlights}, evictions: ${r.evictions})`);
    console.log(`peak cache bytes      ${mb(r.peakCacheBytes)} / bound ${mb(r.cacheMaxBytes)}  ${r.peakCacheBytes <= r.cacheMaxBytes ? 'OK' : 'ABOVE BOUND'}`);
    console.log(`peak RSS              ${mb(r.peakRssBytes)}`);
    console.log(`albums planned        ${r.albums}  (+ ${r.singlePhotos} single photos; ${r.messages} Telegram messages with albums as n)`);
    console.log(`wall time             ${(r.wallMs / 1000).toFixed(2)} s (planning only; sending would take ≥ ${(r.messages / 30).toFixed(0)} s at the global 30 msg/s, ≥ ${(r.messages / 60).toFixed(0)} min to one admin chat at 1 msg/s)`);
  }
}

if (require.main === module) {
  main().then(
    () => process.exit(0),
    (e: unknown) => {
      console.error(e);
      process.exit(1);
    },
  );
}
