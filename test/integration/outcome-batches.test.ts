import assert from 'node:assert/strict';
import { createTestDb, captureLogger, type TestDb } from '../helpers/services';
import { OutboxRepository } from '../../src/outbox/repository';
import { Metrics } from '../../src/metrics';
import { startActorSystem, stopActorSystem, dispatch, query, type ActorSystem } from '../../src/runtime/actor';
import { spawnOutcomeWriter, OutcomeQueue, type OutcomeWriterMsg } from '../../actors/pipeline/outcome-writer';
import type { PipelineDeps } from '../../actors/pipeline/deps';
import type { OutcomeEvent } from '../../src/nats/payloads';
import type { Outcome } from '../../src/outbox/types';

/** Issue 10 item 3 for outcome batches: one outcome MariaDB refuses never holds back the others. */
describe('outcome writer: a batch never dies for one outcome (real MariaDB)', function () {
  this.timeout(30_000);
  let tdb: TestDb;
  let system: ActorSystem;
  const owner = 'w1:test';

  before(async () => {
    tdb = await createTestDb('outcomes');
  });
  after(async () => {
    await tdb.drop();
  });
  afterEach(async () => {
    stopActorSystem(system);
    await tdb.db.raw('DROP TRIGGER IF EXISTS poison');
  });

  async function claimedRows(n: number): Promise<number[]> {
    const ids: number[] = [];
    for (let i = 0; i < n; i++) {
      const [id] = await tdb.db('telegram_notifications').insert({ telegram_id: 1000 + i, message_text: `m${i}`, status: 'claimed', claimed_by: owner });
      ids.push(Number(id));
    }
    return ids;
  }

  function writer(): {
    ref: ReturnType<typeof spawnOutcomeWriter>;
    events: OutcomeEvent[];
    metrics: Metrics;
    logs: ReturnType<typeof captureLogger>;
    queue: OutcomeQueue;
  } {
    const logs = captureLogger('debug');
    const metrics = new Metrics();
    system = startActorSystem('outcomes-test', logs.log);
    const events: OutcomeEvent[] = [];
    const deps = {
      settings: { outcomeFlushMs: 60_000, outcomeFlushMax: 100 },
      repo: new OutboxRepository(tdb.db, owner, 64),
      log: logs.log,
      metrics,
      publishOutcome: (e: OutcomeEvent) => events.push(e),
    } as unknown as PipelineDeps;
    const queue = new OutcomeQueue();
    return { ref: spawnOutcomeWriter(system, deps, queue), events, metrics, logs, queue };
  }

  const sent = (id: number, notes?: string): Outcome => ({ id, kind: 'sent', at: Date.now(), attempts: 1, retryCount: 0, ...(notes ? { notes } : {}) });
  const event = (id: number): OutcomeEvent => ({ id, chat_id: 1, status: 'sent', attempts: 1, latency_ms: 1 });

  it('writes the others, writes a refused outcome state-only, drops one refused even so, and logs ids and codes only', async () => {
    const ids = await claimedRows(5);
    const [a, b, c, d, e] = ids as [number, number, number, number, number];
    // Refuse c's notes (its state change alone passes) and any change of d to sent.
    await tdb.db.raw(`CREATE TRIGGER poison BEFORE UPDATE ON telegram_notifications FOR EACH ROW BEGIN
      IF NEW.id = ${c} AND NEW.notes IS NOT NULL THEN SIGNAL SQLSTATE '22001' SET MESSAGE_TEXT = 'poison notes'; END IF;
      IF NEW.id = ${d} AND NEW.status = 'sent' THEN SIGNAL SQLSTATE '22003' SET MESSAGE_TEXT = 'poison status'; END IF;
    END`);
    const w = writer();
    for (const id of ids) dispatch(w.ref, { type: 'outcome', outcome: sent(id, `note ${id} secret-detail`), event: event(id) });
    const r = await query<OutcomeWriterMsg, { written: number }>(w.ref, (replyTo) => ({ type: 'flush', replyTo }), 20_000);
    assert.equal(r.written, 5, 'every queued outcome was handled');
    assert.equal(w.queue.items.length, 0, 'nothing left blocking the queue');

    const rows = await tdb.db('telegram_notifications').whereIn('id', ids).orderBy('id').select<
      Array<{
        id: number | string;
        status: string;
        sent: number;
        notes: string | null;
        claimed_by: string | null;
      }>
    >('id', 'status', 'sent', 'notes', 'claimed_by');
    const byId = new Map(rows.map((x) => [Number(x.id), x]));
    for (const id of [a, b, e])
      assert.deepEqual({ ...byId.get(id)!, id: 0 }, { id: 0, status: 'sent', sent: 1, notes: `note ${id} secret-detail`, claimed_by: null });
    assert.deepEqual({ ...byId.get(c)!, id: 0 }, { id: 0, status: 'sent', sent: 1, notes: null, claimed_by: null }, 'c: state written without notes');
    assert.deepEqual(
      { ...byId.get(d)!, id: 0 },
      { id: 0, status: 'claimed', sent: 0, notes: null, claimed_by: owner },
      'd: dropped, still claimed (its lease will be reaped)',
    );

    assert.deepEqual(
      w.events.map((x) => x.id).sort((x, y) => x - y),
      [a, b, c, e].sort((x, y) => x - y),
      'events only for committed outcomes',
    );
    const dl = (await w.metrics.registry.getSingleMetric('outbox_outcomes_dead_lettered_total')!.get()).values
      .map((v) => `${v.labels.kind}/${v.labels.result}=${v.value}`)
      .sort();
    assert.deepEqual(dl, ['sent/dropped=1', 'sent/state_only=1']);
    const dropped = w.logs.lines().find((l) => String(l.msg).includes('dropped'))!;
    assert.equal(dropped.id, d);
    assert.equal(dropped.sql_state, '22003');
    assert.ok(!w.logs.text().includes('secret-detail'), 'no outcome text or SQL with values in the log');
    assert.ok(!/update `?telegram_notifications/i.test(w.logs.text()), 'no SQL in the log');
  });

  it('values MariaDB would refuse are made storable before the batch is written (no batch error at all)', async () => {
    const [x, y] = (await claimedRows(2)) as [number, number];
    const w = writer();
    const bad: Outcome = {
      id: x,
      kind: 'retry',
      attempts: -3,
      retryCount: Number.NaN,
      nextAttemptAt: Number.NaN,
      code: 'C'.repeat(100),
      reason: '😀'.repeat(3000),
    };
    dispatch(w.ref, { type: 'outcome', outcome: bad });
    dispatch(w.ref, { type: 'outcome', outcome: { ...sent(y), notes: '😀'.repeat(300) } } as OutcomeWriterMsg);
    const r = await query<OutcomeWriterMsg, { written: number }>(w.ref, (replyTo) => ({ type: 'flush', replyTo }), 20_000);
    assert.equal(r.written, 2);
    const rx = await tdb.db('telegram_notifications').where({ id: x }).first();
    assert.equal(rx.attempts, 0);
    assert.equal(rx.retry_count, 0);
    assert.equal(rx.error_code, 'C'.repeat(32));
    assert.ok(rx.next_attempt_at instanceof Date && !Number.isNaN(rx.next_attempt_at.getTime()));
    const ry = await tdb.db('telegram_notifications').where({ id: y }).first();
    assert.equal(ry.status, 'sent');
    assert.equal([...ry.notes].length, 255);
    const errors = await w.metrics.registry.getSingleMetric('outbox_outcome_write_errors_total')!.get();
    assert.equal(
      errors.values.reduce((s, v) => s + v.value, 0),
      0,
    );
  });
});
