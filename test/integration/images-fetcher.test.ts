import { strict as assert } from 'node:assert';
import { spawnFetcher, type FetcherMessage, type FetcherStats, type InvalidateResult } from '../../actors/image-fetcher';
import { startActorSystem, stopActorSystem, query, type ActorRef, type ActorSystem } from '../../src/runtime/actor';
import { fetcherImageSource } from '../../actors/image-fetcher';
import type { FetchResult } from '../../src/images/cache';
import type { ImagesConfig } from '../../src/config/images';
import { Metrics } from '../../src/metrics';
import { startImageServer, type ImageServer } from '../helpers/image-server';
import { captureLogger } from '../helpers/services';

type FetcherConfig = Pick<ImagesConfig, 'allowedHosts' | 'cacheMaxBytes' | 'cacheTtlMs' | 'fetchTimeoutMs' | 'maxBytes' | 'fetchConcurrency'>;

describe('images: fetcher actor', () => {
  let srv: ImageServer;
  let system: ActorSystem;
  let metrics: Metrics;
  let logs: ReturnType<typeof captureLogger>;
  const base: FetcherConfig = {
    allowedHosts: ['127.0.0.1'],
    cacheMaxBytes: 1_000_000,
    cacheTtlMs: 60_000,
    fetchTimeoutMs: 2_000,
    maxBytes: 500_000,
    fetchConcurrency: 8,
  };

  before(async () => {
    srv = await startImageServer();
  });
  after(() => srv.close());
  beforeEach(() => {
    logs = captureLogger();
    system = startActorSystem('images-test', logs.log);
    metrics = new Metrics();
  });
  afterEach(() => stopActorSystem(system));

  const fetchVia = (f: ActorRef<FetcherMessage>, url: string, productId?: number): Promise<FetchResult> =>
    query<FetcherMessage, FetchResult>(
      f,
      (replyTo) => (productId === undefined ? { type: 'fetch', url, replyTo } : { type: 'fetch', url, productId, replyTo }),
      5_000,
    );
  const stats = (f: ActorRef<FetcherMessage>): Promise<FetcherStats> =>
    query<FetcherMessage, FetcherStats>(f, (replyTo) => ({ type: 'stats', replyTo }), 5_000);
  const invalidate = (f: ActorRef<FetcherMessage>, target: { url: string } | { productId: number } | { all: true }): Promise<InvalidateResult> =>
    query<FetcherMessage, InvalidateResult>(f, (replyTo) => ({ type: 'invalidate', target, replyTo }), 5_000);
  async function metric(name: string, labels: Record<string, string> = {}): Promise<number> {
    const m = await metrics.registry.getSingleMetric(name)?.get();
    const v = m?.values.find((x) => Object.entries(labels).every(([k, val]) => x.labels[k] === val));
    return v?.value ?? 0;
  }

  it('repeated fetches of one URL download it once', async () => {
    const f = spawnFetcher(system, { config: base, metrics });
    const url = srv.url('/png/20000/repeat');
    const first = await fetchVia(f, url);
    assert.ok(first.ok && !first.fromCache && first.bytes.length === 20000 && first.contentType === 'image/png');
    for (let i = 0; i < 5; i++) {
      const r = await fetchVia(f, url);
      assert.ok(r.ok && r.fromCache);
    }
    assert.equal(srv.hits('/png/20000/repeat'), 1);
    const s = await stats(f);
    assert.deepEqual([s.downloads, s.hits, s.entries, s.bytes], [1, 5, 1, 20000]);
    assert.equal(await metric('images_cache_hits_total'), 5);
    assert.equal(await metric('images_cache_misses_total'), 1);
    assert.equal(await metric('images_cache_bytes'), 20000);
  });

  it('concurrent fetches of one URL share one download (single flight)', async () => {
    const f = spawnFetcher(system, { config: base, metrics });
    const url = srv.url('/jpeg/30000/concurrent?delay=200');
    const rs = await Promise.all(Array.from({ length: 25 }, () => fetchVia(f, url)));
    assert.ok(rs.every((r) => r.ok && r.bytes.length === 30000 && r.contentType === 'image/jpeg'));
    assert.equal(srv.hits('/jpeg/30000/concurrent?delay=200'), 1);
    const s = await stats(f);
    assert.equal(s.downloads, 1);
    assert.equal(s.shared, 24);
  });

  it('a slow download does not block the mailbox', async () => {
    const f = spawnFetcher(system, { config: base });
    const slow = fetchVia(f, srv.url('/png/100/slow?delay=1500'));
    await new Promise((r) => setTimeout(r, 50));
    const started = Date.now();
    const s = await stats(f);
    assert.ok(Date.now() - started < 300, 'stats answered while the download runs');
    assert.equal(s.inflight, 1);
    const fast = await fetchVia(f, srv.url('/png/100/fast'));
    assert.ok(fast.ok);
    assert.ok((await slow).ok);
  });

  it('the cache never exceeds its byte bound; evictions are counted', async () => {
    const max = 300_000;
    const f = spawnFetcher(system, { config: { ...base, cacheMaxBytes: max }, metrics });
    let peak = 0;
    for (let i = 0; i < 30; i++) {
      const size = 40_000 + ((i * 37_003) % 60_000);
      const r = await fetchVia(f, srv.url(`/png/${size}/fill-${i}`));
      assert.ok(r.ok);
      const s = await stats(f);
      peak = Math.max(peak, s.bytes);
      assert.ok(s.bytes <= max, `after ${i + 1} images: ${s.bytes} > ${max}`);
    }
    const s = await stats(f);
    assert.ok(s.evictions > 0);
    assert.ok(peak > max * 0.6, `the cache was actually used (${peak})`);
    assert.equal(await metric('images_cache_evictions_total'), s.evictions);
    assert.ok((await metric('images_cache_bytes')) <= max);
  });

  it('TTL expiry downloads again', async () => {
    let now = 1_000; // lru-cache treats a start time of 0 as "no TTL"
    const f = spawnFetcher(system, { config: { ...base, cacheTtlMs: 10_000 }, perf: { now: () => now } });
    const url = srv.url('/png/1000/ttl');
    await fetchVia(f, url);
    now = 10_000;
    assert.ok((await fetchVia(f, url)).ok);
    assert.equal(srv.hits('/png/1000/ttl'), 1);
    now = 11_500;
    const r = await fetchVia(f, url);
    assert.ok(r.ok && !r.fromCache);
    assert.equal(srv.hits('/png/1000/ttl'), 2);
    assert.equal((await stats(f)).expirations, 1);
  });

  it('invalidate by URL, by product, and all', async () => {
    const f = spawnFetcher(system, { config: base });
    const a = srv.url('/png/1000/inv-a');
    const b = srv.url('/png/1000/inv-b');
    await fetchVia(f, a, 1);
    await fetchVia(f, b, 2);
    assert.deepEqual(await invalidate(f, { url: a }), { removed: 1 });
    await fetchVia(f, a, 1);
    assert.equal(srv.hits('/png/1000/inv-a'), 2);
    assert.deepEqual(await invalidate(f, { productId: 2 }), { removed: 1 });
    await fetchVia(f, b, 2);
    assert.equal(srv.hits('/png/1000/inv-b'), 2);
    assert.deepEqual(await invalidate(f, { all: true }), { removed: 2 });
    assert.equal((await stats(f)).entries, 0);
  });

  it('failures answer a typed reason, are counted by reason and logged', async () => {
    const f = spawnFetcher(system, { config: { ...base, fetchTimeoutMs: 300, maxBytes: 10_000 }, metrics });
    const cases: Array<[string, string]> = [
      [srv.url('/404/x'), 'http_status'],
      [srv.url('/html/x'), 'not_image'],
      [srv.url('/png/20000/big'), 'too_large'],
      [srv.url('/png/100/x?hang=1'), 'timeout'],
      [srv.url('/png/100/x', 'localhost'), 'host_not_allowed'],
      [srv.url(`/redirect?to=${encodeURIComponent(srv.url('/png/100/x', 'localhost'))}`), 'redirect_not_allowed'],
      ['relative/x.png', 'bad_url'],
    ];
    for (const [url, reason] of cases) {
      const r = await fetchVia(f, url);
      assert.ok(!r.ok && r.reason === reason, `${url}: ${JSON.stringify(r)}`);
    }
    const s = await stats(f);
    assert.equal(s.failures.http_status, 1);
    assert.equal(s.failures.timeout, 1);
    assert.equal(await metric('images_fetch_failures_total', { reason: 'not_image' }), 1);
    assert.equal(await metric('images_fetch_failures_total', { reason: 'redirect_not_allowed' }), 1);
    assert.ok(logs.lines().some((l) => l.msg === 'image download failed' && l.reason === 'too_large'));
  });

  it('fetcherImageSource: answers through the actor; a stopped fetcher is a failure, not a throw', async () => {
    const f = spawnFetcher(system, { config: base });
    const source = fetcherImageSource(f, { timeoutMs: 5_000 });
    const r = await source.get(srv.url('/png/500/source'), 9);
    assert.ok(r.ok);
    stopActorSystem(system);
    await new Promise((res) => setTimeout(res, 20));
    const after = await source.get(srv.url('/png/500/source'));
    assert.equal(after.ok, false);
  });
});
