import { strict as assert } from 'node:assert';
import { createTestDb, waitFor, type TestDb } from '../helpers/services';
import { adsHarness, adsTestEnv, insertAds, lcg, viewCounts, type AdsHarness } from '../helpers/ads';
import { startAds, startGatewayRole, type RunningAds } from '../../src/roles/ads';
import { Subjects } from '../../src/nats/subjects';
import { encodeJson } from '../../src/nats/codec';
import { visitorHash } from '../../src/ads/views-stream';
import { countStatements } from '../../src/db/knex';

describe('ads: view counting through the gateway, JetStream and MariaDB', function () {
  this.timeout(60_000);
  let tdb: TestDb;
  let h: AdsHarness;
  let ads: RunningAds;
  let gw: { port: number; stop(): Promise<void> };
  let adIds: number[];

  before(async () => {
    tdb = await createTestDb('ads_views');
    adIds = await insertAds(tdb.db, 20);
  });
  after(async () => {
    await tdb.drop();
  });
  beforeEach(async () => {
    h = await adsHarness(adsTestEnv({ VIEW_FLUSH_MS: '200', VIEW_FLUSH_MAX: '300', TRUSTED_PROXIES: '127.0.0.1' }));
    ads = await startAds({ parent: h.system, db: tdb.db, nc: h.nc, config: h.config, log: h.logs.log, metrics: h.metrics, parts: { viewCounter: true } });
    gw = await startGatewayRole({ db: tdb.db, nc: h.nc, config: h.config, log: h.logs.log, metrics: h.metrics, port: 0 });
    await tdb.db('ad_views').delete();
    await tdb.db('ad_view_dead_letters').delete();
    await tdb.db('advertisements').update({ views_count: 0 });
  });
  afterEach(async () => {
    await gw.stop();
    await ads.stop();
    await h.cleanup();
  });

  const post = (id: number, visitor: string | undefined, headers: Record<string, string> = {}): Promise<Response> =>
    fetch(`http://127.0.0.1:${gw.port}/ads/${id}/views`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...headers },
      body: JSON.stringify(visitor === undefined ? {} : { visitor_id: visitor }),
    });

  it('1,000 views from 300 visitors over 20 ads: exact counts after the flush; repeats in the window not counted', async () => {
    const rnd = lcg(42);
    const expected = new Map<number, Set<string>>(adIds.map((id) => [id, new Set()]));
    const traffic: Array<[number, string]> = [];
    for (let i = 0; i < 1_000; i++) {
      const ad = adIds[Math.floor(rnd() * 20)]!;
      const visitor = `v${Math.floor(rnd() * 300)}`;
      traffic.push([ad, visitor]);
      expected.get(ad)!.add(visitor);
    }
    const distinct = [...expected.values()].reduce((s, v) => s + v.size, 0);
    assert.ok(distinct < 1_000, 'the traffic has repeats');
    // 20 concurrent clients.
    let next = 0;
    await Promise.all(
      Array.from({ length: 20 }, async () => {
        while (next < traffic.length) {
          const [ad, visitor] = traffic[next++]!;
          const r = await post(ad, visitor);
          assert.equal(r.status, 202, await r.text());
        }
      }),
    );
    await waitFor(async () => [...(await viewCounts(tdb.db, adIds)).values()].reduce((a, b) => a + b, 0) >= distinct, 20_000, 20, 'all views flushed');
    const counts = await viewCounts(tdb.db, adIds);
    for (const id of adIds) assert.equal(counts.get(id), expected.get(id)!.size, `ad ${id}`);
    // The same visitors again, inside the window: nothing more is counted.
    for (const [ad, visitor] of traffic.slice(0, 100)) assert.equal((await post(ad, visitor)).status, 202);
    await waitFor(
      async () => (await h.nc.jetstreamManager().then((j) => j.consumers.info(h.config.viewsStream, h.config.viewsConsumer))).num_ack_pending === 0,
      10_000,
      20,
      'repeats acked',
    );
    assert.deepEqual(await viewCounts(tdb.db, adIds), counts);
    // GET answers persisted + pending.
    const g = (await (await fetch(`http://127.0.0.1:${gw.port}/ads/${adIds[0]}/views`)).json()) as { views: number; persisted: number; pending: number };
    assert.equal(g.views, expected.get(adIds[0]!)!.size);
  });

  it('a view delivered again after it was committed (another msgID, a redelivery) is not counted twice; a new window counts again', async () => {
    const js = h.nc.jetstream();
    const ad = adIds[0]!;
    const visitor = visitorHash('s', '10.0.0.1');
    const ts = Date.now();
    const subject = Subjects.adsView(h.config.subjectPrefix, ad);
    await js.publish(subject, encodeJson({ ad_id: ad, visitor, ts }), { msgID: 'a' });
    await waitFor(async () => (await viewCounts(tdb.db, [ad])).get(ad) === 1, 10_000, 20, 'first view');
    await js.publish(subject, encodeJson({ ad_id: ad, visitor, ts: ts + 1 }), { msgID: 'b' });
    await js.publish(subject, encodeJson({ ad_id: ad, visitor, ts: ts + h.config.viewDedupWindowMs }), { msgID: 'c' });
    await waitFor(async () => (await viewCounts(tdb.db, [ad])).get(ad) === 2, 10_000, 20, 'next window counted');
    await waitFor(
      async () => (await h.nc.jetstreamManager().then((j) => j.consumers.info(h.config.viewsStream, h.config.viewsConsumer))).num_ack_pending === 0,
      10_000,
    );
    assert.equal((await viewCounts(tdb.db, [ad])).get(ad), 2);
  });

  it('malformed view events are dead-lettered and counted, never crash the counter; a batch keeps its good views', async () => {
    const js = h.nc.jetstream();
    const ad = adIds[1]!;
    const subject = Subjects.adsView(h.config.subjectPrefix, ad);
    const bad = [
      'not json',
      '{"ad_id":-1,"visitor":"00000000000000000000000000000000","ts":1}',
      '{"ad_id":1,"visitor":"zz","ts":1}',
      '{"ad_id":1,"visitor":"00000000000000000000000000000000","ts":1,"x":1}',
      '\u00ff\u00fe',
      '[]',
      'null',
    ];
    for (const [i, b] of bad.entries()) await js.publish(subject, new TextEncoder().encode(b), { msgID: `bad${i}` });
    // A batch with one bad view: the bad one is dead-lettered, the good one counted.
    const batch = Subjects.adsViewBatch(h.config.subjectPrefix);
    await js.publish(batch, encodeJson({ views: [] }), { msgID: 'badb1' });
    await js.publish(
      batch,
      encodeJson({
        views: [
          { ad_id: ad, visitor: visitorHash('s', 'y'), ts: 1 },
          { ad_id: 0, visitor: 'x', ts: 1 },
        ],
      }),
      { msgID: 'badb2' },
    );
    await js.publish(subject, encodeJson({ ad_id: ad, visitor: visitorHash('s', 'x'), ts: Date.now() }), { msgID: 'good' });
    await waitFor(async () => (await viewCounts(tdb.db, [ad])).get(ad) === 2, 10_000, 20, 'good views counted');
    // The metric counts once the counter has handled its flush's commit, a moment after the rows are visible.
    const rejected = async () => (await h.metrics.registry.getSingleMetric('ads_view_events_rejected_total')!.get()).values.reduce((s, v) => s + v.value, 0);
    await waitFor(async () => (await rejected()) >= bad.length + 2, 10_000, 20, 'dead letters counted in the metric');
    assert.equal(await rejected(), bad.length + 2);
    assert.equal(Number((await tdb.db('ad_view_dead_letters').count({ n: '*' }))[0]!.n), bad.length + 2, 'one dead letter per refused message or view');
    const info = await (await h.nc.jetstreamManager()).consumers.info(h.config.viewsStream, h.config.viewsConsumer);
    assert.equal(info.num_pending + info.num_ack_pending, 0, 'terminated messages are not redelivered');
  });

  it('X-Forwarded-For is believed only from TRUSTED_PROXIES', async () => {
    const ad = adIds[2]!;
    // Trusted peer (127.0.0.1): two forwarded clients are two visitors.
    assert.equal((await post(ad, undefined, { 'x-forwarded-for': '203.0.113.1' })).status, 202);
    assert.equal((await post(ad, undefined, { 'x-forwarded-for': '203.0.113.2' })).status, 202);
    await waitFor(async () => (await viewCounts(tdb.db, [ad])).get(ad) === 2, 10_000);
    // An untrusting gateway on the same stream: the header is ignored, both are 127.0.0.1.
    const h2 = { ...h.config, trustedProxies: [] };
    const gw2 = await startGatewayRole({ db: tdb.db, nc: h.nc, config: h2, log: h.logs.log, metrics: h.metrics, port: 0 });
    try {
      for (const ip of ['198.51.100.1', '198.51.100.2']) {
        const r = await fetch(`http://127.0.0.1:${gw2.port}/ads/${ad}/views`, { method: 'POST', headers: { 'x-forwarded-for': ip } });
        assert.equal(r.status, 202);
      }
      await waitFor(async () => (await viewCounts(tdb.db, [ad])).get(ad) === 3, 10_000);
    } finally {
      await gw2.stop();
    }
  });

  it('GET /ads/:id/views adds views received but not flushed; stop() flushes them before exit', async () => {
    await gw.stop();
    await ads.stop();
    const cfg = { ...h.config, viewFlushMs: 600_000 };
    ads = await startAds({ parent: h.system, db: tdb.db, nc: h.nc, config: cfg, log: h.logs.log, metrics: h.metrics, parts: { viewCounter: true } });
    gw = await startGatewayRole({ db: tdb.db, nc: h.nc, config: cfg, log: h.logs.log, metrics: h.metrics, port: 0 });
    const ad = adIds[3]!;
    for (const v of ['a', 'b', 'c', 'a']) assert.equal((await post(ad, v)).status, 202);
    const get = async (): Promise<{ views: number; persisted: number; pending: number }> =>
      (await (await fetch(`http://127.0.0.1:${gw.port}/ads/${ad}/views`)).json()) as never;
    await waitFor(async () => (await get()).pending === 3, 10_000, 20, 'pending views visible');
    assert.deepEqual(await get(), { ad_id: ad, views: 3, persisted: 0, pending: 3 } as never);
    const statements = countStatements(tdb.db);
    await ads.stop();
    const flushStatements = statements.count;
    assert.equal(flushStatements, 5, 'one flush = BEGIN, SELECT … FOR UPDATE (which ads exist), INSERT IGNORE, UPDATE, COMMIT');
    assert.equal((await viewCounts(tdb.db, [ad])).get(ad), 3);
    const info = await (await h.nc.jetstreamManager()).consumers.info(h.config.viewsStream, h.config.viewsConsumer);
    assert.equal(info.num_ack_pending, 0, 'acked after the commit');
  });
});
