/**
 * View counter: batches view events from the JetStream consumer and flushes them to the
 * database as ONE multi-row `INSERT IGNORE … RETURNING ad_id` of unique views plus ONE
 * `UPDATE advertisements … CASE` of increments, in one transaction. The increments are
 * computed from the rows the INSERT actually inserted, so a view already counted (a
 * repeat inside the dedup window, a redelivery after a crash, a copy handled by another
 * counter process) adds nothing. JetStream messages are acked only after the commit;
 * until then a crash means redelivery, never loss.
 */
import type { JsMsg } from 'nats';
import type { Knex } from '../../src/db/knex';
import type { Logger } from '../../src/log';
import type { Metrics } from '../../src/metrics';
import { assertNever, dispatch, reply, sleep, spawn, Supervision, type ActorRef, type Parent, type ReplyTo } from '../../src/runtime/actor';
import { decoder } from '../../src/nats/codec';
import { ViewBatch, ViewEvent } from '../../src/nats/ads-payloads';
import { describeError, isAppError } from '../../src/errors';
import { viewMsgId, windowOf } from '../../src/ads/views-stream';

export interface FlushResult {
  /** JetStream messages acked by this flush. */
  messages: number;
  /** Distinct (ad, visitor, window) keys written. */
  distinct: number;
  /** Views that were new and incremented `views_count`. */
  counted: number;
}

export type ViewCounterMsg =
  /** One delivery from the consumer: a ViewEvent, or a ViewBatch on `….views.batch`. */
  | { type: 'delivery'; msg: JsMsg }
  /** The flush timer of batch `batch` fired. */
  | { type: 'flush-due'; batch: number }
  /** Flush now (shutdown, tests); answers after the acks were sent. */
  | { type: 'flush'; replyTo: ReplyTo<FlushResult> }
  /** Distinct views of `adId` received but not yet flushed. */
  | { type: 'pending'; adId: number; replyTo: ReplyTo<number> };

interface PendingView {
  adId: number;
  visitor: string;
  window: number;
}

export interface ViewCounterState {
  /** Identifies the current batch so a stale timer does not flush the next one early. */
  batchId: number;
  views: Map<string, PendingView>;
  perAd: Map<number, number>;
  msgs: JsMsg[];
  /** Views in `msgs` (a batch message holds many). */
  viewCount: number;
  timer: NodeJS.Timeout | undefined;
}

export interface ViewCounterDeps {
  db: Knex;
  log: Logger;
  metrics: Metrics;
}

export interface ViewCounterOptions {
  /** Flush at the latest this long after the first pending view (ms). */
  flushMs: number;
  /** Flush as soon as this many views (or deliveries) are pending. */
  flushMax: number;
  /** Dedup window length (ms). */
  dedupWindowMs: number;
  /** Redelivery delay after a failed flush (ms). Default 1000. */
  nakDelayMs?: number;
  name?: string;
}

const decodeView = decoder(ViewEvent, { maxBytes: 4_096 });
const decodeBatch = decoder(ViewBatch, { maxBytes: 256 * 1_024 });
let batchSeq = 0;
const MAX_TX_ATTEMPTS = 5;

export function spawnViewCounter(parent: Parent, deps: ViewCounterDeps, options: ViewCounterOptions): ActorRef<ViewCounterMsg> {
  const m = deps.metrics;
  const received = m.counter('ads_view_deliveries_total', 'View events delivered by JetStream to this counter');
  const rejected = m.counter<'code'>('ads_view_events_rejected_total', 'Malformed view events terminated without counting', ['code']);
  const counted = m.counter('ads_views_counted_total', 'New unique views added to views_count');
  const flushes = m.counter<'outcome'>('ads_view_flushes_total', 'View flushes by outcome', ['outcome']);
  const flushSeconds = m.histogram('ads_view_flush_seconds', 'Duration of one view flush transaction', [], [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5]);
  const pendingGauge = m.gauge('ads_view_pending', 'Deliveries received and not yet flushed');

  const fresh = (): ViewCounterState => ({ batchId: ++batchSeq, views: new Map(), perAd: new Map(), msgs: [], viewCount: 0, timer: undefined });

  async function flush(state: ViewCounterState, log: Logger): Promise<FlushResult> {
    if (state.timer) clearTimeout(state.timer);
    const msgs = state.msgs;
    const views = [...state.views.values()];
    if (msgs.length === 0) return { messages: 0, distinct: 0, counted: 0 };
    const started = process.hrtime.bigint();
    let newViews = 0;
    try {
      newViews = await writeViews(deps.db, views);
      for (const msg of msgs) msg.ack();
      counted.inc(newViews);
      flushes.inc({ outcome: 'ok' });
      log.debug({ messages: msgs.length, distinct: views.length, counted: newViews }, 'views flushed');
    } catch (e) {
      // Nothing committed: let JetStream redeliver (to us or another counter).
      for (const msg of msgs) msg.nak(options.nakDelayMs ?? 1_000);
      flushes.inc({ outcome: 'failed' });
      log.error({ err: describeError(e), messages: msgs.length }, 'view flush failed; messages nak-ed for redelivery');
    } finally {
      flushSeconds.observe(Number(process.hrtime.bigint() - started) / 1e9);
      pendingGauge.dec(msgs.length);
    }
    return { messages: msgs.length, distinct: views.length, counted: newViews };
  }

  return spawn<ViewCounterState, ViewCounterMsg>(parent, {
    name: options.name ?? 'view-counter',
    supervision: Supervision.restartWithBackoff({ minBackoffMs: 200, maxBackoffMs: 10_000 }),
    init: fresh,
    async receive(state, msg, ctx) {
      switch (msg.type) {
        case 'delivery': {
          received.inc();
          let evs: ViewEvent[];
          try {
            evs = msg.msg.subject.endsWith('.batch') ? decodeBatch(msg.msg.data).views : [decodeView(msg.msg.data)];
          } catch (e) {
            const code = isAppError(e) ? e.code : 'INTERNAL';
            rejected.inc({ code });
            ctx.log.warn({ code, err: describeError(e), subject: msg.msg.subject, seq: msg.msg.seq }, 'malformed view event terminated');
            msg.msg.term(); // no reason: nats-server 2.9 ignores term('reason')
            return state;
          }
          for (const ev of evs) {
            const v: PendingView = { adId: ev.ad_id, visitor: ev.visitor, window: windowOf(ev.ts, options.dedupWindowMs) };
            const key = viewMsgId(v.adId, v.visitor, v.window);
            if (!state.views.has(key)) {
              state.views.set(key, v);
              state.perAd.set(v.adId, (state.perAd.get(v.adId) ?? 0) + 1);
            }
          }
          state.msgs.push(msg.msg);
          state.viewCount += evs.length;
          pendingGauge.inc();
          if (state.viewCount >= options.flushMax) {
            await flush(state, ctx.log);
            return fresh();
          }
          if (!state.timer) {
            const id = state.batchId;
            const self = ctx.self;
            state.timer = setTimeout(() => dispatch(self, { type: 'flush-due', batch: id }), options.flushMs);
          }
          return state;
        }
        case 'flush-due': {
          if (msg.batch !== state.batchId) return state;
          await flush(state, ctx.log);
          return fresh();
        }
        case 'flush': {
          const r = await flush(state, ctx.log);
          reply(msg.replyTo, r);
          return fresh();
        }
        case 'pending':
          reply(msg.replyTo, state.perAd.get(msg.adId) ?? 0);
          return state;
        default:
          return assertNever(msg);
      }
    },
    afterStop(state) {
      if (state.timer) clearTimeout(state.timer);
    },
  });
}

/**
 * Writes one batch in one transaction; returns how many views were new. Rows are sorted
 * so concurrent counters lock in the same order; a deadlock or lock timeout retries the
 * whole transaction (nothing of it was committed).
 */
export async function writeViews(db: Knex, views: ReadonlyArray<{ adId: number; visitor: string; window: number }>): Promise<number> {
  const sorted = [...views].sort((a, b) => a.adId - b.adId || (a.visitor < b.visitor ? -1 : a.visitor > b.visitor ? 1 : 0) || a.window - b.window);
  // Every value was validated (safe integers, 32 lowercase hex characters): literals are safe and
  // spare knex's placeholder substitution over 15,000 bindings.
  const values = sorted.map((v) => `(${v.adId},0x${v.visitor},${v.window})`).join(',');
  for (let attempt = 1; ; attempt++) {
    try {
      return await db.transaction(async (trx) => {
        const [inserted] = (await trx.raw(`INSERT IGNORE INTO ad_views (ad_id, visitor_hash, window_no) VALUES ${values} RETURNING ad_id`)) as unknown as [Array<{ ad_id: number }>];
        if (inserted.length === 0) return 0;
        const perAd = new Map<number, number>();
        for (const r of inserted) perAd.set(Number(r.ad_id), (perAd.get(Number(r.ad_id)) ?? 0) + 1);
        const ids = [...perAd.keys()].sort((a, b) => a - b);
        const cases = ids.map((id) => `WHEN ${id} THEN ${perAd.get(id)}`).join(' ');
        await trx.raw(`UPDATE advertisements SET views_count = views_count + CASE id ${cases} ELSE 0 END WHERE id IN (${ids.join(',')})`);
        return inserted.length;
      });
    } catch (e) {
      const errno = (e as { errno?: number }).errno;
      if ((errno === 1213 || errno === 1205) && attempt < MAX_TX_ATTEMPTS) {
        await sleep(10 * attempt + Math.random() * 20);
        continue;
      }
      throw e;
    }
  }
}
