/**
 * View counter: batches view events from the JetStream consumer and flushes them to the
 * database as ONE multi-row `INSERT IGNORE … RETURNING ad_id` of unique views plus ONE
 * `UPDATE advertisements … CASE` of increments, in one transaction (`AdsRepository.writeViews`).
 * The increments are computed from the rows the INSERT actually inserted, so a view
 * already counted (a repeat inside the dedup window, a redelivery after a crash, a copy
 * handled by another counter process) adds nothing. JetStream messages are acked only
 * after the commit; until then a crash means redelivery, never loss.
 *
 * Every view is judged on its own (`readDelivery`): a malformed view, a view whose subject
 * names another ad, a timestamp out of range or a view of an ad that does not exist
 * (checked in the flush transaction: the gateway's check is racy and direct producers have
 * none) is written to `ad_view_dead_letters` with a reason code, in the same transaction as
 * the good views of the batch, which are counted exactly. See docs/integrity.md.
 *
 * The flush runs outside the mailbox: deliveries keep arriving into the next batch while
 * one batch is written; batches are written one at a time, in order.
 */
import type { JsMsg } from 'nats';
import type { Logger } from '../../src/log';
import type { Metrics } from '../../src/metrics';
import { assertNever, dispatch, reply, spawn, Supervision, type ActorRef, type Parent, type ReplyTo } from '../../src/runtime/actor';
import type { AdsRepository } from '../../src/ads/repository';
import { readDelivery, type DeadLetter, type PendingView } from '../../src/ads/view-events';
import { viewMsgId } from '../../src/ads/views-stream';
import { dbErrorFields } from '../../src/db/error-fields';

export type { DeadLetter, DeadLetterReason } from '../../src/ads/view-events';

export interface FlushResult {
  /** JetStream messages acked by this flush. */
  messages: number;
  /** Distinct (ad, visitor, window) keys written. */
  distinct: number;
  /** Views that were new and incremented `views_count`. */
  counted: number;
  /** Views (or unreadable messages) written to `ad_view_dead_letters`. */
  deadLettered: number;
}

export type ViewCounterMsg =
  /** One delivery from the consumer: a ViewEvent, or a ViewBatch on `….views.batch`. */
  | { type: 'delivery'; msg: JsMsg }
  /** The flush timer of batch `batch` fired. */
  | { type: 'flush-due'; batch: number }
  /** Flush now (shutdown, tests); answers once everything received so far is written and acked. */
  | { type: 'flush'; replyTo: ReplyTo<FlushResult> }
  /** Distinct views of `adId` received but not yet flushed. */
  | { type: 'pending'; adId: number; replyTo: ReplyTo<number> }
  /** A batch's transaction ended (outside the mailbox). */
  | { type: 'written'; batch: number; counted: number; dead: DeadLetter[]; error?: unknown };

interface Batch {
  /** Identifies the batch so a stale timer does not flush the next one early. */
  id: number;
  views: Map<string, PendingView>;
  perAd: Map<number, number>;
  msgs: JsMsg[];
  /** Views in `msgs` (a batch message holds many). */
  viewCount: number;
  /** Refused views of this batch, written with it. */
  dead: DeadLetter[];
}

export interface ViewCounterState {
  /** The batch filling now. */
  batch: Batch;
  /** The batch being written, if any (one at a time). */
  writing: Batch | undefined;
  /** Batches full or due while another was being written, in order. */
  queue: Batch[];
  /** `flush` queries waiting for everything received before them, with the sum so far. */
  waiters: Array<{ replyTo: ReplyTo<FlushResult>; until: number; sum: FlushResult }>;
  timer: NodeJS.Timeout | undefined;
  nextId: number;
}

export interface ViewCounterDeps {
  repo: Pick<AdsRepository, 'writeViews'>;
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

export function spawnViewCounter(parent: Parent, deps: ViewCounterDeps, options: ViewCounterOptions): ActorRef<ViewCounterMsg> {
  const m = deps.metrics;
  const received = m.counter('ads_view_deliveries_total', 'View events delivered by JetStream to this counter');
  const rejected = m.counter<'code'>('ads_view_events_rejected_total', 'Views (or unreadable view messages) dead-lettered instead of counted, by reason', [
    'code',
  ]);
  const counted = m.counter('ads_views_counted_total', 'New unique views added to views_count');
  const flushes = m.counter<'outcome'>('ads_view_flushes_total', 'View flushes by outcome', ['outcome']);
  const flushSeconds = m.histogram('ads_view_flush_seconds', 'Duration of one view flush transaction', [], [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5]);
  const pendingGauge = m.gauge('ads_view_pending', 'Deliveries received and not yet flushed');

  // Batch ids go on across restarts (init runs again): the answer of a write started before a restart must not match a batch after it.
  let lastBatchId = 0;
  const newBatch = (state: { nextId: number }): Batch => ({
    id: (state.nextId = ++lastBatchId),
    views: new Map(),
    perAd: new Map(),
    msgs: [],
    viewCount: 0,
    dead: [],
  });

  /** Starts writing the next batch in line, if none is being written. */
  const writeNext = (state: ViewCounterState, self: ActorRef<ViewCounterMsg>): void => {
    if (state.writing) return;
    const b = state.queue.shift();
    if (!b) {
      settleWaiters(state);
      return;
    }
    state.writing = b;
    const started = process.hrtime.bigint();
    deps.repo.writeViews([...b.views.values()], b.dead).then(
      (r) => {
        flushSeconds.observe(Number(process.hrtime.bigint() - started) / 1e9);
        dispatch(self, { type: 'written', batch: b.id, counted: r.counted, dead: r.dead });
      },
      (error: unknown) => dispatch(self, { type: 'written', batch: b.id, counted: 0, dead: [], error }),
    );
  };

  /** Closes the filling batch (if it holds anything) and puts it in line. */
  const seal = (state: ViewCounterState, self: ActorRef<ViewCounterMsg>): void => {
    if (state.timer) clearTimeout(state.timer);
    state.timer = undefined;
    if (state.batch.msgs.length > 0) {
      state.queue.push(state.batch);
      state.batch = newBatch(state);
    }
    writeNext(state, self);
  };

  /** Answers `flush` queries whose batches are all written. */
  const settleWaiters = (state: ViewCounterState): void => {
    const oldest = state.writing?.id ?? state.queue[0]?.id ?? Infinity;
    state.waiters = state.waiters.filter((w) => {
      if (w.until >= oldest) return true;
      reply(w.replyTo, w.sum);
      return false;
    });
  };

  const onWritten = (state: ViewCounterState, msg: Extract<ViewCounterMsg, { type: 'written' }>, log: Logger): FlushResult => {
    const b = state.writing!;
    state.writing = undefined;
    pendingGauge.dec(b.msgs.length);
    if (msg.error !== undefined) {
      // Nothing committed: let JetStream redeliver (to us or another counter).
      for (const jm of b.msgs) jm.nak(options.nakDelayMs ?? 1_000);
      flushes.inc({ outcome: 'failed' });
      log.error({ ...dbErrorFields(msg.error), messages: b.msgs.length }, 'view flush failed; messages nak-ed for redelivery');
      return { messages: b.msgs.length, distinct: b.views.size, counted: 0, deadLettered: 0 };
    }
    for (const jm of b.msgs) jm.ack();
    counted.inc(msg.counted);
    if (msg.dead.length > 0) {
      // One line per flush, not per view: a flood of bad views must not flood the log.
      const reasons: Record<string, number> = {};
      for (const d of msg.dead) {
        rejected.inc({ code: d.reason });
        reasons[d.reason] = (reasons[d.reason] ?? 0) + 1;
      }
      const first = msg.dead[0]!;
      log.warn(
        { deadLettered: msg.dead.length, reasons, first: { reason: first.reason, adId: first.adId, subject: first.subject, seq: first.seq } },
        'views dead-lettered to ad_view_dead_letters',
      );
    }
    flushes.inc({ outcome: 'ok' });
    log.debug({ messages: b.msgs.length, distinct: b.views.size, counted: msg.counted, deadLettered: msg.dead.length }, 'views flushed');
    return { messages: b.msgs.length, distinct: b.views.size, counted: msg.counted, deadLettered: msg.dead.length };
  };

  return spawn<ViewCounterState, ViewCounterMsg>(parent, {
    name: options.name ?? 'view-counter',
    supervision: Supervision.restartWithBackoff({ minBackoffMs: 200, maxBackoffMs: 10_000 }),
    init: () => {
      const ids = { nextId: 0 };
      return { batch: newBatch(ids), writing: undefined, queue: [], waiters: [], timer: undefined, nextId: ids.nextId };
    },
    receive(state, msg, ctx) {
      switch (msg.type) {
        case 'delivery': {
          received.inc();
          const r = readDelivery(msg.msg, options.dedupWindowMs);
          const b = state.batch;
          b.viewCount += r.count;
          b.dead.push(...r.dead);
          for (const v of r.views) {
            const key = viewMsgId(v.adId, v.visitor, v.window);
            if (b.views.has(key)) continue;
            b.views.set(key, v);
            b.perAd.set(v.adId, (b.perAd.get(v.adId) ?? 0) + 1);
          }
          b.msgs.push(msg.msg);
          pendingGauge.inc();
          if (b.viewCount >= options.flushMax) seal(state, ctx.self);
          else if (!state.timer) {
            const id = b.id;
            const self = ctx.self;
            state.timer = setTimeout(() => dispatch(self, { type: 'flush-due', batch: id }), options.flushMs);
          }
          return state;
        }
        case 'flush-due':
          if (msg.batch === state.batch.id) seal(state, ctx.self);
          return state;
        case 'flush': {
          const until = state.batch.msgs.length > 0 ? state.batch.id : state.batch.id - 1;
          state.waiters.push({ replyTo: msg.replyTo, until, sum: { messages: 0, distinct: 0, counted: 0, deadLettered: 0 } });
          seal(state, ctx.self);
          settleWaiters(state);
          return state;
        }
        case 'written': {
          if (state.writing?.id !== msg.batch) return state;
          const r = onWritten(state, msg, ctx.log);
          for (const w of state.waiters) {
            if (w.until < msg.batch) continue;
            w.sum.messages += r.messages;
            w.sum.distinct += r.distinct;
            w.sum.counted += r.counted;
            w.sum.deadLettered += r.deadLettered;
          }
          writeNext(state, ctx.self);
          return state;
        }
        case 'pending': {
          // Received but not yet committed: the filling batch, those in line and the one being written.
          let n = 0;
          for (const b of [state.batch, ...state.queue, ...(state.writing ? [state.writing] : [])]) n += b.perAd.get(msg.adId) ?? 0;
          reply(msg.replyTo, n);
          return state;
        }
        default:
          return assertNever(msg);
      }
    },
    afterStop(state) {
      if (state.timer) clearTimeout(state.timer);
    },
  });
}
