import { strict as assert } from 'node:assert';
import { spawnUnreadCache, type UnreadCacheMsg, type UnreadResult } from '../../../../actors/ads/unread-cache';
import type { UnreadEntry } from '../../../../src/ads/repository';
import { Metrics } from '../../../../src/metrics';
import { dispatch, query, startActorSystem, stopActorSystem, type ActorRef, type ActorSystem } from '../../../../src/runtime/actor';
import { captureLogger, waitFor } from '../../../helpers/services';
import { deferred, type Deferred } from '../../../helpers/deferred';

/** The unread cache with a fake repository whose loads finish when the test says so. */
describe('unread-cache actor (fake repository)', () => {
  let system: ActorSystem;
  let loads: Array<{ userId: number; d: Deferred<UnreadEntry> }>;
  let cache: ActorRef<UnreadCacheMsg>;
  const get = (userId: number): Promise<UnreadResult> => query<UnreadCacheMsg, UnreadResult>(cache, (replyTo) => ({ type: 'get', userId, replyTo }), 2000);

  beforeEach(() => {
    const { log } = captureLogger();
    system = startActorSystem('unread-test', log);
    loads = [];
    const repo = {
      loadUnread: (userId: number) => {
        const d = deferred<UnreadEntry>();
        loads.push({ userId, d });
        return d.promise;
      },
    };
    cache = spawnUnreadCache(system, { repo, metrics: new Metrics() }, { max: 100, ttlMs: 60_000 });
  });
  afterEach(() => stopActorSystem(system));

  it('a slow miss does not hold up hits of other users; concurrent misses share one load', async () => {
    const first = get(1);
    await waitFor(() => loads.length === 1, 2000, 5, 'load of user 1');
    loads[0]!.d.resolve({ count: 4, watermark: 40 });
    assert.deepEqual(await first, { ok: true, unread: 4, cached: false });

    const slowA = get(2);
    const slowB = get(2);
    await waitFor(() => loads.length === 2, 2000, 5, 'load of user 2');
    // User 2's load hangs; user 1 is answered from the cache meanwhile.
    assert.deepEqual(await get(1), { ok: true, unread: 4, cached: true });
    loads[1]!.d.resolve({ count: 1, watermark: 10 });
    assert.deepEqual(await Promise.all([slowA, slowB]), [
      { ok: true, unread: 1, cached: false },
      { ok: true, unread: 1, cached: false },
    ]);
    assert.equal(loads.length, 2);
  });

  it('events that arrive during a load are applied after it, the watermark skipping those it counted', async () => {
    const pending = get(7);
    await waitFor(() => loads.length === 1, 2000, 5, 'load of user 7');
    dispatch<UnreadCacheMsg>(cache, { type: 'created', event: { id: 70, sender_id: 1, recipient_id: 7 } });
    dispatch<UnreadCacheMsg>(cache, { type: 'created', event: { id: 71, sender_id: 1, recipient_id: 7 } });
    dispatch<UnreadCacheMsg>(cache, { type: 'read', event: { recipient_id: 7, count: 1 } });
    // The load saw message 70 already (watermark 70): only 71 adds one, then one is read.
    loads[0]!.d.resolve({ count: 3, watermark: 70 });
    assert.deepEqual(await pending, { ok: true, unread: 3, cached: false });
    assert.deepEqual(await get(7), { ok: true, unread: 3, cached: true });
  });

  it('a failed load answers UNAVAILABLE to every waiter and caches nothing', async () => {
    const a = get(9);
    const b = get(9);
    await waitFor(() => loads.length === 1, 2000, 5, 'load of user 9');
    loads[0]!.d.reject(new Error('db down'));
    for (const r of await Promise.all([a, b])) assert.equal(r.ok ? 'ok' : r.code, 'UNAVAILABLE');
    const again = get(9);
    await waitFor(() => loads.length === 2, 2000, 5, 'a fresh load after the failure');
    loads[1]!.d.resolve({ count: 0, watermark: 0 });
    assert.deepEqual(await again, { ok: true, unread: 0, cached: false });
  });
});
