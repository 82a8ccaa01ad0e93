import { strict as assert } from 'node:assert';
import { ImageCache } from '../../src/images/cache';
import type { DownloadResult } from '../../src/images/fetch';

function image(size: number): DownloadResult {
  return { ok: true, bytes: Buffer.alloc(size, 1), contentType: 'image/png', finalUrl: 'x' };
}

/** A loader that counts calls and can be held open until `release()`. */
function loader(size: number) {
  let calls = 0;
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  let held = false;
  return {
    get calls() {
      return calls;
    },
    hold() {
      held = true;
    },
    release: () => release(),
    load: async (): Promise<DownloadResult> => {
      calls++;
      if (held) await gate;
      return image(size);
    },
  };
}

describe('images: ImageCache', () => {
  it('repeated requests of one URL download once, then hit', async () => {
    const c = new ImageCache({ maxBytes: 10_000, ttlMs: 60_000 });
    const l = loader(1000);
    const a = await c.get('u1', l.load);
    const b = await c.get('u1', l.load);
    assert.ok(a.ok && !a.fromCache);
    assert.ok(b.ok && b.fromCache);
    assert.equal(l.calls, 1);
    assert.deepEqual([c.stats().hits, c.stats().misses, c.stats().bytes], [1, 1, 1000]);
  });

  it('single flight: concurrent requests share one download', async () => {
    const c = new ImageCache({ maxBytes: 10_000, ttlMs: 60_000 });
    const l = loader(500);
    l.hold();
    const all = Promise.all(Array.from({ length: 20 }, () => c.get('u', l.load)));
    assert.equal(c.stats().inflight, 1);
    l.release();
    const rs = await all;
    assert.equal(l.calls, 1);
    assert.ok(rs.every((r) => r.ok && r.bytes.length === 500));
    assert.deepEqual([c.stats().misses, c.stats().shared, c.stats().inflight], [1, 19, 0]);
  });

  it('never exceeds its byte bound; evictions are counted', async () => {
    const max = 20_000;
    let evicted = 0;
    const c = new ImageCache({ maxBytes: max, ttlMs: 60_000, observer: { evicted: () => evicted++ } });
    let total = 0;
    for (let i = 0; i < 200; i++) {
      const size = 500 + ((i * 7919) % 4500);
      total += size;
      await c.get(`u${i}`, async () => image(size));
      assert.ok(c.bytes <= max, `step ${i}: ${c.bytes} > ${max}`);
    }
    assert.ok(total > 10 * max);
    assert.ok(c.stats().evictions > 0);
    assert.equal(evicted, c.stats().evictions);
    assert.equal(c.stats().bytes, c.bytes);
  });

  it('an image larger than the bound is served but not stored', async () => {
    const c = new ImageCache({ maxBytes: 1000, ttlMs: 60_000 });
    const r = await c.get('big', async () => image(5000));
    assert.ok(r.ok && r.bytes.length === 5000);
    assert.equal(c.bytes, 0);
    assert.equal(c.stats().uncacheable, 1);
  });

  it('TTL: an expired entry is downloaded again', async () => {
    let now = 1_000;
    const c = new ImageCache({ maxBytes: 10_000, ttlMs: 5_000, perf: { now: () => now } });
    const l = loader(100);
    await c.get('u', l.load);
    now += 4_000;
    const fresh = await c.get('u', l.load);
    assert.ok(fresh.ok, JSON.stringify(fresh));
    assert.equal(l.calls, 1, 'still fresh after 4 s');
    now += 1_500; // 5.5 s after the download (TTL counts from the download, not the last use)
    const r = await c.get('u', l.load);
    assert.ok(r.ok && !r.fromCache);
    assert.equal(l.calls, 2);
    assert.equal(c.stats().expirations, 1);
  });

  it('failures are not cached', async () => {
    const c = new ImageCache({ maxBytes: 10_000, ttlMs: 60_000 });
    let calls = 0;
    const failing = async (): Promise<DownloadResult> => {
      calls++;
      return { ok: false, reason: 'http_status', message: '404' };
    };
    assert.deepEqual(await c.get('u', failing), { ok: false, reason: 'http_status', message: '404' });
    await c.get('u', failing);
    assert.equal(calls, 2);
    assert.equal(c.stats().entries, 0);
  });

  it('a loader that throws becomes a network failure', async () => {
    const c = new ImageCache({ maxBytes: 10_000, ttlMs: 60_000 });
    const r = await c.get('u', async () => {
      throw new Error('boom');
    });
    assert.deepEqual(r, { ok: false, reason: 'network', message: 'boom' });
  });

  it('invalidate by URL and by product', async () => {
    const c = new ImageCache({ maxBytes: 10_000, ttlMs: 60_000 });
    const l = loader(100);
    await c.get('a', l.load, 1);
    await c.get('b', l.load, 2);
    await c.get('c', l.load, 2);
    assert.equal(c.invalidate('a'), 1);
    assert.equal(c.invalidate('a'), 0);
    assert.equal(c.invalidateProduct(2), 2);
    assert.equal(c.invalidateProduct(2), 0);
    assert.equal(c.stats().entries, 0);
    assert.equal(c.stats().invalidations, 3);
    await c.get('b', l.load, 2);
    assert.equal(l.calls, 4, 'downloaded again after invalidation');
  });

  it('an eviction removes the URL from its product index', async () => {
    const c = new ImageCache({ maxBytes: 250, ttlMs: 60_000 });
    await c.get('a', async () => image(100), 7);
    await c.get('b', async () => image(100), 8);
    await c.get('c', async () => image(100), 9); // evicts a
    assert.equal(c.has('a'), false);
    assert.equal(c.invalidateProduct(7), 0);
  });

  it('invalidate during a download: the late result is not stored, the next request downloads again', async () => {
    const c = new ImageCache({ maxBytes: 10_000, ttlMs: 60_000 });
    const l = loader(100);
    l.hold();
    const p = c.get('u', l.load);
    c.invalidate('u');
    l.release();
    assert.ok((await p).ok);
    assert.equal(c.has('u'), false);
    await c.get('u', l.load);
    assert.equal(l.calls, 2);
  });

  it('invalidating a product during its download: the late result is not stored', async () => {
    const c = new ImageCache({ maxBytes: 10_000, ttlMs: 60_000 });
    const l = loader(100);
    l.hold();
    const p = c.get('u', l.load, 42);
    assert.equal(c.invalidateProduct(42), 0, 'nothing cached yet');
    l.release();
    assert.ok((await p).ok);
    assert.equal(c.has('u'), false, 'the old image was not stored');
  });

  it('maxBytes 0 disables storing; single flight still applies', async () => {
    const c = new ImageCache({ maxBytes: 0, ttlMs: 60_000 });
    const l = loader(100);
    l.hold();
    const both = Promise.all([c.get('u', l.load), c.get('u', l.load)]);
    l.release();
    await both;
    await c.get('u', l.load);
    assert.equal(l.calls, 2);
    assert.equal(c.bytes, 0);
  });
});
