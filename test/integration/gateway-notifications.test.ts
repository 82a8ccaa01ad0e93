import assert from 'node:assert/strict';
import { harness, type Harness } from '../helpers/pipeline';
import { adsTestEnv } from '../helpers/ads';
import { waitFor } from '../helpers/services';
import { loadAdsConfig } from '../../src/config/ads';
import { buildGateway } from '../../src/ads/gateway';
import { Metrics } from '../../src/metrics';

describe('POST /notifications end to end: gateway → notify.enqueue → pipeline → Telegram sandbox', function () {
  this.timeout(30_000);
  let h: Harness;
  afterEach(async () => {
    await h?.close();
  });

  it('enqueues through the real pipeline and the message is delivered; a repeat with the same key is not', async () => {
    h = await harness();
    await h.start(undefined, { OUTBOX_POLL_MS: '60000' });
    const config = loadAdsConfig(adsTestEnv({ ADS_ENQUEUE_SUBJECT: h.subjects.enqueue }));
    const app = await buildGateway({ db: h.tdb.db, nc: h.nc, config, log: h.logs.log, metrics: new Metrics() });
    try {
      const post = () =>
        app.inject({
          method: 'POST',
          url: '/notifications',
          headers: { authorization: `Bearer ${config.apiToken}`, 'content-type': 'application/json' },
          payload: { chat_id: 777001, text: 'Your ad got a reply', idempotency_key: 'reply-1' },
        });
      const first = await post();
      assert.equal(first.statusCode, 202, first.body);
      const body = first.json<{ id: number; duplicate: boolean }>();
      assert.equal(body.duplicate, false);
      await h.sandbox.waitForDelivered(1, 10_000);
      assert.equal(h.sandbox.delivered(777001)[0]!.text, 'Your ad got a reply');
      const again = await post();
      assert.equal(again.statusCode, 202);
      assert.deepEqual(again.json(), { id: body.id, duplicate: true });
      await waitFor(async () => (await h.tdb.db('telegram_notifications').where({ id: body.id }).first()).status === 'sent', 5_000, 50, 'sent');
      assert.equal(h.sandbox.delivered(777001).length, 1);
    } finally {
      await app.close();
    }
  });
});
