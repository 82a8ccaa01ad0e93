import { strict as assert } from 'node:assert';
import type { JsMsg } from 'nats';
import { spawnViewCounter, type DeadLetter, type FlushResult, type ViewCounterMsg } from '../../../../actors/ads/view-counter';
import { Metrics } from '../../../../src/metrics';
import { dispatch, query, startActorSystem, stopActorSystem, type ActorRef, type ActorSystem } from '../../../../src/runtime/actor';
import { captureLogger, waitFor } from '../../../helpers/services';
import { deferred, type Deferred } from '../../../helpers/deferred';

/**
 * The view counter with fake JetStream messages and a fake repository (complements
 * view-counter-batches.test.ts): the flush timer, what one batch carries to the
 * repository, and a restart while a batch is being written.
 */
interface FakeMsg {
  subject: string;
  seq: number;
  data: Uint8Array;
  acked: number;
  naks: number[];
  ack(): void;
  nak(ms?: number): void;
}

describe('view-counter actor (fake messages and repository): timer, batch contents, restart', () => {
  let system: ActorSystem;
  let writes: Array<{
    views: ReadonlyArray<{ adId: number; visitor: string }>;
    dead: readonly DeadLetter[];
    d: Deferred<{ counted: number; dead: DeadLetter[] }>;
  }>;
  let counter: ActorRef<ViewCounterMsg>;
  let seq: number;

  beforeEach(() => {
    const { log } = captureLogger();
    system = startActorSystem('view-counter-test', log);
    writes = [];
    seq = 0;
    counter = spawnViewCounter(
      system,
      {
        repo: {
          writeViews: (views, dead) => {
            const d = deferred<{ counted: number; dead: DeadLetter[] }>();
            writes.push({ views, dead: dead ?? [], d });
            return d.promise;
          },
        },
        log,
        metrics: new Metrics(),
      },
      { flushMs: 30, flushMax: 3, dedupWindowMs: 60_000, nakDelayMs: 250 },
    );
  });
  afterEach(() => stopActorSystem(system));

  const msg = (subject: string, body: unknown): FakeMsg => {
    const m: FakeMsg = {
      subject,
      seq: ++seq,
      data: Buffer.from(typeof body === 'string' ? body : JSON.stringify(body)),
      acked: 0,
      naks: [],
      ack: () => {
        m.acked++;
      },
      nak: (ms?: number) => void m.naks.push(ms ?? -1),
    };
    return m;
  };
  const visitor = (n: number) => n.toString(16).padStart(32, '0');
  const view = (adId: number, v: number, ts = 1_000_000) => msg(`ads.views.${adId}`, { ad_id: adId, visitor: visitor(v), ts });
  const deliver = (...ms: FakeMsg[]) => ms.forEach((m) => dispatch<ViewCounterMsg>(counter, { type: 'delivery', msg: m as unknown as JsMsg }));

  it('a part batch is written flushMs after its first view', async () => {
    const t = Date.now();
    const m = view(1, 1);
    deliver(m);
    await waitFor(() => writes.length === 1, 1000, 1, 'the timed write');
    assert.ok(Date.now() - t >= 25, `written ${Date.now() - t} ms after the view, flushMs 30`);
    writes[0]!.d.resolve({ counted: 1, dead: [] });
    await waitFor(() => m.acked === 1, 1000, 1, 'acked');
  });

  it('one batch carries its distinct views and its dead letters to one write; a repeat is one view', async () => {
    const a = view(5, 1);
    const repeat = view(5, 1, 1_000_500); // same ad, visitor and dedup window
    const badJson = msg('ads.views.5', '{not json');
    const batch = msg('ads.views.batch', {
      views: [
        { ad_id: 6, visitor: visitor(2), ts: 2 },
        { ad_id: 6, visitor: 'nothex', ts: 3 },
      ],
    });
    // 1 + 1 + 2 views reach flushMax (3): one batch.
    deliver(a, repeat, batch);
    await waitFor(() => writes.length === 1, 1000, 1, 'the batch');
    assert.deepEqual(
      writes[0]!.views.map((v) => [v.adId, v.visitor]),
      [
        [5, visitor(1)],
        [6, visitor(2)],
      ],
    );
    assert.deepEqual(
      writes[0]!.dead.map((d) => [d.reason, d.seq]),
      [['BAD_PAYLOAD', batch.seq]],
      'the bad element of the batch message, written with the good one',
    );
    writes[0]!.d.resolve({ counted: 2, dead: [...writes[0]!.dead] });
    await waitFor(() => batch.acked === 1, 1000, 1, 'the batch acked');
    // An unreadable message alone: a write with no view and its dead letter.
    deliver(badJson);
    const flushed = query<ViewCounterMsg, FlushResult>(counter, (replyTo) => ({ type: 'flush', replyTo }), 1000);
    await waitFor(() => writes.length === 2, 1000, 1, 'the second batch');
    assert.deepEqual(writes[1]!.views, []);
    assert.deepEqual(
      writes[1]!.dead.map((d) => [d.reason, d.seq]),
      [['BAD_JSON', badJson.seq]],
    );
    writes[1]!.d.resolve({ counted: 0, dead: [...writes[1]!.dead] });
    assert.deepEqual(await flushed, { messages: 1, distinct: 0, counted: 0, deadLettered: 1 });
    assert.ok([a, repeat, badJson, batch].every((m) => m.acked === 1));
  });

  it('after a restart, the answer of a write started before it never acks a batch of the new incarnation', async () => {
    const old = [view(1, 1), view(1, 2), view(1, 3)];
    deliver(...old);
    await waitFor(() => writes.length === 1, 1000, 1, 'the first batch being written');
    // A delivery the handler cannot read crashes it: the actor restarts (state from init).
    deliver({ ...view(1, 4), subject: undefined } as unknown as FakeMsg);
    const fresh = [view(2, 1), view(2, 2), view(2, 3)];
    deliver(...fresh);
    await waitFor(() => writes.length === 2, 2000, 2, 'a batch of the restarted counter being written');
    // The write from before the restart commits now; its answer reaches the mailbox before the query below.
    writes[0]!.d.resolve({ counted: 3, dead: [] });
    await new Promise((r) => setImmediate(r));
    await query<ViewCounterMsg, number>(counter, (replyTo) => ({ type: 'pending', adId: 2, replyTo }), 1000);
    assert.ok(
      fresh.every((m) => m.acked === 0),
      'the new batch is acked only after its own commit',
    );
    writes[1]!.d.reject(Object.assign(new Error('Deadlock found'), { errno: 1213 }));
    await waitFor(() => fresh.every((m) => m.naks.length === 1), 1000, 2, 'the new batch nak-ed');
    assert.ok(
      fresh.every((m) => m.acked === 0),
      'a failed write is never acked',
    );
  });
});
