import assert from 'node:assert/strict';
import fc from 'fast-check';
import { harness, type Harness } from '../helpers/pipeline';
import { adsTestEnv, insertAds } from '../helpers/ads';
import { waitFor, captureLogger, NATS_URL, uniq } from '../helpers/services';
import { loadAdsConfig, type AdsConfig } from '../../src/config/ads';
import { startGateway, type RunningGateway } from '../../src/ads/gateway';
import { startAds, type RunningAds } from '../../src/roles/ads';
import { Subjects } from '../../src/nats/subjects';
import { MAX_CHAT_ID } from '../../src/nats/payloads';
import { Metrics } from '../../src/metrics';
import { startActorSystem, stopActorSystem, type ActorSystem } from '../../src/runtime/actor';
import { connect, type NatsConnection } from 'nats';

/**
 * Property-based fuzz of the edges (issue 10): random enqueue payloads (over NATS and over
 * POST /notifications) and random view messages, valid and not. Asserted: nothing crashes (the services keep answering, no
 * unhandled rejection), every refusal carries a stable code, and afterwards the database
 * holds exactly the accepted notifications and exactly the valid views (dead letters for
 * the rest). Bounded: a fixed seed and ~150 + ~120 runs, a few seconds.
 */
const SEED = Number(process.env.FUZZ_SEED ?? 20261130);
const ENQUEUE_CODES = new Set(['BAD_JSON', 'BAD_PAYLOAD', 'PAYLOAD_TOO_LARGE', 'IDEMPOTENCY_CONFLICT']);
const enc = new TextEncoder();

type Reply = { ok: boolean; id?: number; duplicate?: boolean; error?: { code: string; message: string } };

describe('fuzz: enqueue payloads (NATS and HTTP) and view messages (fast-check)', function () {
  this.timeout(120_000);
  const unhandled: unknown[] = [];
  const onUnhandled = (e: unknown): void => void unhandled.push(e);
  before(() => process.on('unhandledRejection', onUnhandled));
  after(() => process.off('unhandledRejection', onUnhandled));

  describe('notify.enqueue and POST /notifications', () => {
    let h: Harness;
    let gw: RunningGateway;
    let gwConfig: AdsConfig;
    before(async () => {
      h = await harness();
      // Not sending (no shards owned): rows stay as stored, so they can be compared exactly.
      await h.start(undefined, { OUTBOX_POLL_MS: '60000' });
      await h.pipeline!.own([]);
      gwConfig = loadAdsConfig(adsTestEnv({ ADS_ENQUEUE_SUBJECT: h.subjects.enqueue }));
      gw = await startGateway({ db: h.tdb.db, nc: h.nc, config: gwConfig, log: captureLogger('warn').log, metrics: new Metrics() }, 0);
    });
    after(async () => {
      await gw?.close();
      await h?.close();
    });

    /** The same request over NATS, or over HTTP through the gateway (answers mapped to the NATS reply shape). */
    const send = async (via: 'nats' | 'http', json: string): Promise<Reply> => {
      if (via === 'nats')
        return JSON.parse(new TextDecoder().decode((await h.nc.request(h.subjects.enqueue, enc.encode(json), { timeout: 5_000 })).data)) as Reply;
      const res = await fetch(`http://127.0.0.1:${gw.port}/notifications`, {
        method: 'POST',
        headers: { authorization: `Bearer ${gwConfig.apiToken}`, 'content-type': 'application/json' },
        body: json,
      });
      const body = (await res.json()) as { id?: number; duplicate?: boolean; code?: string; message?: string };
      assert.ok(res.status < 500, `HTTP ${res.status} for ${json}: ${JSON.stringify(body)}`);
      if (res.status === 202) return { ok: true, id: body.id!, duplicate: body.duplicate! };
      const expected = body.code === 'IDEMPOTENCY_CONFLICT' ? 409 : body.code === 'PAYLOAD_TOO_LARGE' ? 413 : 400;
      assert.equal(res.status, expected, `status of ${String(body.code)}`);
      return { ok: false, error: { code: body.code!, message: body.message! } };
    };

    it('every reply is ok or a stable code (HTTP: never 5xx); the table holds exactly the accepted notifications', async () => {
      // Literal JSON fragments, so numbers can be written the way a client would send them (1e20, 9007199254740993).
      const int = (min: number, max: number) => fc.integer({ min, max }).map(String);
      const chatId = fc.oneof(
        { weight: 6, arbitrary: int(-MAX_CHAT_ID, MAX_CHAT_ID) },
        { weight: 1, arbitrary: fc.constantFrom('0', '4503599627370496', '-4503599627370496', '9007199254740993', '1e20', '1.5', '"123"', 'null', 'true') },
      );
      const text = fc
        .oneof(
          { weight: 5, arbitrary: fc.string({ minLength: 1, maxLength: 40 }) },
          { weight: 2, arbitrary: fc.constantFrom('if a<b and c>d then', '<b>bold</b> &amp; <i>it', '  ', '\n\t', '<b> </b>', '', 'café', 'Inv-XYZ') },
          { weight: 1, arbitrary: fc.string({ unit: 'grapheme', minLength: 1, maxLength: 20 }) },
        )
        .map((s) => JSON.stringify(s));
      /** Present `present` times out of `present + 1`. */
      const optional = <T>(a: fc.Arbitrary<T>, present = 1) => fc.oneof({ weight: present, arbitrary: a }, { weight: 1, arbitrary: fc.constant(undefined) });
      const payload = fc.record({
        chat_id: optional(chatId, 30),
        text: optional(text, 30),
        parse_mode: optional(
          fc.oneof({ weight: 4, arbitrary: fc.constantFrom('"HTML"', 'null', '"MarkdownV2"') }, { weight: 1, arbitrary: fc.constantFrom('"html"', '7') }),
        ),
        kind: optional(
          fc.oneof({ weight: 4, arbitrary: fc.constantFrom('"order_paid"', '"new_order"') }, { weight: 1, arbitrary: fc.constantFrom('"Bad Kind"', '""') }),
        ),
        order_id: optional(
          fc.oneof(
            { weight: 4, arbitrary: int(1, Number.MAX_SAFE_INTEGER) },
            { weight: 1, arbitrary: fc.constantFrom('0', '-1', '9007199254740992', '18446744073709551615', '1e20', '2.5') },
          ),
        ),
        priority: optional(fc.oneof({ weight: 4, arbitrary: int(-100, 100) }, { weight: 1, arbitrary: fc.constantFrom('101', '1e3') })),
        // A small pool, case/accent/space variants included, so repeats and conflicts happen.
        idempotency_key: optional(
          fc.oneof(
            { weight: 6, arbitrary: fc.constantFrom('"k1"', '"K1"', '"k1 "', '"café"', '"cafe"', '"k2"') },
            { weight: 1, arbitrary: fc.constantFrom('""', JSON.stringify('x'.repeat(129))) },
          ),
        ),
        extra: fc.oneof({ weight: 1, arbitrary: fc.constant('1') }, { weight: 30, arbitrary: fc.constant(undefined) }),
      });
      const message = fc.oneof(
        {
          weight: 12,
          arbitrary: payload.map(
            (p) =>
              `{${Object.entries(p)
                .filter(([, v]) => v !== undefined)
                .map(([k, v]) => `"${k}":${v}`)
                .join(',')}}`,
          ),
        },
        { weight: 1, arbitrary: fc.constantFrom('', 'not json', '[]', 'null', '{"chat_id":1,"text":"x"', '\u0000') },
      );

      const accepted = new Map<number, Record<string, unknown>>();
      const byKey = new Map<string, number>();
      let refusals = 0;
      await fc.assert(
        fc.asyncProperty(message, fc.constantFrom('nats' as const, 'http' as const), async (json, via) => {
          const r = await send(via, json);
          if (!r.ok) {
            refusals++;
            assert.ok(r.error && ENQUEUE_CODES.has(r.error.code), `unstable or unexpected code for ${json}: ${JSON.stringify(r)}`);
            assert.ok(r.error.message.length > 0);
            if (r.error.code === 'IDEMPOTENCY_CONFLICT') {
              const req = JSON.parse(json) as Record<string, unknown>;
              const first = accepted.get(byKey.get(req.idempotency_key as string)!);
              assert.ok(first, 'a conflict names a key that was accepted');
              assert.ok(
                ['chat_id', 'text', 'kind', 'order_id', 'parse_mode'].some((f) => JSON.stringify(first[f]) !== JSON.stringify(req[f])),
                `conflict for an identical body: ${json}`,
              );
            }
            return;
          }
          const req = JSON.parse(json) as Record<string, unknown>;
          // Accepted requests were within bounds: nothing was rounded on the way in.
          assert.ok(Number.isSafeInteger(req.chat_id) && Math.abs(req.chat_id as number) <= MAX_CHAT_ID && req.chat_id !== 0, json);
          if (req.order_id !== undefined) assert.ok(Number.isSafeInteger(req.order_id), json);
          assert.ok(typeof req.text === 'string' && /\S/u.test(req.text), json);
          const key = req.idempotency_key as string | undefined;
          if (r.duplicate) {
            assert.ok(key !== undefined && byKey.get(key) === r.id, `duplicate must name the first row of key ${JSON.stringify(key)}`);
            const first = accepted.get(r.id!)!;
            for (const f of ['chat_id', 'text', 'kind', 'order_id']) assert.deepEqual(first[f], req[f], `duplicate with a different ${f}`);
          } else {
            assert.ok(!accepted.has(r.id!));
            accepted.set(r.id!, req);
            if (key !== undefined) {
              assert.ok(!byKey.has(key), `key ${JSON.stringify(key)} accepted twice as new`);
              byKey.set(key, r.id!);
            }
          }
        }),
        { numRuns: 150, seed: SEED, endOnFailure: true },
      );

      const rows = await h.tdb
        .db('telegram_notifications')
        .select<Array<Record<string, unknown>>>('id', 'telegram_id', 'message_text', 'parse_mode', 'kind', 'order_id', 'priority', 'idempotency_key');
      assert.equal(rows.length, accepted.size, 'exactly the accepted notifications are stored');
      for (const row of rows) {
        const req = accepted.get(Number(row.id));
        assert.ok(req, `row ${String(row.id)} was never accepted`);
        assert.equal(String(row.telegram_id), String(req.chat_id));
        assert.equal(row.message_text, req.text);
        assert.equal(row.parse_mode, req.parse_mode === undefined ? 'HTML' : req.parse_mode);
        assert.equal(row.kind, req.kind ?? null);
        assert.equal(
          row.order_id === null ? null : String(row.order_id as number | string),
          req.order_id === undefined ? null : String(req.order_id as number),
        );
        assert.equal(row.idempotency_key, req.idempotency_key ?? null);
      }
      assert.ok(refusals > 10 && accepted.size > 10, `both sides exercised (${refusals} refused, ${accepted.size} stored)`);
      if (process.env.FUZZ_VERBOSE) console.log({ refusals, stored: accepted.size, keys: byKey.size });
      // Still serving.
      assert.equal((await send('nats', '{"chat_id":7,"text":"alive"}')).ok, true);
      assert.equal((await send('http', '{"chat_id":7,"text":"alive too"}')).ok, true);
      assert.deepEqual(unhandled, []);
    });
  });

  describe('ads.views.*', () => {
    let h: Harness;
    let nc: NatsConnection;
    let system: ActorSystem;
    let ads: RunningAds;
    let config: AdsConfig;
    let adIds: number[];
    before(async () => {
      h = await harness();
      nc = await connect({ servers: NATS_URL, name: uniq('fuzz') });
      system = startActorSystem(uniq('fuzz'), captureLogger('warn').log);
      // 1 s dedup windows, so a view time above ~4.29e12 ms overflows ad_views.window_no.
      config = loadAdsConfig(adsTestEnv({ VIEW_FLUSH_MS: '50', VIEW_DEDUP_WINDOW: '1000' }));
      adIds = await insertAds(h.tdb.db, 3);
      ads = await startAds({ parent: system, db: h.tdb.db, nc, config, log: captureLogger('warn').log, metrics: new Metrics(), parts: { viewCounter: true } });
    });
    after(async () => {
      await ads?.stop();
      stopActorSystem(system);
      await (await nc.jetstreamManager()).streams.delete(config.viewsStream).catch(() => undefined);
      await nc.drain().catch(() => undefined);
      await h?.close();
    });

    it('good views are counted exactly once per (ad, visitor, window); every bad one is dead-lettered with its reason', async () => {
      const now = Date.now();
      const missingAd = 987_654_321;
      const hex = fc.constantFrom('0123456789abcdef0123456789abcdef', 'ffffffffffffffffffffffffffffffff', '00000000000000000000000000000001');
      const ts = fc.constantFrom(now, now + 1, now - 86_400_000, 0);
      type El = { json: string; kind: 'good' | 'bad' | 'overflow' | 'missing'; key?: string; ad?: number };
      const windowKey = (ad: number, v: string, t: number): string => `${ad}.${v}.${Math.floor(t / 1000)}`;
      const element = (ad: number): fc.Arbitrary<El> =>
        fc.oneof(
          {
            weight: 6,
            arbitrary: fc
              .tuple(hex, ts)
              .map(([v, t]): El => ({ json: JSON.stringify({ ad_id: ad, visitor: v, ts: t }), kind: 'good', key: windowKey(ad, v, t), ad })),
          },
          {
            weight: 1,
            arbitrary: fc.tuple(hex, ts).map(([v, t]): El => ({
              json: JSON.stringify({ ad_id: missingAd, visitor: v, ts: t }),
              kind: 'missing',
              key: windowKey(missingAd, v, t),
              ad: missingAd,
            })),
          },
          { weight: 1, arbitrary: hex.map((v): El => ({ json: JSON.stringify({ ad_id: ad, visitor: v, ts: 5_000_000_000_000 }), kind: 'overflow', ad })) },
          {
            weight: 2,
            arbitrary: fc
              .constantFrom(
                `{"ad_id":9999999999999999,"visitor":"0123456789abcdef0123456789abcdef","ts":1}`,
                `{"ad_id":0,"visitor":"0123456789abcdef0123456789abcdef","ts":1}`,
                `{"ad_id":${ad},"visitor":"0123456789ABCDEF0123456789ABCDEF","ts":1}`,
                `{"ad_id":${ad},"visitor":"0123456789abcdef0123456789abcdef","ts":-1}`,
                `{"ad_id":${ad},"visitor":"0123456789abcdef0123456789abcdef","ts":1,"x":1}`,
                `{"ad_id":"${ad}","visitor":"0123456789abcdef0123456789abcdef","ts":1}`,
                '"view"',
                'null',
              )
              .map((json): El => ({ json, kind: 'bad' })),
          },
        );
      const adArb = fc.constantFrom(...adIds);
      type Msg = { subject: string; data: string; expect: { good: El[]; dead: Record<string, number>; missing: El[] } };
      const single: fc.Arbitrary<Msg> = fc.tuple(adArb, fc.constantFrom('same', 'other', 'word', 'unsafe'), adArb).chain(([ad, subj, other]) =>
        element(ad).map((el): Msg => {
          const token =
            subj === 'same' ? String(ad) : subj === 'other' ? String(other === ad ? ad + 1_000_000 : other) : subj === 'word' ? 'x1' : '9007199254740993';
          const dead: Record<string, number> = {};
          const r: Msg = { subject: `${config.subjectPrefix}ads.views.${token}`, data: el.json, expect: { good: [], dead, missing: [] } };
          if (subj === 'word' || subj === 'unsafe') dead.BAD_SUBJECT = 1;
          else if (el.kind === 'bad') dead.BAD_PAYLOAD = 1;
          else if (el.ad !== Number(token)) dead.SUBJECT_MISMATCH = 1;
          else if (el.kind === 'overflow') dead.TS_OUT_OF_RANGE = 1;
          else if (el.kind === 'missing') r.expect.missing.push(el);
          else r.expect.good.push(el);
          return r;
        }),
      );
      const batch: fc.Arbitrary<Msg> = fc.oneof(
        {
          weight: 5,
          arbitrary: fc.array(adArb.chain(element), { minLength: 1, maxLength: 6 }).map((els): Msg => {
            const dead: Record<string, number> = {};
            const r: Msg = {
              subject: Subjects.adsViewBatch(config.subjectPrefix),
              data: `{"views":[${els.map((e) => e.json).join(',')}]}`,
              expect: { good: [], dead, missing: [] },
            };
            for (const el of els) {
              if (el.kind === 'bad') dead.BAD_PAYLOAD = (dead.BAD_PAYLOAD ?? 0) + 1;
              else if (el.kind === 'overflow') dead.TS_OUT_OF_RANGE = (dead.TS_OUT_OF_RANGE ?? 0) + 1;
              else if (el.kind === 'missing') r.expect.missing.push(el);
              else r.expect.good.push(el);
            }
            return r;
          }),
        },
        {
          weight: 1,
          arbitrary: fc
            .constantFrom<[string, string]>(
              ['{"views":[]}', 'BAD_PAYLOAD'],
              ['{"views":[],"x":1}', 'BAD_PAYLOAD'],
              ['not json', 'BAD_JSON'],
              ['[1,2]', 'BAD_PAYLOAD'],
            )
            .map(([data, code]): Msg => ({
              subject: Subjects.adsViewBatch(config.subjectPrefix),
              data,
              expect: { good: [], dead: { [code]: 1 }, missing: [] },
            })),
        },
      );

      const js = nc.jetstream();
      const goodKeys = new Set<string>();
      const perAd = new Map<number, Set<string>>();
      const dead: Record<string, number> = {};
      const missingKeys = new Set<string>();
      let missingViews = 0;
      await fc.assert(
        fc.asyncProperty(fc.oneof(single, batch), async (m) => {
          await js.publish(m.subject, enc.encode(m.data));
          for (const el of m.expect.good) {
            goodKeys.add(el.key!);
            if (!perAd.has(el.ad!)) perAd.set(el.ad!, new Set());
            perAd.get(el.ad!)!.add(el.key!);
          }
          for (const [k, n] of Object.entries(m.expect.dead)) dead[k] = (dead[k] ?? 0) + n;
          for (const el of m.expect.missing) missingKeys.add(el.key!);
          missingViews += m.expect.missing.length;
        }),
        { numRuns: 120, seed: SEED, endOnFailure: true },
      );

      await waitFor(
        async () => {
          const i = await (await nc.jetstreamManager()).consumers.info(config.viewsStream, config.viewsConsumer);
          return i.num_pending + i.num_ack_pending === 0;
        },
        20_000,
        25,
        'every view message acked',
      );

      const stored = (await h.tdb.db('ad_views').count({ n: '*' }))[0] as { n: number | string };
      assert.equal(Number(stored.n), goodKeys.size, 'exactly the distinct valid views are stored');
      const counts = await h.tdb.db('advertisements').select<Array<{ id: number | string; views_count: number | string }>>('id', 'views_count');
      for (const c of counts) assert.equal(Number(c.views_count), perAd.get(Number(c.id))?.size ?? 0, `ad ${c.id}`);
      const dl = await h.tdb.db('ad_view_dead_letters').select('reason').count<Array<{ reason: string; n: number | string }>>({ n: '*' }).groupBy('reason');
      const got = Object.fromEntries(dl.map((r) => [r.reason, Number(r.n)]));
      const notFound = got.AD_NOT_FOUND ?? 0;
      delete got.AD_NOT_FOUND;
      assert.deepEqual(got, dead, 'each refused view or message dead-lettered once, with its reason');
      // Repeats of one missing-ad view inside one flush batch share a dead letter.
      assert.ok(notFound >= missingKeys.size && notFound <= missingViews, `AD_NOT_FOUND ${notFound} within [${missingKeys.size}, ${missingViews}]`);
      assert.ok(goodKeys.size > 10 && Object.keys(dead).length >= 4, 'both sides exercised');
      assert.deepEqual(unhandled, []);
    });
  });
});
