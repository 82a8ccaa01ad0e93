import assert from 'node:assert/strict';
import type { Knex } from 'knex';
import { OutboxRepository } from '../../src/outbox/repository';
import { shardOf } from '../../src/outbox/shard';
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

  it("the reaper frees only other processes' expired rows; a reload and claimLeft read the lease left on the database clock", async () => {
    const a = new OutboxRepository(tdb.db, 'a:9', 64);
    const b = new OutboxRepository(tdb.db, 'b:9', 64);
    await a.takeShards(shards);
    await tdb.db('telegram_notifications').insert([
      { telegram_id: 444, message_text: 'r1' },
      { telegram_id: 445, message_text: 'r2' },
    ]);
    const got = await a.claim(claimReq);
    assert.equal(got.length, 2);
    const [r1, r2] = got.map((r) => r.id) as [number, number];
    const left = await a.claimLeft([r1, r2]);
    assert.ok(left.get(r1)! > 25_000 && left.get(r1)! <= 30_000, `lease left ${left.get(r1)} ms of 30 s`);
    assert.equal((await b.claimLeft([r1])).size, 0, "not b's row");
    const reloaded = await a.loadClaimed(shards);
    assert.ok(reloaded.every((r) => r.leaseLeftMs! > 25_000 && r.leaseLeftMs! <= 30_000));
    // a stalled past its lease: its rows expired.
    await tdb.db.raw('UPDATE telegram_notifications SET claim_expires_at = NOW(3) - INTERVAL 1 SECOND WHERE id = ?', [r1]);
    assert.equal((await a.claimLeft([r1])).get(r1), 0, 'expired: nothing left');
    assert.equal(await a.reapExpired(), 0, 'a is alive: its next renewal keeps its own rows');
    assert.equal(await b.reapExpired(), 1, 'another process frees them');
    assert.deepEqual([...(await a.claimLeft([r1, r2])).keys()], [r2], "r1 is no longer a's");
  });

  it("a chat's barrier: no row is claimed past an earlier one that waits on a retry or that another process holds", async () => {
    const a = new OutboxRepository(tdb.db, 'a:4', 64);
    await a.takeShards(shards);
    const ins = async (chat: number, extra: Record<string, unknown> = {}): Promise<number> =>
      Number((await tdb.db('telegram_notifications').insert({ telegram_id: chat, message_text: `c${chat}`, ...extra }))[0]);
    // 701: its first row is held by a process that lost the shard a moment ago (its claim not given back yet).
    await ins(701, { status: 'claimed', claimed_by: 'gone:1', claim_expires_at: tdb.db.raw('NOW(3) + INTERVAL 30 SECOND') });
    await ins(701);
    // 702: its first row waits on a retry; 703: nothing in the way. Later rows of each are due.
    await ins(702, { next_attempt_at: tdb.db.raw('NOW(3) + INTERVAL 1 HOUR') });
    await ins(702);
    const free = [await ins(703), await ins(703)];
    const got = await a.claim(claimReq);
    assert.deepEqual(
      got.map((r) => r.id),
      free,
      'only the chat with nothing in its way',
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

  it("a claim held open by another process (its rows locked until commit) does not stop this one claiming its own shards' rows", async () => {
    // b's claim pauses inside its transaction, after its locking read, as a claim on a loaded machine does for
    // hundreds of ms. Before, that read walked every shard's rows in claim order and kept them locked: c's claim
    // then skipped the first rows of its own chats, every chat sat the claim out, and c claimed nothing (a process
    // given shards at a cluster's formation claimed 0 rows for 4-6 s while the first one kept claiming).
    const bShards = shards.slice(0, 32);
    const cShards = shards.slice(32);
    let holding!: () => void;
    const held = new Promise<void>((r) => (holding = r));
    let release!: () => void;
    const released = new Promise<void>((r) => (release = r));
    let armed = false; // only b's claim pauses, not its takeShards
    const pausing = (trx: Knex.Transaction): Knex.Transaction =>
      new Proxy(trx, {
        get(t, p) {
          if (p === 'raw')
            return async (sql: string, bindings: readonly Knex.RawBinding[]): Promise<unknown> => {
              const r: unknown = await t.raw(sql, bindings);
              if (armed && /FOR UPDATE/.test(sql)) {
                holding();
                await released;
              }
              return r;
            };
          const v = Reflect.get(t, p) as unknown;
          return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(t) : v;
        },
      });
    const bDb = new Proxy(tdb.db, {
      get(t, p) {
        if (p === 'transaction')
          return (fn: (trx: Knex.Transaction) => Promise<unknown>, opts?: Knex.TransactionConfig) => t.transaction((trx) => fn(pausing(trx)), opts);
        const v = Reflect.get(t, p) as unknown;
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(t) : v;
      },
    });
    const b = new OutboxRepository(bDb, 'b:3', 64);
    const c = new OutboxRepository(tdb.db, 'c:3', 64);
    await b.takeShards(bShards);
    await c.takeShards(cShards);
    // Chats of both processes, their rows interleaved by id as a broadcast queues them.
    const chats = Array.from({ length: 20 }, (_, i) => 5_000 + i);
    const cChats = chats.filter((id) => cShards.includes(shardOf(id, 64)));
    assert.ok(cChats.length > 0 && cChats.length < chats.length, 'chats in both halves');
    await tdb.db('telegram_notifications').insert(Array.from({ length: 200 }, (_, i) => ({ telegram_id: chats[i % chats.length]!, message_text: `i${i}` })));
    armed = true;
    const bClaim = b.claim({ ...claimReq, shards: bShards, limit: 1000 });
    await held;
    try {
      const got = await c.claim({ ...claimReq, shards: cShards, limit: 1000 });
      assert.equal(got.length, cChats.length * 10, "c claimed all its chats' rows while b's claim was open");
    } finally {
      release();
    }
    assert.equal((await bClaim).length, 200 - cChats.length * 10);
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
