import assert from 'node:assert/strict';
import { migrations } from '../../migrations';
import { migrateLatest } from '../../src/db/migrate';
import { Notification, Recipient } from '../../src/db/models';
import { verifyShardCount } from '../../src/db/schema-check';
import { AppError } from '../../src/errors';
import { shardOf } from '../../src/outbox/shard';
import { createTestDb, type TestDb } from '../helpers/services';

interface Row {
  id: number;
  telegram_id: number;
  message_text: string;
  status: string;
  sent: number;
  sent_at: Date | null;
  attempts: number;
  retry_count: number;
  parse_mode: string | null;
  priority: number;
  next_attempt_at: Date | null;
  created_at: Date;
  shard: number;
  idempotency_key: string | null;
  claimed_by: string | null;
  claim_expires_at: Date | null;
  error_message: string | null;
}

async function row(t: TestDb, id: number): Promise<Row> {
  const r = (await t.db('telegram_notifications').where({ id }).first()) as Row | undefined;
  assert.ok(r, `row ${id} not found`);
  return r;
}

async function expectCode(p: Promise<unknown>, code: string): Promise<Error & { code?: string }> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof Error);
    assert.equal((e as { code?: string }).code, code, e.message);
    return e;
  }
  assert.fail(`expected ${code}`);
}

describe('migrations', function () {
  this.timeout(60_000);

  describe('on an empty database', () => {
    let t: TestDb;

    before(async () => {
      t = await createTestDb('mig', { migrate: false });
    });

    after(async () => {
      await t?.drop();
    });

    it('applies every migration, in order', async () => {
      const applied = await migrateLatest(t.db);
      assert.deepEqual(
        applied,
        migrations.map((m) => m.name),
      );
      for (const table of ['telegram_notifications', 'telegram_recipients']) {
        assert.equal(await t.db.schema.hasTable(table), true, `${table} missing`);
      }
      const done = (await t.db('knex_migrations').orderBy('id').pluck('name')) as string[];
      assert.deepEqual(
        done,
        migrations.map((m) => m.name),
      );
    });

    it('a second run applies nothing', async () => {
      assert.deepEqual(await migrateLatest(t.db), []);
    });

    it('keeps the legacy columns', async () => {
      for (const c of ['id', 'telegram_id', 'message_text', 'sent', 'sent_at', 'created_at', 'retry_count', 'error_message']) {
        assert.equal(await t.db.schema.hasColumn('telegram_notifications', c), true, `legacy column ${c} missing`);
      }
    });

    it('a legacy insert (telegram_id, message_text only) gets pending, defaults and its shard', async () => {
      const before = new Date(Date.now() - 2_000);
      const [id] = (await t.db.raw('INSERT INTO telegram_notifications (telegram_id, message_text) VALUES (?, ?)', [123456789, 'hello'])) as [
        { insertId: number | string },
      ];
      const r = await row(t, Number(id.insertId));
      assert.equal(r.status, 'pending');
      assert.equal(r.sent, 0);
      assert.equal(r.sent_at, null);
      assert.equal(r.attempts, 0);
      assert.equal(r.retry_count, 0);
      assert.equal(r.parse_mode, 'HTML');
      assert.equal(r.priority, 0);
      assert.equal(r.idempotency_key, null);
      assert.equal(r.claimed_by, null);
      assert.equal(r.claim_expires_at, null);
      assert.equal(r.error_message, null);
      assert.ok(r.next_attempt_at instanceof Date, 'next_attempt_at not set');
      assert.ok(
        r.next_attempt_at >= before && r.next_attempt_at.getTime() <= Date.now() + 2_000,
        `next_attempt_at ${r.next_attempt_at.toISOString()} is not now`,
      );
      assert.ok(r.created_at instanceof Date);
      assert.equal(r.shard, shardOf(123456789, 64));
    });

    it('a legacy insert with created_at keeps it and is due', async () => {
      await t.db.raw("INSERT INTO telegram_notifications (telegram_id, message_text, created_at) VALUES (?, ?, '2020-01-02 03:04:05')", [55, 'old']);
      const r = (await t.db('telegram_notifications').where({ telegram_id: 55 }).first()) as Row;
      assert.equal(r.created_at.toISOString(), '2020-01-02T03:04:05.000Z');
      assert.equal(r.status, 'pending');
      assert.ok(r.next_attempt_at !== null && r.next_attempt_at.getTime() <= Date.now() + 1_000);
      assert.equal(r.shard, shardOf(55, 64));
    });

    it('shard equals shardOf(chatId, 64) for negative group ids and many ids', async () => {
      const ids = [-1001234567890, -4242, 1, 7, 2 ** 40 + 3, 987654321, -1];
      for (let i = 0; i < 50; i++) ids.push(1_000_000 + i * 7919);
      await t.db('telegram_notifications').insert(ids.map((id) => ({ telegram_id: id, message_text: `shard ${id}` })));
      const rows = await t
        .db('telegram_notifications')
        .whereIn('telegram_id', ids)
        .select<Array<{ telegram_id: number | string; shard: number }>>('telegram_id', 'shard');
      assert.equal(rows.length, ids.length);
      for (const r of rows) assert.equal(r.shard, shardOf(Number(r.telegram_id), 64), `chat ${r.telegram_id}`);
      const shards = new Set(rows.map((r) => r.shard));
      assert.ok(shards.size > 10, 'shards should differ across ids');
    });

    it('shard cannot be written', async () => {
      await assert.rejects(t.db('telegram_notifications').insert({ telegram_id: 1, message_text: 'x', shard: 3 }));
    });

    it('verifyShardCount passes for 64 and refuses 32 with SCHEMA_MISMATCH', async () => {
      await verifyShardCount(t.db, 64);
      const e = await expectCode(verifyShardCount(t.db, 32), 'SCHEMA_MISMATCH');
      assert.ok(e instanceof AppError);
      assert.match(e.message, /SHARD_COUNT=32/);
      assert.deepEqual(e.details, { shardCount: 32, modulus: 64 });
    });

    it('the idempotency key allows many NULLs and rejects duplicates', async () => {
      await t.db('telegram_notifications').insert([
        { telegram_id: 9001, message_text: 'a' },
        { telegram_id: 9001, message_text: 'b' },
        { telegram_id: 9001, message_text: 'c', idempotency_key: null },
      ]);
      await t.db('telegram_notifications').insert({ telegram_id: 9001, message_text: 'd', idempotency_key: 'order-1:new' });
      await expectCode(t.db('telegram_notifications').insert({ telegram_id: 9002, message_text: 'e', idempotency_key: 'order-1:new' }), 'ER_DUP_ENTRY');
      const n = (await t.db('telegram_notifications').where({ telegram_id: 9001 }).count({ n: '*' }).first()) as { n: number | string };
      assert.equal(Number(n.n), 4);
    });

    it('the claim index exists on (status, shard, …)', async () => {
      const [idx] = (await t.db.raw("SHOW INDEX FROM telegram_notifications WHERE Key_name = 'ix_tn_claim'")) as [
        Array<{ Column_name: string; Seq_in_index: number }>,
      ];
      const cols = idx.sort((a, b) => a.Seq_in_index - b.Seq_in_index).map((r) => r.Column_name);
      assert.deepEqual(cols.slice(0, 2), ['status', 'shard']);
    });

    it('objection models read rows', async () => {
      const [id] = await t.db('telegram_notifications').insert({ telegram_id: -777, message_text: 'model', priority: 5, kind: 'order' });
      const n = await Notification.query(t.db).findById(Number(id));
      assert.ok(n instanceof Notification);
      assert.equal(n.telegram_id, -777);
      assert.equal(n.message_text, 'model');
      assert.equal(n.status, 'pending');
      assert.equal(n.priority, 5);
      assert.equal(n.kind, 'order');
      assert.equal(n.shard, shardOf(-777, 64));

      await t.db('telegram_recipients').insert({
        chat_id: 31337,
        status: 'blocked',
        reason: 'Forbidden: bot was blocked by the user',
        error_code: 'TG_PERMANENT',
        unreachable_since: new Date(),
      });
      const r = await Recipient.query(t.db).findById(31337);
      assert.ok(r instanceof Recipient);
      assert.equal(r.chat_id, 31337);
      assert.equal(r.status, 'blocked');
      assert.match(String(r.reason), /blocked/);
      assert.ok(r.unreachable_since instanceof Date);
      const unreachable = await Recipient.query(t.db).where('status', 'blocked');
      assert.equal(unreachable.length, 1);
    });
  });

  describe('upgrading a legacy table in place', () => {
    let t: TestDb;

    before(async () => {
      t = await createTestDb('migleg', { migrate: false });
    });

    after(async () => {
      await t?.drop();
    });

    it('keeps its rows: sent ones stay sent, the rest become pending, all get a shard', async () => {
      // The table as the old Python loop created it.
      await t.db.raw(`
        CREATE TABLE telegram_notifications (
          id INT NOT NULL AUTO_INCREMENT PRIMARY KEY,
          telegram_id BIGINT NOT NULL,
          message_text TEXT NOT NULL,
          sent TINYINT(1) NOT NULL DEFAULT 0,
          sent_at DATETIME NULL,
          created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
          retry_count INT NOT NULL DEFAULT 0,
          error_message TEXT NULL
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4`);
      await t.db.raw(
        `INSERT INTO telegram_notifications (telegram_id, message_text, sent, sent_at, created_at, retry_count)
         VALUES (111, 'delivered long ago', 1, '2023-05-01 10:00:01', '2023-05-01 10:00:00', 0),
                (-1002222, 'still waiting', 0, NULL, '2023-05-02 11:00:00', 2)`,
      );

      const applied = await migrateLatest(t.db);
      assert.deepEqual(
        applied,
        migrations.map((m) => m.name),
      );

      const rows = (await t.db('telegram_notifications').orderBy('id')) as Row[];
      assert.equal(rows.length, 2);
      const [sent, unsent] = rows as [Row, Row];
      assert.equal(sent.status, 'sent');
      assert.equal(sent.sent, 1);
      assert.equal(sent.sent_at?.toISOString(), '2023-05-01T10:00:01.000Z');
      assert.equal(sent.message_text, 'delivered long ago');
      assert.equal(sent.shard, shardOf(111, 64));

      assert.equal(unsent.status, 'pending');
      assert.equal(unsent.sent, 0);
      assert.equal(unsent.retry_count, 2);
      assert.equal(unsent.created_at.toISOString(), '2023-05-02T11:00:00.000Z');
      assert.ok(unsent.next_attempt_at instanceof Date, 'next_attempt_at not set');
      assert.equal(unsent.shard, shardOf(-1002222, 64));

      // Producers keep inserting the legacy way after the upgrade.
      await t.db.raw('INSERT INTO telegram_notifications (telegram_id, message_text) VALUES (?, ?)', [333, 'after upgrade']);
      const fresh = (await t.db('telegram_notifications').where({ telegram_id: 333 }).first()) as Row;
      assert.equal(fresh.status, 'pending');
      assert.equal(fresh.shard, shardOf(333, 64));

      await verifyShardCount(t.db, 64);
      assert.deepEqual(await migrateLatest(t.db), []);
    });
  });
});
