import assert from 'node:assert/strict';
import { OutboxRepository } from '../../src/outbox/repository';
import { createTestDb, type TestDb } from '../helpers/services';

describe('outbox claim (MariaDB, SKIP LOCKED)', function () {
  this.timeout(30_000);
  let tdb: TestDb;
  before(async () => {
    tdb = await createTestDb('claim');
  });
  after(() => tdb?.drop());
  beforeEach(async () => {
    await tdb.db.raw('DELETE FROM telegram_notifications');
    await tdb.db.raw('DELETE FROM shard_owners');
  });

  const shards = Array.from({ length: 64 }, (_, i) => i);
  const claimReq = { shards, limit: 100, leaseMs: 30_000, buffered: new Map<number, number>(), perChatCap: () => 100 };

  it('never lets a chat overtake its oldest pending row that another statement holds locked', async () => {
    const repo = new OutboxRepository(tdb.db, 'w1:test', 64);
    await repo.takeShards(shards);
    await tdb.db('telegram_notifications').insert([
      { telegram_id: 111, message_text: 'a1' },
      { telegram_id: 111, message_text: 'a2' },
      { telegram_id: 222, message_text: 'b1' },
    ]);
    const first = (await tdb.db('telegram_notifications').where({ message_text: 'a1' }).first()) as { id: number };
    // Another transaction holds a1 locked (as a lease renewal or a takeover scan might, for a moment).
    const trx = await tdb.db.transaction();
    try {
      await trx.raw('SELECT id FROM telegram_notifications WHERE id = ? FOR UPDATE', [first.id]);
      const got = await repo.claim(claimReq);
      assert.deepEqual(
        got.map((r) => r.text),
        ['b1'],
        'chat 111 sits this claim out instead of sending a2 first',
      );
    } finally {
      await trx.rollback();
    }
    const later = await repo.claim(claimReq);
    assert.deepEqual(
      later.map((r) => r.text),
      ['a1', 'a2'],
    );
  });

  it('claims only the shards this process is the fenced owner of', async () => {
    const a = new OutboxRepository(tdb.db, 'a:1', 64);
    const b = new OutboxRepository(tdb.db, 'b:1', 64);
    await a.takeShards(shards);
    await tdb.db('telegram_notifications').insert({ telegram_id: 333, message_text: 'x' });
    await b.takeShards(shards); // b took over (a lost its lease): a's claims must find nothing
    assert.deepEqual(await a.claim(claimReq), []);
    assert.equal((await b.claim(claimReq)).length, 1);
  });

  it('takeShards makes rows a previous owner still held claimable, and reports who it was', async () => {
    const a = new OutboxRepository(tdb.db, 'a:2', 64);
    const b = new OutboxRepository(tdb.db, 'b:2', 64);
    await a.takeShards(shards);
    await tdb.db('telegram_notifications').insert({ telegram_id: 444, message_text: 'y' });
    assert.equal((await a.claim(claimReq)).length, 1);
    const t = await b.takeShards(shards);
    assert.equal(t.reclaimed, 1);
    assert.ok([...t.previous.values()].every((o) => o === 'a:2'));
    assert.equal(
      await a.writeOutcomes([{ id: (await b.claim(claimReq))[0]!.id, kind: 'sent', at: Date.now(), attempts: 1, retryCount: 0 }]),
      0,
      "a's late outcome is fenced off",
    );
  });
});
