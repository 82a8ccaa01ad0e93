import assert from 'node:assert/strict';
import { harness, type Harness } from '../helpers/pipeline';
import { adsTestEnv } from '../helpers/ads';
import { waitFor } from '../helpers/services';
import { loadAdsConfig, type AdsConfig } from '../../src/config/ads';
import { startGateway, type RunningGateway } from '../../src/ads/gateway';
import { encodeJson } from '../../src/nats/codec';
import { MAX_CHAT_ID } from '../../src/nats/payloads';
import { Metrics } from '../../src/metrics';

type Reply = { ok: boolean; id?: number; shard?: number; duplicate?: boolean; error?: { code: string; message: string } };

/** Issue 10 items 1, 2, 4, 8 (enqueue logs) and 9 (empty text), over real NATS, MariaDB, HTTP and the Telegram sandbox. */
describe('enqueue integrity: exact keys, bounded numbers, visible text, quiet logs', function () {
  this.timeout(60_000);
  let h: Harness;
  let gw: RunningGateway;
  let config: AdsConfig;

  before(async () => {
    h = await harness();
    await h.start();
    config = loadAdsConfig(adsTestEnv({ ADS_ENQUEUE_SUBJECT: h.subjects.enqueue }));
    gw = await startGateway({ db: h.tdb.db, nc: h.nc, config, log: h.logs.log, metrics: new Metrics() }, 0);
  });
  after(async () => {
    await gw?.close();
    await h?.close();
  });

  const ask = async (payload: unknown): Promise<Reply> => {
    const data = payload instanceof Uint8Array ? payload : encodeJson(payload);
    return JSON.parse(new TextDecoder().decode((await h.nc.request(h.subjects.enqueue, data, { timeout: 5_000 })).data)) as Reply;
  };
  const post = async (body: string | object): Promise<{ status: number; body: Record<string, unknown> }> => {
    const r = await fetch(`http://127.0.0.1:${gw.port}/notifications`, {
      method: 'POST',
      headers: { authorization: `Bearer ${config.apiToken}`, 'content-type': 'application/json' },
      body: typeof body === 'string' ? body : JSON.stringify(body),
    });
    return { status: r.status, body: (await r.json()) as Record<string, unknown> };
  };
  const rows = async (where: Record<string, unknown> = {}) =>
    h.tdb.db('telegram_notifications').where(where).orderBy('id').select<
      Array<{
        id: number;
        telegram_id: number | string;
        message_text: string;
        idempotency_key: string | null;
        order_id: number | null;
      }>
    >('id', 'telegram_id', 'message_text', 'idempotency_key', 'order_id');

  it('item 1: keys that differ only in case, accents or a trailing space are different keys; each notification is stored and delivered', async () => {
    const pairs: Array<[string, string]> = [
      ['Inv-XYZ', 'inv-xyz'],
      ['cafe', 'café'],
      ['tok1', 'tok1 '],
      ['strasse', 'straße'],
    ];
    let chat = 810_001;
    const ids: number[] = [];
    for (const [k1, k2] of pairs) {
      const a = await ask({ chat_id: chat, text: `for ${k1}`, idempotency_key: k1 });
      const b = await ask({ chat_id: chat + 1, text: `for ${k2}`, idempotency_key: k2 });
      assert.equal(a.ok, true, JSON.stringify(a));
      assert.equal(b.ok, true, JSON.stringify(b));
      assert.equal(a.duplicate, false);
      assert.equal(b.duplicate, false, `${JSON.stringify(k2)} is not ${JSON.stringify(k1)}`);
      assert.notEqual(a.id, b.id);
      ids.push(a.id!, b.id!);
      chat += 2;
    }
    const stored = await rows();
    for (const [i, [k1, k2]] of pairs.entries()) {
      assert.equal(stored.find((r) => r.id === ids[2 * i])!.idempotency_key, k1);
      assert.equal(stored.find((r) => r.id === ids[2 * i + 1])!.idempotency_key, k2);
    }
    await waitFor(
      async () => (await h.tdb.db('telegram_notifications').whereIn('id', ids).where({ status: 'sent' }).count({ n: '*' }))[0]!.n == ids.length,
      15_000,
      50,
      'all eight sent',
    );
    for (let c = 810_001; c < chat; c++) assert.equal(h.sandbox.delivered(c).length, 1, `chat ${c}`);
  });

  it('item 1: the same key with another chat, text, parse_mode, kind or order is IDEMPOTENCY_CONFLICT (NATS) / 409 (HTTP); the same body is a duplicate with the original id', async () => {
    const base = { chat_id: 820_001, text: 'Order 7 paid', kind: 'order_paid', order_id: 7, idempotency_key: 'pay-7' };
    const first = await ask(base);
    assert.equal(first.ok, true);
    const variants: Array<[object, string]> = [
      [{ ...base, chat_id: 820_002 }, 'chat_id'],
      [{ ...base, text: 'Order 8 paid' }, 'text'],
      [{ ...base, parse_mode: null }, 'parse_mode'],
      [{ ...base, kind: 'order_refunded' }, 'kind'],
      [{ ...base, order_id: 8 }, 'order_id'],
    ];
    for (const [v, field] of variants) {
      const r = await ask(v);
      assert.equal(r.ok, false, JSON.stringify(r));
      assert.equal(r.error!.code, 'IDEMPOTENCY_CONFLICT');
      assert.match(r.error!.message, new RegExp(`already used by notification ${first.id} with a different ${field}`));
      const http = await post(v);
      assert.equal(http.status, 409, JSON.stringify(http.body));
      assert.equal(http.body.code, 'IDEMPOTENCY_CONFLICT');
    }
    const again = await ask({ ...base, priority: 50 }); // priority orders delivery; it is not the message
    assert.deepEqual({ ok: again.ok, id: again.id, duplicate: again.duplicate }, { ok: true, id: first.id, duplicate: true });
    const httpAgain = await post(base);
    assert.equal(httpAgain.status, 202);
    assert.deepEqual(httpAgain.body, { id: first.id, duplicate: true });
    assert.equal((await rows({ idempotency_key: 'pay-7' })).length, 1);
    assert.equal((await rows({ telegram_id: 820_002 })).length, 0, 'the conflicting notification was not stored');
  });

  it('item 2: out-of-range numbers are BAD_PAYLOAD naming the field (400 over HTTP), never INTERNAL/503, never rounded', async () => {
    const before = (await rows()).length;
    const cases: Array<[string, RegExp]> = [
      ['{"chat_id":5,"text":"x","order_id":1e20}', /\/order_id must be <= 9007199254740991/],
      ['{"chat_id":5,"text":"x","order_id":9007199254740993}', /\/order_id must be <= 9007199254740991/],
      ['{"chat_id":5,"text":"x","order_id":18446744073709551615}', /\/order_id must be <= 9007199254740991/],
      [`{"chat_id":${MAX_CHAT_ID + 1},"text":"x"}`, /\/chat_id must be <= 4503599627370495/],
      [`{"chat_id":-${MAX_CHAT_ID + 1},"text":"x"}`, /\/chat_id must be >= -4503599627370495/],
      ['{"chat_id":1e300,"text":"x"}', /\/chat_id must be <= 4503599627370495/],
    ];
    for (const [json, message] of cases) {
      const r = await ask(new TextEncoder().encode(json));
      assert.equal(r.ok, false, json);
      assert.equal(r.error!.code, 'BAD_PAYLOAD', json);
      assert.match(r.error!.message, message);
      const http = await post(json);
      assert.equal(http.status, 400, `${json}: ${JSON.stringify(http.body)}`);
      assert.equal(http.body.code, 'BAD_PAYLOAD');
      assert.match(String(http.body.message), /(chat_id|order_id)/);
    }
    assert.equal((await rows()).length, before, 'nothing stored');
    // The bounds themselves are accepted and stored exactly.
    const ok = await ask({ chat_id: -MAX_CHAT_ID, text: 'edge', order_id: Number.MAX_SAFE_INTEGER });
    assert.equal(ok.ok, true, JSON.stringify(ok));
    const [row] = await rows({ id: ok.id });
    assert.equal(String(row!.telegram_id), String(-MAX_CHAT_ID));
    assert.equal(String(row!.order_id), '9007199254740991');
    await h.tdb.db('telegram_notifications').where({ id: ok.id }).delete();
  });

  it('item 2: a request the schema accepts is never refused for its size (65,536 escaped characters = 384 KiB of JSON)', async () => {
    const text = '\u0001'.repeat(65_536);
    const json = JSON.stringify({ chat_id: 850_001, text, parse_mode: null });
    assert.ok(json.length > 384 * 1024);
    const r = await ask(new TextEncoder().encode(json));
    assert.equal(r.ok, true, JSON.stringify(r).slice(0, 200));
    const [row] = await rows({ id: r.id });
    assert.equal(row!.message_text, text);
    await h.tdb.db('telegram_notifications').where({ id: r.id }).delete();
  });

  it('item 2: rows written straight into the table with numbers beyond the safe range are failed unsent, never rounded', async () => {
    await h.tdb.db.raw("INSERT INTO telegram_notifications (telegram_id, message_text) VALUES (9007199254740993, 'legacy: chat beyond 2^53')");
    await h.tdb.db.raw(
      "INSERT INTO telegram_notifications (telegram_id, message_text, order_id) VALUES (860001, 'legacy: order beyond 2^53', 18446744073709551615)",
    );
    await h.tdb.db.raw("INSERT INTO telegram_notifications (telegram_id, message_text) VALUES (860002, 'legacy: fine')");
    await waitFor(
      async () =>
        (await h.tdb.db('telegram_notifications').where('message_text', 'like', 'legacy:%').whereIn('status', ['sent', 'failed']).count({ n: '*' }))[0]!.n == 3,
      15_000,
      50,
      'legacy rows settled',
    );
    const got = await h.tdb
      .db('telegram_notifications')
      .where('message_text', 'like', 'legacy:%')
      .orderBy('id')
      .select<Array<{ status: string; error_code: string | null; error_message: string | null }>>('status', 'error_code', 'error_message');
    assert.equal(got[0]!.status, 'failed');
    assert.equal(got[0]!.error_code, 'BAD_PAYLOAD');
    assert.match(got[0]!.error_message!, /telegram_id 9007199254740993 is outside Telegram's range/);
    assert.equal(got[1]!.status, 'failed');
    assert.match(got[1]!.error_message!, /order_id 18446744073709551615 is above 9007199254740991/);
    assert.equal(got[2]!.status, 'sent');
    assert.equal(h.sandbox.delivered(860002).length, 1);
    assert.equal(h.sandbox.delivered(860001).length, 0, 'not sent with another order');
    assert.equal(h.sandbox.delivered(9007199254740992).length, 0, 'not sent to the rounded chat');
  });

  it('item 9: empty or whitespace-only text (also once HTML tags are removed) is refused over NATS and HTTP', async () => {
    const before = (await rows()).length;
    for (const body of [
      { chat_id: 5, text: '   ' },
      { chat_id: 5, text: '\n\t \u00a0' },
      { chat_id: 5, text: '<b> </b>' },
      { chat_id: 5, text: '' },
      { chat_id: 5, text: ' ', parse_mode: null },
    ]) {
      const r = await ask(body);
      assert.equal(r.ok, false, JSON.stringify(body));
      assert.equal(r.error!.code, 'BAD_PAYLOAD');
      assert.match(r.error!.message, /\/text/);
      const http = await post(body);
      assert.equal(http.status, 400, JSON.stringify(http.body));
      assert.equal(http.body.code, 'BAD_PAYLOAD');
    }
    // A tag-looking text that is visible as plain characters is not empty.
    assert.equal((await ask({ chat_id: 5, text: '<>' })).ok, true);
    assert.equal((await rows()).length, before + 1);
  });

  it('item 4: an HTML parse error falls back to plain text with every visible character: "if a<b and c>d then" arrives exactly so', async () => {
    const texts = ['if a<b and c>d then', '<b>Total</b>: 3 < 5 &amp; 7 > 2 &nbsp;<i>ok'];
    const expected = ['if a<b and c>d then', 'Total: 3 < 5 & 7 > 2 &nbsp;ok'];
    for (const [i, text] of texts.entries()) {
      const r = await ask({ chat_id: 830_001 + i, text }); // parse_mode defaults to HTML
      assert.equal(r.ok, true);
      await waitFor(async () => (await h.tdb.db('telegram_notifications').where({ id: r.id }).first()).status === 'sent', 15_000, 50, 'sent');
      const got = h.sandbox.delivered(830_001 + i);
      assert.equal(got.length, 1);
      assert.equal(got[0]!.text, expected[i]);
      const row = await h.tdb.db('telegram_notifications').where({ id: r.id }).first();
      assert.match(row.notes, /parse error, sent as plain text/);
    }
  });

  it('item 8: a failed enqueue logs codes and ids, never the message text or SQL with values', async () => {
    const secret = 'SECRET-TEXT-8c1f of a customer';
    await h.tdb.db.raw('RENAME TABLE telegram_notifications TO tn_away');
    let r: Reply;
    try {
      r = await ask({ chat_id: 840_001, text: secret, idempotency_key: 'secret-key-42' });
    } finally {
      await h.tdb.db.raw('RENAME TABLE tn_away TO telegram_notifications');
    }
    assert.equal(r.ok, false);
    assert.equal(r.error!.code, 'INTERNAL');
    assert.ok(!r.error!.message.includes(secret));
    const line = h.logs.lines().find((l) => l.msg === 'enqueue failed');
    assert.ok(line, 'the failure is logged');
    assert.equal(line.code, 'INTERNAL');
    assert.equal(line.chat_id, 840_001);
    assert.equal(line.db_code, 'ER_NO_SUCH_TABLE');
    const all = h.logs.text();
    assert.ok(!all.includes(secret), 'no message text in any log line');
    assert.ok(!all.includes('secret-key-42'), 'no idempotency key in any log line');
    assert.ok(!/insert into/i.test(all), 'no SQL in any log line');
  });
});
