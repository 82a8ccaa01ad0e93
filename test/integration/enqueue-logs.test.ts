import assert from 'node:assert/strict';
import { encodeJson } from '../../src/nats/codec';
import type { EnqueueReply } from '../../src/nats/payloads';
import { harness, type Harness } from '../helpers/pipeline';

/** Issue 10 item 8: a failed enqueue logs ids and codes — never the SQL, whose values carry the message text. */
describe('logs of a failed enqueue carry ids and codes, never SQL or message text', function () {
  this.timeout(30_000);
  let h: Harness;

  before(async () => {
    h = await harness();
    await h.start();
  });
  after(async () => {
    await h?.close();
  });

  it('the database refuses the insert: the reply is INTERNAL, the log has the chat id and the driver code only', async () => {
    const secret = 'Your parcel code is SECRET-7781 <b>do not share</b>';
    await h.tdb.db.raw('RENAME TABLE telegram_notifications TO telegram_notifications_away');
    try {
      const r = (
        await h.nc.request(h.subjects.enqueue, encodeJson({ chat_id: 8080, text: secret, idempotency_key: 'key-SECRET-7781' }), { timeout: 5_000 })
      ).json<EnqueueReply>();
      assert.equal(r.ok, false);
      if (!r.ok) {
        assert.equal(r.error.code, 'INTERNAL');
        assert.ok(!r.error.message.includes('SECRET'), r.error.message);
      }
    } finally {
      await h.tdb.db.raw('RENAME TABLE telegram_notifications_away TO telegram_notifications');
    }
    const line = h.logs.lines().find((l) => l.msg === 'enqueue failed');
    assert.ok(line, 'the failure is logged');
    assert.equal(line.chat_id, 8080);
    assert.equal(line.code, 'INTERNAL');
    assert.equal(line.db_code, 'ER_NO_SUCH_TABLE');
    const text = h.logs.text();
    assert.ok(!text.includes('SECRET-7781'), 'no message text or key in the logs');
    assert.ok(!/insert into/i.test(text), 'no SQL in the logs');
  });
});
