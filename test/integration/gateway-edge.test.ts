import { strict as assert } from 'node:assert';
import { connect as tcp, type Socket } from 'node:net';
import type { Subscription } from 'nats';
import { createDb, type Knex } from '../../src/db/knex';
import { createTestDb, uniq, waitFor, type TestDb } from '../helpers/services';
import { adsHarness, adsTestEnv, insertAds, viewCounts, type AdsHarness } from '../helpers/ads';
import { startAds, startGatewayRole, type RunningAds } from '../../src/roles/ads';
import { Subjects } from '../../src/nats/subjects';
import { encodeJson } from '../../src/nats/codec';
import type { AdsConfig } from '../../src/config/ads';

const TOKEN = 'test-token-0123456789abcdef';
type Gw = Awaited<ReturnType<typeof startGatewayRole>>;

/** One raw HTTP exchange: writes `head` (and optionally trickles a body), resolves with what came back and when the socket closed. */
function raw(port: number, head: string, trickle?: { bytes: number; everyMs: number }): { done: Promise<{ text: string; ms: number }>; socket: Socket } {
  const started = Date.now();
  const socket = tcp(port, '127.0.0.1');
  let text = '';
  let timer: NodeJS.Timeout | undefined;
  socket.on('data', (b) => (text += b.toString()));
  socket.on('error', () => undefined);
  socket.on('connect', () => {
    socket.write(head);
    if (trickle) {
      let sent = 0;
      timer = setInterval(() => {
        if (sent++ < trickle.bytes && socket.writable) socket.write('x');
      }, trickle.everyMs);
    }
  });
  const done = new Promise<{ text: string; ms: number }>((res) =>
    socket.once('close', () => {
      clearInterval(timer);
      res({ text, ms: Date.now() - started });
    }),
  );
  return { done, socket };
}

function jsonBody(httpText: string): Record<string, unknown> {
  const i = httpText.indexOf('\r\n\r\n');
  return JSON.parse(httpText.slice(i + 4)) as Record<string, unknown>;
}

describe('ads gateway: the HTTP edge (timeouts, framework errors, outages, metrics, visitor cap)', function () {
  this.timeout(60_000);
  let tdb: TestDb;
  let h: AdsHarness;
  let ads: RunningAds;
  let adId: number;
  const gateways: Gw[] = [];
  const start = async (over: Partial<AdsConfig> = {}, db?: Knex): Promise<Gw> => {
    const g = await startGatewayRole({ db: db ?? tdb.db, nc: h.nc, config: { ...h.config, ...over }, log: h.logs.log, metrics: h.metrics, port: 0 });
    gateways.push(g);
    return g;
  };
  const call = async (port: number, method: string, path: string, opts: { body?: string; headers?: Record<string, string> } = {}) => {
    const r = await fetch(`http://127.0.0.1:${port}${path}`, { method, ...(opts.body !== undefined ? { body: opts.body } : {}), headers: opts.headers ?? {} });
    const text = await r.text();
    return { status: r.status, text, body: JSON.parse(text) as Record<string, unknown>, headers: r.headers };
  };

  before(async () => {
    tdb = await createTestDb('ads_edge');
    [adId] = (await insertAds(tdb.db, 1)) as [number];
    h = await adsHarness(adsTestEnv({ ADS_ENQUEUE_SUBJECT: `${uniq('t')}.notify.enqueue` }));
    ads = await startAds({ parent: h.system, db: tdb.db, nc: h.nc, config: h.config, log: h.logs.log, metrics: h.metrics, parts: { viewCounter: true } });
  });
  after(async () => {
    for (const g of gateways) await g.stop();
    await ads.stop();
    await h.cleanup();
    await tdb.drop();
  });

  it('framework and Node client errors come back in the JSON shape with a stable code', async () => {
    const g = await start();
    const badUrl = await call(g.port, 'GET', '/ads/%zz/views');
    assert.deepEqual([badUrl.status, badUrl.body.code], [400, 'BAD_REQUEST']);
    const longParam = await call(g.port, 'GET', `/ads/${'1'.repeat(150)}/views`);
    assert.deepEqual([longParam.status, longParam.body.code], [414, 'URI_TOO_LONG']);
    const badJson = await call(g.port, 'POST', `/ads/${adId}/views`, { body: '{"visitor_id": ', headers: { 'content-type': 'application/json' } });
    assert.deepEqual(badJson.body, { code: 'BAD_JSON', message: 'body is not valid JSON' });
    const media = await call(g.port, 'POST', `/ads/${adId}/views`, { body: '<x/>', headers: { 'content-type': 'application/xml' } });
    assert.deepEqual([media.status, media.body.code], [415, 'UNSUPPORTED_MEDIA_TYPE']);
    // Headers over Node's 16 KiB limit: Node's clientError, answered by our clientErrorHandler.
    const big = await raw(g.port, `GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`).done;
    assert.match(big.text, /^HTTP\/1.1 431 /);
    assert.deepEqual(jsonBody(big.text).code, 'HEADERS_TOO_LARGE');
    const longUrl = await raw(g.port, `GET /ads/${'9'.repeat(20_000)}/views HTTP/1.1\r\nHost: x\r\n\r\n`).done;
    assert.match(longUrl.text, /^HTTP\/1.1 431 /);
    const garbage = await raw(g.port, 'THIS IS NOT HTTP\r\n\r\n').done;
    assert.match(garbage.text, /^HTTP\/1.1 400 /);
    assert.deepEqual(jsonBody(garbage.text).code, 'BAD_REQUEST');
    for (const r of [badUrl, longParam, badJson, media]) assert.ok(!/FST_ERR|Unexpected|statusCode/.test(r.text), r.text);
  });

  it('slow bodies are cut at GATEWAY_REQUEST_TIMEOUT with 408, and close() does not wait for them', async () => {
    const timeoutMs = 1_000;
    const g = await start({ gatewayRequestTimeoutMs: timeoutMs });
    const head = `POST /ads/${adId}/views HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n`;
    const slow = Array.from({ length: 30 }, () => raw(g.port, head, { bytes: 1000, everyMs: 100 }));
    const results = await Promise.all(slow.map((s) => s.done));
    for (const r of results) {
      assert.match(r.text, /^HTTP\/1.1 408 /, r.text);
      assert.equal(jsonBody(r.text).code, 'REQUEST_TIMEOUT');
      // the timeout, plus Node's check interval (timeout / 4), plus slack for a loaded machine
      assert.ok(r.ms >= timeoutMs - 50 && r.ms < timeoutMs + 1_500, `cut after ${r.ms} ms`);
    }
    const counted =
      (await h.metrics.registry.getSingleMetric('ads_gateway_client_errors_total')?.get())?.values.find((v) => v.labels.code === 'REQUEST_TIMEOUT')?.value ?? 0;
    assert.ok(counted >= 30, `counted ${counted}`);
    // Shutdown with 30 clients trickling: not held until their timeout.
    const g2 = await start({ gatewayRequestTimeoutMs: 30_000 });
    const held = Array.from({ length: 30 }, () => raw(g2.port, head, { bytes: 1000, everyMs: 100 }));
    await new Promise((r) => setTimeout(r, 300)); // let every socket send its headers
    const t0 = Date.now();
    await g2.stop();
    const closeMs = Date.now() - t0;
    assert.ok(closeMs < 1_000, `close took ${closeMs} ms`);
    const closed = await Promise.all(held.map((s) => s.done));
    for (const c of closed) assert.ok(c.ms < 2_000, `a slow client stayed ${c.ms} ms`);
  });

  it('GATEWAY_REQUEST_TIMEOUT bounds receiving the request, not answering it: a slow upstream answer still arrives', async () => {
    const prefix = `${uniq('s')}.`;
    const g = await start({ subjectPrefix: prefix, gatewayRequestTimeoutMs: 300, requestTimeoutMs: 3_000 });
    const sub = h.nc.subscribe(Subjects.adsUnreadGet(prefix), {
      callback: (_e, m) => setTimeout(() => m.respond(encodeJson({ ok: true, user_id: 1, unread: 2 })), 1_000),
    });
    await h.nc.flush();
    try {
      const r = await call(g.port, 'GET', '/users/1/unread');
      assert.deepEqual([r.status, r.body], [200, { user_id: 1, unread: 2 }]);
    } finally {
      sub.unsubscribe();
    }
  });

  it('a request that arrives while the gateway closes gets our 503 with Retry-After; the one in flight is answered', async () => {
    const prefix = `${uniq('c')}.`;
    const g = await start({ subjectPrefix: prefix });
    // A slow unread cache keeps the first request in flight while close() starts.
    const sub = h.nc.subscribe(Subjects.adsUnreadGet(prefix), {
      callback: (_e, m) => setTimeout(() => m.respond(encodeJson({ ok: true, user_id: 1, unread: 4 })), 400),
    });
    await h.nc.flush();
    try {
      const inFlight = raw(g.port, 'GET /users/1/unread HTTP/1.1\r\nHost: x\r\n\r\n');
      // A second client has sent half its headers when close() begins, and the rest after.
      const late = raw(g.port, 'GET /healthz HTTP/1.1\r\nHost: x\r\n');
      await new Promise((res) => setTimeout(res, 100));
      const t0 = Date.now();
      const stopped = g.stop();
      await new Promise((res) => setImmediate(res));
      late.socket.write('\r\n');
      const [a, b] = await Promise.all([inFlight.done, late.done]);
      await stopped;
      const closeMs = Date.now() - t0;
      assert.match(a.text, /^HTTP\/1.1 200 /);
      assert.match(a.text, /"unread":4/);
      assert.match(b.text, /^HTTP\/1.1 503 /);
      assert.match(b.text, /retry-after: 5/i);
      assert.equal(jsonBody(b.text).code, 'UNAVAILABLE');
      // close() waited for the in-flight answer (~400 ms), not for keep-alive timeouts (5 s)
      assert.ok(closeMs < 2_000, `close took ${closeMs} ms`);
    } finally {
      sub.unsubscribe();
    }
  });

  it('a database outage is 503 UNAVAILABLE with Retry-After on every route; no driver or SQL text in answers or logs', async () => {
    // Port 1: privileged, nothing listens. A free port from the ephemeral range (what freePort returns) can be the
    // connection's own source port, and a TCP self-connect then never sends a greeting (ETIMEDOUT after 10 s each, seen in CI).
    const down = createDb({ url: 'mysql://root@127.0.0.1:1/nope', poolMax: 2 });
    try {
      const g = await start({ gatewayRetryAfterS: 7, adCacheTtlMs: 0 }, down);
      const before = h.logs.lines().length;
      for (const [method, path] of [
        ['POST', `/ads/${adId + 1000}/views`],
        ['GET', `/ads/${adId}/views`],
        ['GET', '/readyz'],
      ] as const) {
        const r = await call(g.port, method, path, method === 'POST' ? { body: '{}', headers: { 'content-type': 'application/json' } } : {});
        assert.equal(r.status, 503, `${method} ${path}: ${r.text}`);
        assert.equal(r.body.code, 'UNAVAILABLE');
        assert.equal(r.headers.get('retry-after'), '7');
        assert.ok(!/ECONNREFUSED|select|advertisements|127\.0\.0\.1|Error/i.test(r.text), r.text);
      }
      // The actors behind /users/:id/unread and /ads/bump on the same dead database answer errors; the gateway turns them into 503s too.
      const prefix = `${uniq('d')}.`;
      const downAds = await startAds({
        parent: h.system,
        db: down,
        nc: h.nc,
        config: { ...h.config, subjectPrefix: prefix },
        log: h.logs.log,
        metrics: h.metrics,
        parts: { unread: true, bump: true },
      });
      try {
        const g2 = await start({ gatewayRetryAfterS: 7, subjectPrefix: prefix }, down);
        for (const [method, path] of [
          ['GET', '/users/7/unread'],
          ['POST', '/ads/bump'],
        ] as const) {
          const r = await call(g2.port, method, path, { headers: { authorization: `Bearer ${TOKEN}` } });
          assert.equal(r.status, 503, `${method} ${path}: ${r.text}`);
          assert.equal(r.body.code, 'UNAVAILABLE');
          assert.equal(r.headers.get('retry-after'), '7');
          assert.ok(!/ECONNREFUSED|select|advertisements|messages|127\.0\.0\.1|Error/i.test(r.text), r.text);
        }
      } finally {
        await downAds.stop();
      }
      const ready = await call(g.port, 'GET', '/readyz');
      assert.deepEqual(ready.body, { code: 'UNAVAILABLE', message: 'not ready: db unavailable', db: 'UNAVAILABLE', nats: 'ok' });
      const lines = h.logs.lines().slice(before);
      const failed = lines.filter((l) => l.msg === 'gateway request failed');
      assert.deepEqual(
        failed.map((l) => l.route),
        ['/ads/:id/views', '/ads/:id/views', '/users/:id/unread', '/ads/bump'],
      );
      for (const l of failed) {
        assert.equal(l.code, 'UNAVAILABLE');
        assert.ok(typeof l.reqId === 'string' && l.reqId !== '');
      }
      // Our own database calls keep the driver's code (not its text) as the cause.
      assert.deepEqual(
        failed.slice(0, 2).map((l) => (l.err as { cause: { code: string } }).cause.code),
        ['ECONNREFUSED', 'ECONNREFUSED'],
      );
      assert.ok(!/select|advertisements/i.test(JSON.stringify(lines)), JSON.stringify(lines));
    } finally {
      await down.destroy();
    }
  });

  it('an upstream error text (e.g. a database error from the bump actor) never reaches the client', async () => {
    // A real responder on the gateway's bump subject, answering like a bump actor whose database failed.
    const prefix = `${uniq('b')}.`;
    const g = await start({ subjectPrefix: prefix });
    const sub: Subscription = h.nc.subscribe(Subjects.adsBumpRun(prefix), {
      callback: (_e, m) =>
        m.respond(
          encodeJson({
            ok: false,
            error: { code: 'INTERNAL', message: "update `advertisements` set `bumped_at` = '2026-01-01' where id in (1,2) - Deadlock found" },
          }),
        ),
    });
    await h.nc.flush();
    try {
      const r = await call(g.port, 'POST', '/ads/bump', { headers: { authorization: `Bearer ${TOKEN}` } });
      assert.equal(r.status, 503);
      assert.deepEqual(r.body, { code: 'UNAVAILABLE', message: 'the bump run failed; retry later' });
      assert.equal(r.headers.get('retry-after'), String(h.config.gatewayRetryAfterS));
    } finally {
      sub.unsubscribe();
    }
    // Replies are validated like requests: an ok reply of the wrong shape is not passed on.
    const odd = h.nc.subscribe(Subjects.adsUnreadGet(prefix), {
      callback: (_e, m) => m.respond(encodeJson({ ok: true, user_id: 1, unread: 'lots; DROP TABLE' })),
    });
    const conflict = h.nc.subscribe(h.config.enqueueSubject, {
      callback: (_e, m) => m.respond(encodeJson({ ok: false, error: { code: 'IDEMPOTENCY_CONFLICT', message: 'key k1 was used for another notification' } })),
    });
    await h.nc.flush();
    try {
      const u = await call(g.port, 'GET', '/users/1/unread');
      assert.deepEqual([u.status, u.body.code], [503, 'UNAVAILABLE']);
      assert.ok(!u.text.includes('DROP'), u.text);
      const n = await call(g.port, 'POST', '/notifications', {
        body: JSON.stringify({ chat_id: 5, text: 'x', idempotency_key: 'k1' }),
        headers: { 'content-type': 'application/json', authorization: `Bearer ${TOKEN}` },
      });
      assert.deepEqual([n.status, n.body.code], [409, 'IDEMPOTENCY_CONFLICT']);
    } finally {
      odd.unsubscribe();
      conflict.unsubscribe();
    }
  });

  it('/metrics: not on the public port without a token; behind the bearer token when one is set', async () => {
    const open = await start({ apiToken: undefined });
    assert.equal((await call(open.port, 'GET', '/metrics')).status, 404);
    const g = await start();
    const anon = await call(g.port, 'GET', '/metrics');
    assert.deepEqual([anon.status, anon.body.code], [401, 'UNAUTHORIZED']);
    const r = await fetch(`http://127.0.0.1:${g.port}/metrics`, { headers: { authorization: `Bearer ${TOKEN}` } });
    assert.equal(r.status, 200);
    assert.match(await r.text(), /ads_gateway_requests_total/);
  });

  it('one IP counts at most VIEW_VISITORS_PER_IP distinct visitor_ids per ad per window', async () => {
    const [ad] = (await insertAds(tdb.db, 1)) as [number];
    const g = await start({ viewVisitorsPerIp: 3 });
    const answers: Array<Record<string, unknown>> = [];
    for (let i = 0; i < 10; i++)
      answers.push(
        (await call(g.port, 'POST', `/ads/${ad}/views`, { body: JSON.stringify({ visitor_id: `v${i}` }), headers: { 'content-type': 'application/json' } }))
          .body,
      );
    assert.deepEqual(answers.slice(0, 3), [{ accepted: true }, { accepted: true }, { accepted: true }]);
    assert.deepEqual(answers.slice(3), Array(7).fill({ accepted: true, counted: false }));
    // A visitor already counted may come back (deduplicated downstream), not capped.
    assert.deepEqual(
      (await call(g.port, 'POST', `/ads/${ad}/views`, { body: JSON.stringify({ visitor_id: 'v1' }), headers: { 'content-type': 'application/json' } })).body,
      { accepted: true },
    );
    await waitFor(async () => (await viewCounts(tdb.db, [ad])).get(ad) === 3, 10_000, 50, '3 views counted');
    await new Promise((r) => setTimeout(r, 3 * h.config.viewFlushMs));
    assert.equal((await viewCounts(tdb.db, [ad])).get(ad), 3);
  });

  it('a view for a missing ad is refused with 404 and never published', async () => {
    const g = await start();
    const seen: string[] = [];
    const sub = h.nc.subscribe(Subjects.adsViewsAll(h.config.subjectPrefix), { callback: (_e, m) => seen.push(m.string()) });
    await h.nc.flush();
    try {
      const missing = await call(g.port, 'POST', `/ads/${adId + 100_000}/views`, { body: '{}', headers: { 'content-type': 'application/json' } });
      assert.deepEqual([missing.status, missing.body.code], [404, 'NOT_FOUND']);
      assert.equal(
        (await call(g.port, 'POST', `/ads/${adId}/views`, { body: '{"visitor_id":"marker"}', headers: { 'content-type': 'application/json' } })).status,
        202,
      );
      await waitFor(() => seen.length >= 1, 5_000, 10, 'the good view on the bus');
      assert.equal(seen.length, 1);
      assert.ok(!seen[0]!.includes(String(adId + 100_000)));
      assert.match(seen[0]!, new RegExp(`"ad_id":${adId}\\b`));
    } finally {
      sub.unsubscribe();
    }
  });
});
