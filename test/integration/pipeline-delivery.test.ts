import assert from 'node:assert/strict';
import { Metrics } from '../../src/metrics';
import { harness, insertLegacy, rowsByStatus, type Harness } from '../helpers/pipeline';
import { waitFor } from '../helpers/services';

describe('delivery pipeline (MariaDB + NATS + sandbox over HTTP)', function () {
  this.timeout(60_000);
  let h: Harness;

  afterEach(async () => {
    await h?.close();
  });

  it('sends every legacy row exactly once, in per-chat order, with sent_at set and no 429', async () => {
    h = await harness({ sandbox: { globalRate: 300, chatRate: 10 } });
    const rows = [];
    for (let i = 0; i < 400; i++) rows.push({ chat: 1000 + (i % 40), text: `m${i}` });
    const ids = await insertLegacy(h, rows);
    await h.start();
    await waitFor(async () => (await rowsByStatus(h)).sent === ids.length, 30_000, 100, 'all rows sent');
    const delivered = h.sandbox.delivered();
    assert.equal(delivered.length, 400);
    assert.equal(new Set(delivered.map((d) => d.text)).size, 400, 'no duplicates');
    for (let c = 0; c < 40; c++) {
      const texts = h.sandbox.delivered(1000 + c).map((d) => Number(d.text!.slice(1)));
      assert.deepEqual(
        texts,
        [...texts].sort((a, b) => a - b),
        `chat ${1000 + c} in order`,
      );
    }
    const stats = h.sandbox.stats();
    assert.equal(stats.rejected['429'] ?? 0, 0);
    const unsent = await h.tdb.db('telegram_notifications').where('sent', 0).orWhereNull('sent_at').count({ n: '*' });
    assert.equal(Number((unsent[0] as { n: number | string }).n), 0);
  });

  it('keeps per-chat order when the sandbox injects 5xx into a chat mid-sequence', async () => {
    h = await harness({ sandbox: { globalRate: 300, chatRate: 10 } });
    await insertLegacy(
      h,
      Array.from({ length: 10 }, (_, i) => ({ chat: 777, text: `n${i}` })),
    );
    h.sandbox.injectFailure({ chatId: 777, status: 502, count: 2 });
    await h.start();
    await waitFor(async () => (await rowsByStatus(h)).sent === 10, 20_000, 50, 'all sent');
    assert.deepEqual(
      h.sandbox.delivered(777).map((d) => d.text),
      Array.from({ length: 10 }, (_, i) => `n${i}`),
    );
    const first = await h.tdb.db('telegram_notifications').orderBy('id').first();
    assert.equal(first.retry_count, 2);
    assert.equal(first.attempts, 3);
  });
  it('an emptied outbox (TRUNCATE restarts the ids): new rows under the ids of rows sent a moment ago are sent, not taken for those', async () => {
    h = await harness({ sandbox: { globalRate: 300, chatRate: 10 } });
    const first = await insertLegacy(
      h,
      Array.from({ length: 20 }, (_, i) => ({ chat: 4000 + (i % 5), text: `old${i}` })),
    );
    await h.start();
    await waitFor(async () => (await rowsByStatus(h)).sent === 20, 20_000, 50, 'the first rows sent');
    await h.tdb.db.raw('TRUNCATE telegram_notifications');
    const again = await insertLegacy(
      h,
      Array.from({ length: 20 }, (_, i) => ({ chat: 4000 + (i % 5), text: `new${i}` })),
    );
    assert.deepEqual(again, first, 'the same ids again');
    await waitFor(async () => h.sandbox.delivered().filter((d) => d.text!.startsWith('new')).length === 20, 20_000, 50, 'the new rows delivered');
    await waitFor(async () => (await rowsByStatus(h)).sent === 20, 20_000, 50, 'the new rows written as sent');
    assert.equal(h.sandbox.delivered().length, 40, 'each row once');
  });
});

describe('pipeline metrics', function () {
  this.timeout(30_000);
  let h: Harness;
  afterEach(async () => {
    await h?.close();
  });

  it('exposes per-shard queue depth, the delivery counters and the gate on the registry', async () => {
    h = await harness({ sandbox: { globalRate: 300, chatRate: 2 } });
    await insertLegacy(
      h,
      Array.from({ length: 40 }, (_, i) => ({ chat: 12345, text: `q${i}` })),
    );
    const metrics = new Metrics();
    await h.start(undefined, undefined, undefined, metrics);
    // One chat at 2 msg/s: most rows wait in its shard's queue for a while.
    await h.sandbox.waitForDelivered(3, 10_000);
    const text = await metrics.text();
    const depth = /sender_queue_depth\{shard="28"\} (\d+)/.exec(text);
    assert.ok(
      depth && Number(depth[1]) > 0 && Number(depth[1]) <= 40,
      text
        .split('\n')
        .filter((l) => l.startsWith('sender_queue_depth'))
        .join('\n'),
    );
    assert.match(text, /telegram_sent_total\{shard="28"\} [1-9]/);
    assert.match(text, /gate_limit_per_window 300/);
  });
});
