import assert from 'node:assert/strict';
import { encodeJson } from '../../src/nats/codec';
import { harness, type Harness } from '../helpers/pipeline';
import { waitFor } from '../helpers/services';

/** notify.recipient.changed is a hint: the receiver re-reads telegram_recipients and applies the stored row, never the event. */
describe('recipients: notify.recipient.changed is validated and checked against the database', function () {
  this.timeout(30_000);
  let h: Harness;

  before(async () => {
    h = await harness();
    await h.start();
  });
  after(async () => {
    await h?.close();
  });

  const enqueue = async (chat: number, text: string): Promise<void> => {
    const r = (await h.nc.request(h.subjects.enqueue, encodeJson({ chat_id: chat, text }), { timeout: 5_000 })).json<{ ok: boolean }>();
    assert.equal(r.ok, true);
  };
  const logged = (pred: (l: Record<string, unknown>) => boolean): Array<Record<string, unknown>> => h.logs.lines().filter(pred);

  it('a forged redirect or block (no such row in the database) changes nothing: sends go to the original chat', async () => {
    h.nc.publish(h.subjects.recipientChanged, encodeJson({ chat_id: 7001, status: 'migrated', migrated_to_chat_id: -1006660000001 }));
    h.nc.publish(h.subjects.recipientChanged, encodeJson({ chat_id: 7002, status: 'blocked' }));
    await waitFor(() => logged((l) => l.code === 'RECIPIENT_MISMATCH').length === 2, 5_000, 20, 'both events checked against the database');
    assert.deepEqual(
      logged((l) => l.code === 'RECIPIENT_MISMATCH')
        .map((l) => [l.chatId, l.announced, l.stored])
        .sort(),
      [
        [7001, 'migrated', 'ok'],
        [7002, 'blocked', 'ok'],
      ],
    );
    assert.equal(h.pipeline!.recipients.target(7001), 7001);
    assert.equal(h.pipeline!.recipients.unreachable(7002), undefined);
    await enqueue(7001, 'to 7001');
    await enqueue(7002, 'to 7002');
    await waitFor(() => h.sandbox.delivered(7001).length === 1 && h.sandbox.delivered(7002).length === 1, 10_000, 50, 'both delivered to their own chats');
    assert.equal(h.sandbox.delivered(-1006660000001).length, 0);
  });

  it('an operator change that is in the database applies (block, then clear)', async () => {
    await h.tdb
      .db('telegram_recipients')
      .insert({ chat_id: 7005, status: 'blocked', reason: 'operator', error_code: 'TG_PERMANENT', unreachable_since: new Date() });
    h.nc.publish(h.subjects.recipientChanged, encodeJson({ chat_id: 7005, status: 'blocked' }));
    await waitFor(() => h.pipeline!.recipients.unreachable(7005) !== undefined, 5_000, 20, 'blocked from the database');
    await h.tdb.db('telegram_recipients').where({ chat_id: 7005 }).update({ status: 'ok', reason: null, error_code: null, unreachable_since: null });
    h.nc.publish(h.subjects.recipientChanged, encodeJson({ chat_id: 7005, status: 'ok', migrated_to_chat_id: null }));
    await waitFor(() => h.pipeline!.recipients.unreachable(7005) === undefined, 5_000, 20, 'cleared from the database');
  });

  it('a sender announces a change only after its row is written, so its own echo keeps the mark', async () => {
    h.sandbox.setChat({ chatId: 7010, state: 'blocked' });
    const before = logged((l) => l.code === 'RECIPIENT_MISMATCH').length;
    const sub = h.nc.subscribe(h.subjects.recipientChanged);
    const echoed = (async () => {
      for await (const m of sub) if (m.string().includes('"chat_id":7010')) return m.string();
      return '';
    })();
    await h.nc.flush();
    await enqueue(7010, 'are you there');
    const event = await echoed;
    sub.unsubscribe();
    assert.match(event, /"status":"blocked"/);
    // The row was already there when the event went out.
    const row = await h.tdb.db('telegram_recipients').where({ chat_id: 7010 }).first<{ status: string } | undefined>('status');
    assert.equal(row?.status, 'blocked');
    // Refreshes of one chat run in order: once ours is done, the pipeline's refresh of the echo is too.
    assert.equal(await h.pipeline!.recipients.refresh(7010), 'blocked');
    assert.ok(h.pipeline!.recipients.unreachable(7010), 'still marked unreachable');
    assert.equal(logged((l) => l.code === 'RECIPIENT_MISMATCH').length, before);
  });

  it('bad payloads (out-of-range ids, chat 0, unknown status, extra fields) are refused with BAD_PAYLOAD and change nothing', async () => {
    const before = logged((l) => l.msg === 'bad recipient event ignored').length;
    const bad = [
      { chat_id: 1e20, status: 'ok' },
      { chat_id: 0, status: 'blocked' },
      { chat_id: 7020, status: 'migrated', migrated_to_chat_id: 100_000_000_000_000_000 },
      { chat_id: 7020, status: 'gone' },
      { chat_id: 7020, status: 'ok', extra: 1 },
    ];
    for (const b of bad) h.nc.publish(h.subjects.recipientChanged, encodeJson(b));
    h.nc.publish(h.subjects.recipientChanged, new TextEncoder().encode('not json'));
    await waitFor(() => logged((l) => l.msg === 'bad recipient event ignored').length === before + bad.length + 1, 5_000, 20, 'every bad event refused');
    const codes = logged((l) => l.msg === 'bad recipient event ignored')
      .slice(before)
      .map((l) => l.code);
    assert.deepEqual(codes, ['BAD_PAYLOAD', 'BAD_PAYLOAD', 'BAD_PAYLOAD', 'BAD_PAYLOAD', 'BAD_PAYLOAD', 'BAD_JSON']);
    assert.equal(h.pipeline!.recipients.target(7020), 7020);
  });
});
