import { strict as assert } from 'node:assert';
import { createTestDb, waitFor, type TestDb } from '../helpers/services';
import { adsHarness, adsTestEnv, insertAds, viewCounts, type AdsHarness } from '../helpers/ads';
import { startAds, startGatewayRole, type RunningAds } from '../../src/roles/ads';
import { Subjects } from '../../src/nats/subjects';
import { encodeJson } from '../../src/nats/codec';
import { visitorHash } from '../../src/ads/views-stream';

interface DeadRow {
  reason: string;
  detail: string;
  ad_id: number | string | null;
  subject: string;
  stream_seq: number | string | null;
  payload: Buffer | null;
}

describe('ads: a view batch never dies for one element (issue 10 item 3)', function () {
  this.timeout(60_000);
  let tdb: TestDb;
  let h: AdsHarness;
  let ads: RunningAds;
  let adIds: number[];

  before(async () => {
    tdb = await createTestDb('ads_dead');
    adIds = await insertAds(tdb.db, 3);
  });
  after(async () => {
    await tdb.drop();
  });
  beforeEach(async () => {
    // 1 s dedup windows so a far-future view time overflows ad_views.window_no.
    h = await adsHarness(adsTestEnv({ VIEW_FLUSH_MS: '100', VIEW_DEDUP_WINDOW: '1000', TRUSTED_PROXIES: '127.0.0.1' }));
    ads = await startAds({ parent: h.system, db: tdb.db, nc: h.nc, config: h.config, log: h.logs.log, metrics: h.metrics, parts: { viewCounter: true } });
    await tdb.db('ad_views').delete();
    await tdb.db('ad_view_dead_letters').delete();
    await tdb.db('advertisements').update({ views_count: 0 });
  });
  afterEach(async () => {
    await ads.stop();
    await h.cleanup();
  });

  const deadLetters = async (): Promise<DeadRow[]> => (await tdb.db('ad_view_dead_letters').select('*').orderBy('id')) as DeadRow[];
  const settled = (): Promise<void> =>
    waitFor(
      async () => {
        const i = await (await h.nc.jetstreamManager()).consumers.info(h.config.viewsStream, h.config.viewsConsumer);
        return i.num_pending + i.num_ack_pending === 0;
      },
      15_000,
      20,
      'every view message acked',
    );

  it('counts the good views of a mixed batch exactly and dead-letters each bad one with its reason', async () => {
    const js = h.nc.jetstream();
    const [a, b] = [adIds[0]!, adIds[1]!];
    const v = (n: number): string => visitorHash('salt', `10.0.0.${n}`);
    const now = Date.now();
    const views = [
      { ad_id: a, visitor: v(1), ts: now },
      { ad_id: '__BIG__', visitor: v(2), ts: now }, // 16 digits on the wire: above 2^53 − 1, JSON.parse rounds it to 1e16
      { ad_id: a, visitor: v(3), ts: now },
      { ad_id: 987_654_321, visitor: v(4), ts: now }, // no such ad
      { ad_id: b, visitor: 'not-hex', ts: now },
      { ad_id: b, visitor: v(5), ts: 8_000_000_000_000 }, // 1 s windows: window 8e9 > INT UNSIGNED
      { ad_id: b, visitor: v(6), ts: now },
      'garbage',
    ];
    await js.publish(
      Subjects.adsViewBatch(h.config.subjectPrefix),
      new TextEncoder().encode(JSON.stringify({ views }).replace('"__BIG__"', '9999999999999999')),
      { msgID: 'mixed' },
    );
    // Single views: subject for ad a but payload for ad b; a subject that is not an id; a good one.
    await js.publish(Subjects.adsView(h.config.subjectPrefix, a), encodeJson({ ad_id: b, visitor: v(7), ts: now }), { msgID: 'mismatch' });
    await js.publish(`${h.config.subjectPrefix}ads.views.12x`, encodeJson({ ad_id: b, visitor: v(8), ts: now }), { msgID: 'badsubject' });
    await js.publish(`${h.config.subjectPrefix}ads.views.9007199254740993`, encodeJson({ ad_id: b, visitor: v(9), ts: now }), { msgID: 'unsafe-subject' });
    await js.publish(Subjects.adsView(h.config.subjectPrefix, b), encodeJson({ ad_id: b, visitor: v(10), ts: now }), { msgID: 'good' });
    await settled();
    await waitFor(async () => (await deadLetters()).length === 8, 10_000, 20, 'dead letters written');

    const counts = await viewCounts(tdb.db, [a, b]);
    assert.equal(counts.get(a), 2, 'ad a: visitors 1 and 3');
    assert.equal(counts.get(b), 2, 'ad b: visitor 6 (batch) and 10 (single)');
    const stored = await tdb.db('ad_views').select<Array<{ ad_id: number | string }>>('ad_id');
    assert.deepEqual(stored.map((r) => Number(r.ad_id)).sort(), [a, a, b, b].sort(), 'nothing stored for a missing ad');

    const dead = await deadLetters();
    const reasons = dead.map((d) => d.reason).sort();
    assert.deepEqual(
      reasons,
      ['AD_NOT_FOUND', 'BAD_PAYLOAD', 'BAD_PAYLOAD', 'BAD_PAYLOAD', 'BAD_SUBJECT', 'BAD_SUBJECT', 'SUBJECT_MISMATCH', 'TS_OUT_OF_RANGE'].sort(),
    );
    const missing = dead.find((d) => d.reason === 'AD_NOT_FOUND')!;
    assert.equal(Number(missing.ad_id), 987_654_321);
    assert.match(missing.detail, /987654321 does not exist/);
    const mismatch = dead.find((d) => d.reason === 'SUBJECT_MISMATCH')!;
    assert.equal(mismatch.subject, Subjects.adsView(h.config.subjectPrefix, a));
    assert.match(mismatch.detail, new RegExp(`subject names ad ${a} but the view is for ad ${b}`));
    const unsafe = dead.find((d) => d.reason === 'BAD_PAYLOAD' && d.payload?.toString().includes('10000000000000000'))!;
    assert.ok(unsafe, 'the 16-digit ad id is dead-lettered with its payload');
    assert.match(unsafe.detail, /ad_id must be <= 9007199254740991/);
    assert.ok(dead.every((d) => d.stream_seq !== null && d.payload !== null && d.detail.length > 0));
    const metric = (await h.metrics.registry.getSingleMetric('ads_view_events_rejected_total')!.get()).values.reduce((s, x) => s + x.value, 0);
    assert.equal(metric, 8);
  });

  it('a view of an ad deleted after the gateway checked it is dead-lettered, not stored', async () => {
    await ads.stop();
    const cfg = { ...h.config, viewFlushMs: 600_000 };
    ads = await startAds({ parent: h.system, db: tdb.db, nc: h.nc, config: cfg, log: h.logs.log, metrics: h.metrics, parts: { viewCounter: true } });
    const gw = await startGatewayRole({ db: tdb.db, nc: h.nc, config: cfg, log: h.logs.log, metrics: h.metrics, port: 0 });
    try {
      const [doomed] = await insertAds(tdb.db, 1);
      const r = await fetch(`http://127.0.0.1:${gw.port}/ads/${doomed}/views`, { method: 'POST' });
      assert.equal(r.status, 202);
      const pending = async (): Promise<number> =>
        ((await (await fetch(`http://127.0.0.1:${gw.port}/ads/${adIds[2]}/views`)).json()) as { pending: number }).pending;
      assert.equal(await pending(), 0);
      // The view is with the counter, unflushed; the ad goes away.
      await waitFor(
        async () => (await (await h.nc.jetstreamManager()).consumers.info(cfg.viewsStream, cfg.viewsConsumer)).num_ack_pending === 1,
        10_000,
        20,
        'view delivered',
      );
      await tdb.db('advertisements').where({ id: doomed }).delete();
      await ads.stop(); // final flush
      assert.equal(Number((await tdb.db('ad_views').where({ ad_id: doomed }).count({ n: '*' }))[0]!.n), 0);
      const dead = await deadLetters();
      assert.equal(dead.length, 1);
      assert.equal(dead[0]!.reason, 'AD_NOT_FOUND');
      assert.equal(Number(dead[0]!.ad_id), doomed);
    } finally {
      await gw.stop();
    }
  });

  it('the gateway refuses an ad id above 2^53 − 1 before Number() can round it (400 BAD_PAYLOAD naming the field)', async () => {
    const gw = await startGatewayRole({ db: tdb.db, nc: h.nc, config: h.config, log: h.logs.log, metrics: h.metrics, port: 0 });
    try {
      for (const id of ['9007199254740992', '9007199254740993', '9999999999999999']) {
        for (const [method, path] of [
          ['POST', `/ads/${id}/views`],
          ['GET', `/ads/${id}/views`],
          ['GET', `/users/${id}/unread`],
        ] as const) {
          const r = await fetch(`http://127.0.0.1:${gw.port}${path}`, { method });
          assert.equal(r.status, 400, `${method} ${path}`);
          const body = (await r.json()) as { code: string; message: string };
          assert.equal(body.code, 'BAD_PAYLOAD');
          assert.match(body.message, /params\/id must be a decimal integer from 1 to 9007199254740991/);
        }
      }
      // The largest safe id is a valid id (no such ad here).
      const r = await fetch(`http://127.0.0.1:${gw.port}/ads/9007199254740991/views`, { method: 'POST' });
      assert.equal(r.status, 404);
    } finally {
      await gw.stop();
    }
  });
});
