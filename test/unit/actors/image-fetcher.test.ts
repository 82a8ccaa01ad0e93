import { strict as assert } from 'node:assert';
import { spawnFetcher, fetcherImageSource, type FetcherMessage, type FetcherStats } from '../../../actors/image-fetcher';
import type { DownloadOptions, DownloadResult } from '../../../src/images/fetch';
import { query, startActorSystem, stopActorSystem, type ActorRef, type ActorSystem } from '../../../src/runtime/actor';
import { captureLogger, waitFor } from '../../helpers/services';
import { deferred, type Deferred } from '../../helpers/deferred';

/** The image fetcher with a fake download whose answers the test controls. */
describe('image-fetcher actor (fake download)', () => {
  let system: ActorSystem;
  let downloads: Array<{ url: string; opts: DownloadOptions; d: Deferred<DownloadResult> }>;
  let fetcher: ActorRef<FetcherMessage>;
  const png = (n: number): DownloadResult => ({ ok: true, bytes: Buffer.alloc(n, 1), contentType: 'image/png', finalUrl: 'http://img.test/' });

  beforeEach(() => {
    const { log } = captureLogger();
    system = startActorSystem('fetcher-test', log);
    downloads = [];
    fetcher = spawnFetcher(system, {
      config: { allowedHosts: ['img.test'], cacheMaxBytes: 1000, cacheTtlMs: 60_000, fetchTimeoutMs: 1000, maxBytes: 500, fetchConcurrency: 1 },
      download: (url, opts) => {
        const d = deferred<DownloadResult>();
        downloads.push({ url, opts, d });
        return d.promise;
      },
    });
  });
  afterEach(() => stopActorSystem(system));

  const stats = (): Promise<FetcherStats> => query<FetcherMessage, FetcherStats>(fetcher, (replyTo) => ({ type: 'stats', replyTo }), 1000);

  it('one download per URL however many ask; later asks are cache hits', async () => {
    const source = fetcherImageSource(fetcher, { timeoutMs: 2000 });
    const a = source.get('http://img.test/a.png');
    const b = source.get('http://img.test/a.png');
    await waitFor(() => downloads.length === 1, 1000, 2, 'the download');
    assert.deepEqual(downloads[0]!.opts.allowedHosts, ['img.test']);
    downloads[0]!.d.resolve(png(10));
    const [ra, rb] = await Promise.all([a, b]);
    assert.equal(ra.ok && rb.ok && ra.bytes.length === 10 && rb.bytes.length === 10, true);
    const c = await source.get('http://img.test/a.png');
    assert.equal(c.ok && c.fromCache, true);
    assert.equal(downloads.length, 1);
  });

  it('a slow download holds neither other answers nor stats (one slot: the next waits in the queue)', async () => {
    const source = fetcherImageSource(fetcher, { timeoutMs: 2000 });
    const slow = source.get('http://img.test/slow.png');
    const queued = source.get('http://img.test/next.png');
    await waitFor(() => downloads.length === 1, 1000, 2, 'the slow download');
    const s = await stats();
    assert.equal(s.queued, 1, 'the second download waits for the only slot');
    downloads[0]!.d.resolve(png(5));
    await slow;
    await waitFor(() => downloads.length === 2, 1000, 2, 'the queued download');
    downloads[1]!.d.resolve({ ok: false, reason: 'http_status', status: 404, message: 'HTTP 404' });
    const r = await queued;
    assert.equal(r.ok ? 'ok' : r.reason, 'http_status');
    assert.equal((await stats()).failures.http_status, 1);
  });

  it('a bad URL is answered at once, and invalidation forgets a cached image', async () => {
    const bad = await fetcherImageSource(fetcher, { timeoutMs: 1000 }).get('not a url');
    assert.equal(bad.ok ? 'ok' : bad.reason, 'bad_url');
    const source = fetcherImageSource(fetcher, { timeoutMs: 2000 });
    const first = source.get('http://img.test/x.png');
    await waitFor(() => downloads.length === 1, 1000, 2, 'the download');
    downloads[0]!.d.resolve(png(7));
    await first;
    const inv = await query<FetcherMessage, { removed: number }>(
      fetcher,
      (replyTo) => ({ type: 'invalidate', target: { url: 'http://img.test/x.png' }, replyTo }),
      1000,
    );
    assert.equal(inv.removed, 1);
    void source.get('http://img.test/x.png');
    await waitFor(() => downloads.length === 2, 1000, 2, 'a fresh download after invalidation');
    downloads[1]!.d.resolve(png(7));
  });
});
