import { strict as assert } from 'node:assert';
import { spawnOutcomeWriter, OutcomeQueue, type OutcomeWriterMsg } from '../../../../actors/pipeline/outcome-writer';
import type { OutcomeEvent } from '../../../../src/nats/payloads';
import type { Outcome } from '../../../../src/outbox/types';
import { dispatch, query, startActorSystem, stopActorSystem, type ActorRef, type ActorSystem } from '../../../../src/runtime/actor';
import { captureLogger, waitFor } from '../../../helpers/services';
import { deferred, type Deferred } from '../../../helpers/deferred';
import { fakePipelineDeps, type FakePipeline } from '../../../helpers/pipeline-fakes';

/** The outcome writer with a fake repository whose writes finish (or fail) when the test says so. */
describe('outcome-writer actor (fake repository)', () => {
  let system: ActorSystem;
  let fp: FakePipeline;
  let writes: Array<{ outcomes: Outcome[]; d: Deferred<number> }>;
  let events: OutcomeEvent[];
  let queue: OutcomeQueue;
  let writer: ActorRef<OutcomeWriterMsg>;

  beforeEach(() => {
    const { log } = captureLogger();
    system = startActorSystem('outcome-writer-test', log);
    writes = [];
    events = [];
    fp = fakePipelineDeps(
      log,
      { outcomeFlushMax: 3, outcomeFlushMs: 20 },
      {
        writeOutcomes: (outcomes: Outcome[]) => {
          const d = deferred<number>();
          writes.push({ outcomes, d });
          return d.promise;
        },
      },
    );
    fp.deps.publishOutcome = (e) => void events.push(e);
    queue = new OutcomeQueue();
    writer = spawnOutcomeWriter(system, fp.deps, queue);
  });
  afterEach(() => {
    fp.gate.stop();
    stopActorSystem(system);
  });

  const sent = (id: number): Extract<Outcome, { kind: 'sent' }> => ({ id, kind: 'sent', at: 1000 + id, attempts: 1, retryCount: 0 });
  const event = (id: number): OutcomeEvent => ({ id, chat_id: 10, status: 'sent', attempts: 1, latency_ms: 5 });
  const put = (id: number) => dispatch<OutcomeWriterMsg>(writer, { type: 'outcome', outcome: sent(id), event: event(id) });
  const ids = (os: Outcome[]) => os.map((o) => o.id);

  it('writes a full batch at once and publishes its events only after the commit', async () => {
    put(1);
    put(2);
    put(3);
    await waitFor(() => writes.length === 1, 1000, 1, 'a batch write');
    assert.deepEqual(ids(writes[0]!.outcomes), [1, 2, 3]);
    assert.equal(events.length, 0, 'no event before the batch committed');
    writes[0]!.d.resolve(3);
    await waitFor(() => events.length === 3, 1000, 1, 'events after the commit');
    assert.deepEqual(
      events.map((e) => e.id),
      [1, 2, 3],
    );
    assert.equal(queue.written, 3);
    assert.equal(queue.items.length, 0);
  });

  it('a part batch is written after outcomeFlushMs', async () => {
    const t = Date.now();
    put(1);
    await waitFor(() => writes.length === 1, 1000, 1, 'the timed write');
    assert.ok(Date.now() - t >= 15, 'not before the flush interval');
    assert.deepEqual(ids(writes[0]!.outcomes), [1]);
    writes[0]!.d.resolve(1);
    await waitFor(() => queue.written === 1, 1000, 1, 'written');
  });

  it('a failed write keeps the batch and writes it again; nothing is dropped', async () => {
    put(1);
    put(2);
    put(3);
    await waitFor(() => writes.length === 1, 1000, 1, 'the first write');
    writes[0]!.d.reject(Object.assign(new Error('Connection lost'), { code: 'PROTOCOL_CONNECTION_LOST' }));
    // Nothing new arrives: the writer's own retry timer writes the batch again.
    await waitFor(() => writes.length === 2, 2000, 2, 'the write again');
    assert.deepEqual(ids(writes[1]!.outcomes), [1, 2, 3], 'the same batch, in order');
    assert.equal(events.length, 0);
    put(4);
    writes[1]!.d.resolve(3);
    await waitFor(() => writes.length === 3, 2000, 2, 'the rest');
    assert.deepEqual(ids(writes[2]!.outcomes), [4]);
    writes[2]!.d.resolve(1);
    await waitFor(() => queue.written === 4, 1000, 1, 'all written');
    assert.deepEqual(
      events.map((e) => e.id),
      [1, 2, 3, 4],
    );
  });

  it('a batch refused for its data is written one by one; the refused outcome goes in without notes, then is dropped only if that fails too', async () => {
    dispatch<OutcomeWriterMsg>(writer, { type: 'outcome', outcome: sent(1), event: event(1) });
    dispatch<OutcomeWriterMsg>(writer, { type: 'outcome', outcome: { ...sent(2), notes: 'x'.repeat(10_000) }, event: event(2) });
    dispatch<OutcomeWriterMsg>(writer, { type: 'outcome', outcome: { id: 3, kind: 'progress', progress: { done: 1, total: 2 }, notes: 'bad' } });
    const dataError = () => Object.assign(new Error('Data too long'), { sqlState: '22001', errno: 1406 });
    await waitFor(() => writes.length === 1, 1000, 1, 'the batch');
    writes[0]!.d.reject(dataError());
    await waitFor(() => writes.length === 2, 1000, 1, 'outcome 1 alone');
    assert.deepEqual(ids(writes[1]!.outcomes), [1]);
    writes[1]!.d.resolve(1);
    await waitFor(() => writes.length === 3, 1000, 1, 'outcome 2 alone');
    writes[2]!.d.reject(dataError());
    await waitFor(() => writes.length === 4, 1000, 1, 'outcome 2 state only');
    assert.deepEqual(writes[3]!.outcomes, [{ id: 2, kind: 'sent', at: 1002, attempts: 1, retryCount: 0 }], 'its state change, without the notes');
    writes[3]!.d.resolve(1);
    await waitFor(() => writes.length === 5, 1000, 1, 'outcome 3 alone');
    writes[4]!.d.reject(dataError());
    // A progress outcome has no state-only form: dropped (logged, counted), the queue moves on.
    await waitFor(() => queue.items.length === 0, 1000, 1, 'queue empty');
    assert.equal(writes.length, 5);
    assert.deepEqual(
      events.map((e) => e.id),
      [1, 2],
    );
    put(4);
    await waitFor(() => writes.length === 6, 1000, 1, 'the next batch is not blocked');
    writes[5]!.d.resolve(1);
  });

  it('flush answers once everything queued is written; fewer rows than outcomes counts lost ownership', async () => {
    put(1);
    put(2);
    const answer = query<OutcomeWriterMsg, { written: number }>(writer, (replyTo) => ({ type: 'flush', replyTo }), 1500);
    await waitFor(() => writes.length === 1, 1000, 1, 'the flush write');
    assert.deepEqual(ids(writes[0]!.outcomes), [1, 2]);
    // Another process took row 2 over after our lease lapsed: the fenced UPDATE matched only row 1.
    writes[0]!.d.resolve(1);
    assert.deepEqual(await answer, { written: 2 });
    assert.equal(queue.lostOwnership, 1);
  });
});
