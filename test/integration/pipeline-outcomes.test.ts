import assert from 'node:assert/strict';
import { harness, insertLegacy, rowsByStatus, type Harness } from '../helpers/pipeline';
import { waitFor } from '../helpers/services';
import { encodeJson } from '../../src/nats/codec';

const row = (h: Harness, id: number) => h.tdb.db('telegram_notifications').where({ id }).first();

describe('delivery pipeline: each Telegram answer', function () {
  this.timeout(60_000);
  let h: Harness;
  afterEach(async () => {
    await h?.close();
  });

  it('honours a forced 429: waits retry_after, resends, does not count a failed attempt', async () => {
    h = await harness();
    h.sandbox.injectFailure({ chatId: 42, status: 429, retryAfter: 1, count: 1 });
    const [id] = await insertLegacy(h, [{ chat: 42, text: 'after the flood' }]);
    const started = Date.now();
    await h.start();
    await waitFor(async () => (await row(h, id!)).status === 'sent', 15_000, 50, 'sent');
    const r = await row(h, id!);
    assert.equal(r.sent, 1);
    assert.equal(r.retry_count, 0);
    assert.equal(r.attempts, 1);
    assert.equal(h.sandbox.stats().rejected['429'], 1);
    const delivered = h.sandbox.delivered(42);
    assert.equal(delivered.length, 1);
    // The 429 came after `started`; the resend must wait its retry_after (1 s).
    assert.ok(delivered[0]!.at - started >= 1000, `resent ${delivered[0]!.at - started} ms after start`);
  });

  it('fails a row after TELEGRAM_MAX_ATTEMPTS transient errors, keeping the last reason and sent = 0', async () => {
    h = await harness();
    h.sandbox.injectFailure({ chatId: 43, status: 502, count: 100 });
    const [id] = await insertLegacy(h, [{ chat: 43, text: 'doomed' }]);
    await h.start(undefined, { TELEGRAM_MAX_ATTEMPTS: '3' });
    await waitFor(async () => (await row(h, id!)).status === 'failed', 15_000, 50, 'failed');
    const r = await row(h, id!);
    assert.equal(r.sent, 0);
    assert.equal(r.attempts, 3);
    assert.equal(r.error_code, 'TG_TRANSIENT');
    assert.match(r.error_message, /502/);
    assert.equal(h.sandbox.stats().injected, 3, 'exactly three calls');
  });

  it('fails a blocked chat after one call, marks the recipient, and short-circuits later rows', async () => {
    h = await harness();
    h.sandbox.setChat({ chatId: 44, state: 'blocked' });
    const [id] = await insertLegacy(h, [{ chat: 44, text: 'hello?' }]);
    await h.start();
    await waitFor(async () => (await row(h, id!)).status === 'failed', 15_000, 50, 'failed');
    const r = await row(h, id!);
    assert.equal(r.error_code, 'TG_PERMANENT');
    assert.match(r.error_message, /blocked by the user/);
    assert.equal(h.sandbox.stats().requests, 1);
    await waitFor(async () => (await h.tdb.db('telegram_recipients').where({ chat_id: 44 }).first())?.status === 'blocked', 5_000, 50, 'recipient row');
    const [id2] = await insertLegacy(h, [{ chat: 44, text: 'again?' }]);
    await waitFor(async () => (await row(h, id2!)).status === 'failed', 15_000, 50, 'second failed');
    assert.equal(h.sandbox.stats().requests, 1, 'no second call to Telegram');
    assert.match((await row(h, id2!)).error_message, /recipient blocked since/);
  });

  it('resends once as plain text after a parse error, and notes it', async () => {
    h = await harness();
    const [id] = await insertLegacy(h, [{ chat: 45, text: '<b>bold &amp; unclosed' }]);
    await h.start();
    await waitFor(async () => (await row(h, id!)).status === 'sent', 15_000, 50, 'sent');
    const d = h.sandbox.delivered(45);
    assert.equal(d.length, 1);
    assert.equal(d[0]!.text, 'bold & unclosed');
    assert.equal(d[0]!.parseMode, undefined);
    assert.match((await row(h, id!)).notes, /parse error/);
  });

  it('splits a text over 4096 characters into ordered parts; the row is sent when all are', async () => {
    h = await harness();
    const lines = Array.from({ length: 300 }, (_, i) => `line ${String(i).padStart(3, '0')} ${'x'.repeat(22)}`);
    const text = lines.join('\n');
    assert.ok(text.length > 8192);
    const [id] = await insertLegacy(h, [{ chat: 46, text }]);
    await h.start();
    await waitFor(async () => (await row(h, id!)).status === 'sent', 15_000, 50, 'sent');
    const parts = h.sandbox.delivered(46).map((d) => d.text!);
    assert.equal(parts.length, 3);
    for (const p of parts) assert.ok(p.length <= 4096);
    assert.equal(parts.join('\n'), text);
  });

  it('follows a group migrated to a supergroup', async () => {
    h = await harness();
    h.sandbox.setChat({ chatId: -4700, state: 'migrated', migrateToChatId: -1001000004700 });
    const [id] = await insertLegacy(h, [{ chat: -4700, text: 'to the group' }]);
    await h.start();
    await waitFor(async () => (await row(h, id!)).status === 'sent', 15_000, 50, 'sent');
    assert.equal(h.sandbox.delivered(-1001000004700).length, 1);
    assert.equal(h.sandbox.delivered(-4700).length, 0);
    await waitFor(
      async () => (await h.tdb.db('telegram_recipients').where({ chat_id: -4700 }).first())?.migrated_to_chat_id === -1001000004700,
      5_000,
      50,
      'recipient migrated',
    );
  });
});

describe('notify.enqueue over NATS', function () {
  this.timeout(60_000);
  let h: Harness;
  afterEach(async () => {
    await h?.close();
  });

  const ask = async (payload: Uint8Array) =>
    JSON.parse(new TextDecoder().decode((await h.nc.request(h.subjects.enqueue, payload, { timeout: 5_000 })).data)) as {
      ok: boolean;
      id?: number;
      duplicate?: boolean;
      error?: { code: string; message: string };
    };

  it('rejects bad payloads with a code and a precise message, and keeps serving', async () => {
    h = await harness();
    await h.start(undefined, { OUTBOX_POLL_MS: '60000' });
    const enc = new TextEncoder();
    const cases: Array<[Uint8Array, string, RegExp]> = [
      [enc.encode('not json'), 'BAD_JSON', /not JSON/],
      [encodeJson({ chat_id: 'abc', text: 'x' }), 'BAD_PAYLOAD', /\/chat_id must be integer/],
      [encodeJson({ chat_id: 5, text: '' }), 'BAD_PAYLOAD', /\/text must NOT have fewer than 1 characters/],
      [encodeJson({ chat_id: 5, text: 'x'.repeat(70_000) }), 'BAD_PAYLOAD', /\/text must NOT have more than 65536 characters/],
      [encodeJson({ chat_id: 5, text: 'x', colour: 'red' }), 'BAD_PAYLOAD', /unknown field "colour"/],
      [encodeJson({ text: 'x' }), 'BAD_PAYLOAD', /missing required field "chat_id"/],
      [encodeJson([1, 2]), 'BAD_PAYLOAD', /must be object/],
      [new Uint8Array(600 * 1024), 'PAYLOAD_TOO_LARGE', /limit/],
    ];
    for (const [payload, code, message] of cases) {
      const r = await ask(payload);
      assert.equal(r.ok, false);
      assert.equal(r.error!.code, code, JSON.stringify(r));
      assert.match(r.error!.message, message);
    }
    const good = await ask(encodeJson({ chat_id: 99, text: 'still alive' }));
    assert.equal(good.ok, true);
    const stored = await row(h, good.id!);
    assert.equal(Number(stored.telegram_id), 99);
    assert.equal(stored.message_text, 'still alive');
    const count = await h.tdb.db('telegram_notifications').count({ n: '*' });
    assert.equal(Number((count[0] as { n: number | string }).n), 1, 'only the good one was stored');
  });

  it('wakes the owner at once (no poll needed) and honours idempotency keys', async () => {
    h = await harness();
    // A poll interval of a minute: only the wake-up can deliver within the test.
    await h.start(undefined, { OUTBOX_POLL_MS: '60000' });
    const a = await ask(encodeJson({ chat_id: 501, text: 'order paid', idempotency_key: 'pay-1', priority: 5 }));
    const b = await ask(encodeJson({ chat_id: 501, text: 'order paid', idempotency_key: 'pay-1' }));
    assert.equal(a.ok, true);
    assert.equal(b.ok, true);
    assert.equal(b.id, a.id);
    assert.equal(b.duplicate, true);
    await h.sandbox.waitForDelivered(1, 5_000);
    await waitFor(async () => (await row(h, a.id!)).status === 'sent', 5_000, 20, 'sent');
    assert.equal(h.sandbox.delivered(501).length, 1);
  });
});

describe('graceful shutdown', function () {
  this.timeout(60_000);
  let h: Harness;
  afterEach(async () => {
    await h?.close();
  });

  it('leaves no row claimed and no outcome unwritten', async () => {
    h = await harness({ sandbox: { globalRate: 300, chatRate: 5 } });
    await insertLegacy(
      h,
      Array.from({ length: 200 }, (_, i) => ({ chat: 2000 + (i % 4), text: `s${i}` })),
    );
    await h.start();
    await h.sandbox.waitForDelivered(30, 10_000);
    await h.stopPipeline();
    const byStatus = await rowsByStatus(h);
    assert.equal(byStatus.claimed ?? 0, 0, 'nothing left claimed');
    assert.ok((byStatus.pending ?? 0) > 0, 'the test stopped mid-run');
    assert.equal(byStatus.sent, h.sandbox.delivered().length, 'every accepted send is recorded as sent');
    const marked = await h.tdb.db('telegram_notifications').where({ status: 'sent', sent: 1 }).count({ n: '*' });
    assert.equal(Number((marked[0] as { n: number | string }).n), byStatus.sent);
  });
});
