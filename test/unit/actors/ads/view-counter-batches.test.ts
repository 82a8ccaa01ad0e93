import { strict as assert } from 'node:assert';
import type { JsMsg } from 'nats';
import { spawnViewCounter, type DeadLetter, type FlushResult, type ViewCounterMsg } from '../../../../actors/ads/view-counter';
import { Metrics } from '../../../../src/metrics';
import { dispatch, query, startActorSystem, stopActorSystem, type ActorRef, type ActorSystem } from '../../../../src/runtime/actor';
import { captureLogger, waitFor } from '../../../helpers/services';
import { deferred, type Deferred } from '../../../helpers/deferred';

/** A JetStream message as the counter sees it, recording its ack or nak. */
function fakeMsg(seq: number, adId: number, visitor: string): JsMsg & { acked: boolean; naked: boolean } {
  const m = {
    subject: `ads.views.${adId}`,
    seq,
    data: new TextEncoder().encode(JSON.stringify({ ad_id: adId, visitor, ts: 1_700_000_000_000 })),
    acked: false,
    naked: false,
    ack() {
      m.acked = true;
    },
    nak() {
      m.naked = true;
    },
  };
  return m as unknown as JsMsg & { acked: boolean; naked: boolean };
}

const hex = (n: number): string => n.toString(16).padStart(32, '0');

/** The view counter's batching with a fake repository whose writes finish when the test says so. */
describe('view-counter actor: batches written outside the mailbox (fake repository)', () => {
  let system: ActorSystem;
  let writes: Array<{ views: number; dead: readonly DeadLetter[]; d: Deferred<{ counted: number; dead: DeadLetter[] }> }>;
  let counter: ActorRef<ViewCounterMsg>;

  beforeEach(() => {
    const { log } = captureLogger();
    system = startActorSystem('views-test', log);
    writes = [];
    counter = spawnViewCounter(
      system,
      {
        repo: {
          writeViews: (views, dead) => {
            const d = deferred<{ counted: number; dead: DeadLetter[] }>();
            writes.push({ views: views.length, dead: dead ?? [], d });
            return d.promise;
          },
        },
        log,
        metrics: new Metrics(),
      },
      // Batches of 2 views; the timer far away: the test decides when batches close.
      { flushMs: 3_600_000, flushMax: 2, dedupWindowMs: 86_400_000 },
    );
  });
  afterEach(() => stopActorSystem(system));

  const pending = (adId: number): Promise<number> => query<ViewCounterMsg, number>(counter, (replyTo) => ({ type: 'pending', adId, replyTo }), 1000);

  it('keeps taking deliveries while a batch is written; batches are written one at a time, in order; acks only after the commit', async () => {
    const msgs = [1, 2, 3, 4, 5].map((i) => fakeMsg(i, 7, hex(i)));
    for (const m of msgs.slice(0, 2)) dispatch<ViewCounterMsg>(counter, { type: 'delivery', msg: m });
    await waitFor(() => writes.length === 1, 1000, 2, 'first batch written');
    // The write hangs; more deliveries arrive and are answered for.
    for (const m of msgs.slice(2)) dispatch<ViewCounterMsg>(counter, { type: 'delivery', msg: m });
    assert.equal(await pending(7), 5);
    assert.equal(writes.length, 1, 'the second batch waits for the first');
    assert.equal(msgs[0]!.acked, false, 'no ack before the commit');
    writes[0]!.d.resolve({ counted: 2, dead: [] });
    await waitFor(() => writes.length === 2, 1000, 2, 'second batch written after the first');
    assert.ok(msgs[0]!.acked && msgs[1]!.acked);
    assert.equal(msgs[2]!.acked, false);
    writes[1]!.d.resolve({ counted: 2, dead: [] });
    await waitFor(() => msgs[3]!.acked, 1000, 2, 'second batch acked');
    assert.equal(await pending(7), 1, 'the fifth view is still in the filling batch');
  });

  it('flush answers once everything received before it is written, with the sums; a failed write naks for redelivery', async () => {
    const a = fakeMsg(1, 3, hex(1));
    const b = fakeMsg(2, 3, hex(2));
    const c = fakeMsg(3, 3, hex(3));
    dispatch<ViewCounterMsg>(counter, { type: 'delivery', msg: a });
    dispatch<ViewCounterMsg>(counter, { type: 'delivery', msg: b });
    dispatch<ViewCounterMsg>(counter, { type: 'delivery', msg: c });
    const flushed = query<ViewCounterMsg, FlushResult>(counter, (replyTo) => ({ type: 'flush', replyTo }), 2000);
    await waitFor(() => writes.length === 1, 1000, 2, 'first batch');
    writes[0]!.d.reject(Object.assign(new Error('Deadlock found'), { errno: 1213 }));
    await waitFor(() => writes.length === 2, 1000, 2, 'the flushed remainder');
    writes[1]!.d.resolve({ counted: 1, dead: [] });
    const r = await flushed;
    assert.deepEqual(r, { messages: 3, distinct: 3, counted: 1, deadLettered: 0 });
    assert.ok(a.naked && b.naked && !a.acked, 'the failed batch goes back to JetStream');
    assert.ok(c.acked);
    assert.equal(await pending(3), 0);
  });

  it('a view refused by its subject is dead-lettered with its batch, the good ones counted', async () => {
    const good = fakeMsg(1, 9, hex(1));
    const wrongAd = { ...fakeMsg(2, 9, hex(2)), subject: 'ads.views.10' } as unknown as JsMsg;
    dispatch<ViewCounterMsg>(counter, { type: 'delivery', msg: good });
    dispatch<ViewCounterMsg>(counter, { type: 'delivery', msg: wrongAd });
    await waitFor(() => writes.length === 1, 1000, 2, 'the batch');
    assert.equal(writes[0]!.views, 1, 'only the good view is written as a view');
    assert.deepEqual(
      writes[0]!.dead.map((d) => [d.reason, d.seq]),
      [['SUBJECT_MISMATCH', 2]],
      'the other goes to the dead letters, in the same transaction',
    );
    writes[0]!.d.resolve({ counted: 1, dead: [] });
    await waitFor(() => good.acked, 1000, 2, 'acked');
  });
});
