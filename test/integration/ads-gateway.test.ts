import { strict as assert } from 'node:assert';
import type { Subscription } from 'nats';
import { createTestDb, uniq, waitFor, type TestDb } from '../helpers/services';
import { adsHarness, adsTestEnv, insertAds, type AdsHarness } from '../helpers/ads';
import { startAds, startGatewayRole, type RunningAds } from '../../src/roles/ads';
import { Subjects } from '../../src/nats/subjects';
import { encodeJson, validator } from '../../src/nats/codec';
import { EnqueueRequest, type EnqueueReply } from '../../src/nats/payloads';

const TOKEN = 'test-token-0123456789abcdef';

describe('ads: HTTP gateway', function () {
  this.timeout(30_000);
  let tdb: TestDb;
  let h: AdsHarness;
  let ads: RunningAds;
  let gw: { port: number; stop(): Promise<void> };
  let adId: number;
  let enqueued: EnqueueRequest[];
  let responder: Subscription;

  before(async () => {
    tdb = await createTestDb('ads_gw');
    [adId] = (await insertAds(tdb.db, 1)) as [number];
    h = await adsHarness(adsTestEnv({ ADS_ENQUEUE_SUBJECT: `${uniq('t')}.notify.enqueue`, GATEWAY_BODY_LIMIT: '1024' }));
    ads = await startAds({ parent: h.system, db: tdb.db, nc: h.nc, config: h.config, log: h.logs.log, metrics: h.metrics });
    gw = await startGatewayRole({ db: tdb.db, nc: h.nc, config: h.config, log: h.logs.log, metrics: h.metrics, port: 0 });
    // Contract test of the gateway side: a tiny real responder on the enqueue subject, validating like the pipeline.
    enqueued = [];
    const check = validator(EnqueueRequest);
    responder = h.nc.subscribe(h.config.enqueueSubject, {
      callback: (_e, m) => {
        let reply: EnqueueReply;
        try {
          const req = check(m.json());
          enqueued.push(req);
          reply = { ok: true, id: enqueued.length, shard: 0, duplicate: false };
        } catch (e) {
          reply = { ok: false, error: { code: 'BAD_PAYLOAD', message: String(e) } };
        }
        m.respond(encodeJson(reply));
      },
    });
    await h.nc.flush();
  });
  after(async () => {
    responder.unsubscribe();
    await gw.stop();
    await ads.stop();
    await h.cleanup();
    await tdb.drop();
  });

  const call = async (
    method: string,
    path: string,
    opts: { body?: string; headers?: Record<string, string> } = {},
  ): Promise<{ status: number; body: Record<string, unknown>; headers: Headers }> => {
    const r = await fetch(`http://127.0.0.1:${gw.port}${path}`, {
      method,
      ...(opts.body !== undefined ? { body: opts.body } : {}),
      headers: opts.headers ?? {},
    });
    const text = await r.text();
    let body: Record<string, unknown>;
    try {
      body = JSON.parse(text) as Record<string, unknown>;
    } catch {
      body = { text };
    }
    return { status: r.status, body, headers: r.headers };
  };
  const json = { 'content-type': 'application/json' };
  const auth = { ...json, authorization: `Bearer ${TOKEN}` };

  it('bad input on every route → 4xx with a stable code, never a 500, never a crash', async () => {
    const cases: Array<[string, string, { body?: string; headers?: Record<string, string> }, number, string]> = [
      // ids
      ['POST', '/ads/abc/views', {}, 400, 'BAD_PAYLOAD'],
      ['POST', '/ads/-1/views', {}, 400, 'BAD_PAYLOAD'],
      ['POST', '/ads/0/views', {}, 400, 'BAD_PAYLOAD'],
      ['POST', '/ads/1.5/views', {}, 400, 'BAD_PAYLOAD'],
      ['POST', '/ads/1e3/views', {}, 400, 'BAD_PAYLOAD'],
      ['POST', '/ads/99999999999999999999/views', {}, 400, 'BAD_PAYLOAD'],
      ['POST', '/ads/999999/views', {}, 404, 'NOT_FOUND'],
      ['GET', '/ads/abc/views', {}, 400, 'BAD_PAYLOAD'],
      ['GET', '/ads/-3/views', {}, 400, 'BAD_PAYLOAD'],
      ['GET', '/ads/999999/views', {}, 404, 'NOT_FOUND'],
      ['GET', '/users/abc/unread', {}, 400, 'BAD_PAYLOAD'],
      ['GET', '/users/-1/unread', {}, 400, 'BAD_PAYLOAD'],
      ['GET', '/users/0/unread', {}, 400, 'BAD_PAYLOAD'],
      // bodies
      ['POST', `/ads/${adId}/views`, { body: '{"visitor_id":', headers: json }, 400, 'BAD_JSON'],
      ['POST', `/ads/${adId}/views`, { body: '', headers: json }, 400, 'BAD_JSON'],
      ['POST', `/ads/${adId}/views`, { body: '{"visitor_id":"a","extra":1}', headers: json }, 400, 'BAD_PAYLOAD'],
      ['POST', `/ads/${adId}/views`, { body: '{"visitor_id":42}', headers: json }, 400, 'BAD_PAYLOAD'],
      ['POST', `/ads/${adId}/views`, { body: '{"visitor_id":"<script>"}', headers: json }, 400, 'BAD_PAYLOAD'],
      ['POST', `/ads/${adId}/views`, { body: '[1,2]', headers: json }, 400, 'BAD_PAYLOAD'],
      ['POST', `/ads/${adId}/views`, { body: JSON.stringify({ visitor_id: 'a'.repeat(5_000) }), headers: json }, 413, 'PAYLOAD_TOO_LARGE'],
      ['POST', `/ads/${adId}/views`, { body: '<xml/>', headers: { 'content-type': 'application/xml' } }, 415, 'UNSUPPORTED_MEDIA_TYPE'],
      ['POST', '/notifications', { body: '{"chat_id":1,"text":"x"}', headers: json }, 401, 'UNAUTHORIZED'],
      ['POST', '/notifications', { body: '{"chat_id":1,"text":"x"}', headers: { ...json, authorization: 'Bearer wrong' } }, 401, 'UNAUTHORIZED'],
      ['POST', '/notifications', { body: '{"chat_id":1,"text":"x"}', headers: { ...json, authorization: `Bearer ${TOKEN}x` } }, 401, 'UNAUTHORIZED'],
      ['POST', '/notifications', { body: '{"chat_id":1,"text":"x"}', headers: { ...json, authorization: `Basic ${TOKEN}` } }, 401, 'UNAUTHORIZED'],
      ['POST', '/notifications', { body: '{"chat_id":1}', headers: auth }, 400, 'BAD_PAYLOAD'],
      ['POST', '/notifications', { body: '{"chat_id":"1","text":"x"}', headers: auth }, 400, 'BAD_PAYLOAD'],
      ['POST', '/notifications', { body: '{"chat_id":1,"text":"x","sneaky":1}', headers: auth }, 400, 'BAD_PAYLOAD'],
      ['POST', '/notifications', { body: '{"chat_id":1,"text":', headers: auth }, 400, 'BAD_JSON'],
      ['POST', '/notifications', { body: JSON.stringify({ chat_id: 1, text: 'x'.repeat(2_000) }), headers: auth }, 413, 'PAYLOAD_TOO_LARGE'],
      ['POST', '/ads/bump', {}, 401, 'UNAUTHORIZED'],
      ['POST', '/ads/bump', { headers: { authorization: 'Bearer nope' } }, 401, 'UNAUTHORIZED'],
      ['POST', '/ads/bump', { body: '{"all":true}', headers: auth }, 400, 'BAD_PAYLOAD'],
      ['POST', '/ads/bump', { body: 'nope', headers: auth }, 400, 'BAD_JSON'],
      ['GET', '/nope', {}, 404, 'NOT_FOUND'],
      ['DELETE', `/ads/${adId}/views`, {}, 404, 'NOT_FOUND'],
    ];
    for (const [method, path, opts, status, code] of cases) {
      const r = await call(method, path, opts);
      assert.equal(r.status, status, `${method} ${path} ${opts.body ?? ''} → ${JSON.stringify(r.body)}`);
      assert.equal(r.body.code, code, `${method} ${path}`);
      assert.equal(typeof r.body.message, 'string');
      if (status === 401) assert.equal(r.headers.get('www-authenticate'), 'Bearer');
    }
    assert.equal((await call('GET', '/healthz')).status, 200, 'still alive');
  });

  it('every endpoint answers on good input', async () => {
    assert.equal((await call('POST', `/ads/${adId}/views`)).status, 202, 'a bare beacon');
    assert.equal(
      (await call('POST', `/ads/${adId}/views`, { body: '{"visitor_id":"abc"}', headers: { 'content-type': 'text/plain' } })).status,
      202,
      'sendBeacon text/plain',
    );
    await waitFor(async () => (await call('GET', `/ads/${adId}/views`)).body.persisted === 2, 5_000, 20, 'views persisted');
    assert.deepEqual((await call('GET', '/users/7/unread')).body, { user_id: 7, unread: 0 });
    const n = await call('POST', '/notifications', { body: JSON.stringify({ chat_id: 42, text: 'Your ad got a message', kind: 'ad_message' }), headers: auth });
    assert.equal(n.status, 202, JSON.stringify(n.body));
    assert.deepEqual(n.body, { id: 1, duplicate: false });
    assert.deepEqual(enqueued, [{ chat_id: 42, text: 'Your ad got a message', kind: 'ad_message' }]);
    const b = await call('POST', '/ads/bump', { headers: { authorization: `Bearer ${TOKEN}` } });
    assert.equal(b.status, 200);
    assert.equal(typeof b.body.bumped, 'number');
    assert.deepEqual((await call('GET', '/readyz')).body, { ok: true, db: 'ok', nats: 'ok' });
    const m = await call('GET', '/metrics', { headers: { authorization: `Bearer ${TOKEN}` } });
    assert.match(m.body.text as string, /ads_gateway_requests_total/);
  });

  it('rate-limits per client IP with RATE_LIMITED; tokens unset disable the protected routes', async () => {
    const strict = { ...h.config, rateLimitMax: 3, apiToken: undefined };
    const g = await startGatewayRole({ db: tdb.db, nc: h.nc, config: strict, log: h.logs.log, metrics: h.metrics, port: 0 });
    try {
      const statuses: number[] = [];
      let last: Record<string, unknown> = {};
      for (let i = 0; i < 5; i++) {
        const r = await fetch(`http://127.0.0.1:${g.port}/users/1/unread`);
        statuses.push(r.status);
        last = (await r.json()) as Record<string, unknown>;
      }
      assert.deepEqual(statuses, [200, 200, 200, 429, 429]);
      assert.equal(last.code, 'RATE_LIMITED');
      assert.equal((await fetch(`http://127.0.0.1:${g.port}/healthz`)).status, 200, 'probes are not limited');
    } finally {
      await g.stop();
    }
    const open = { ...h.config, apiToken: undefined };
    const g2 = await startGatewayRole({ db: tdb.db, nc: h.nc, config: open, log: h.logs.log, metrics: h.metrics, port: 0 });
    try {
      const r = await fetch(`http://127.0.0.1:${g2.port}/ads/bump`, { method: 'POST', headers: { authorization: 'Bearer anything-at-all-here' } });
      assert.equal(r.status, 401);
      assert.match(((await r.json()) as { message: string }).message, /ADS_API_TOKEN/);
    } finally {
      await g2.stop();
    }
  });

  it('503 UNAVAILABLE with a code when nobody answers on NATS', async () => {
    const cfg = { ...h.config, subjectPrefix: `${uniq('none')}.`, enqueueSubject: `${uniq('none')}.enqueue` };
    const g = await startGatewayRole({ db: tdb.db, nc: h.nc, config: cfg, log: h.logs.log, metrics: h.metrics, port: 0 });
    try {
      for (const [method, path, body] of [
        ['GET', '/users/1/unread', undefined],
        ['POST', '/ads/bump', undefined],
        ['POST', '/notifications', '{"chat_id":1,"text":"x"}'],
      ] as const) {
        const r = await fetch(`http://127.0.0.1:${g.port}${path}`, {
          method,
          headers: body ? auth : { authorization: `Bearer ${TOKEN}` },
          ...(body ? { body } : {}),
        });
        assert.equal(r.status, 503, path);
        assert.equal(((await r.json()) as { code: string }).code, 'UNAVAILABLE');
      }
    } finally {
      await g.stop();
    }
  });

  it('bad NATS request payloads on the ads subjects get an error reply with a code', async () => {
    const p = h.config.subjectPrefix;
    for (const [subject, payload] of [
      [Subjects.adsPending(p), '{"ad_id":0}'],
      [Subjects.adsBumpRun(p), '{"now":1}'],
      [Subjects.adsUnreadGet(p), 'garbage'],
    ] as const) {
      const m = await h.nc.request(subject, new TextEncoder().encode(payload), { timeout: 2_000 });
      const r = m.json<{ ok: boolean; error: { code: string } }>();
      assert.equal(r.ok, false);
      assert.ok(['BAD_PAYLOAD', 'BAD_JSON'].includes(r.error.code), subject);
    }
    assert.equal((await call('GET', '/healthz')).status, 200);
  });
});
