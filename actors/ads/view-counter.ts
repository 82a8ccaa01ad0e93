/**
 * View counter: batches view events from the JetStream consumer and flushes them to the
 * database as ONE multi-row `INSERT IGNORE … RETURNING ad_id` of unique views plus ONE
 * `UPDATE advertisements … CASE` of increments, in one transaction. The increments are
 * computed from the rows the INSERT actually inserted, so a view already counted (a
 * repeat inside the dedup window, a redelivery after a crash, a copy handled by another
 * counter process) adds nothing. JetStream messages are acked only after the commit;
 * until then a crash means redelivery, never loss.
 *
 * Every view is judged on its own: a malformed view, a view whose subject names another
 * ad, a timestamp out of range or a view of an ad that does not exist (checked in the
 * flush transaction: the gateway's check is racy and direct producers have none) is
 * written to `ad_view_dead_letters` with a reason code, in the same transaction as the
 * good views of the batch, which are counted exactly. See docs/integrity.md.
 */
import type { JsMsg } from 'nats';
import type { Knex } from '../../src/db/knex';
import type { Logger } from '../../src/log';
import type { Metrics } from '../../src/metrics';
import { assertNever, dispatch, reply, sleep, spawn, Supervision, type ActorRef, type Parent, type ReplyTo } from '../../src/runtime/actor';
import { decoder, validator } from '../../src/nats/codec';
import { ViewBatchEnvelope, ViewEvent, parseDecimalId } from '../../src/nats/ads-payloads';
import { describeError, isAppError } from '../../src/errors';
import { dbErrorFields } from '../../src/db/error-fields';
import { viewMsgId, windowOf } from '../../src/ads/views-stream';

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

/**
 * Why a view was dead-lettered (the `reason` column; stable, documented in docs/integrity.md).
 * BAD_JSON / PAYLOAD_TOO_LARGE / BAD_PAYLOAD: the message or the view could not be read or
 * does not match ViewEvent; BAD_SUBJECT: `ads.views.<x>` where x is not an id;
 * SUBJECT_MISMATCH: the subject's ad id is not the payload's; TS_OUT_OF_RANGE: the view's
 * dedup window does not fit `ad_views.window_no` (INSERT IGNORE would clamp it silently);
 * AD_NOT_FOUND: no such advertisement when the batch was written.
 */
export type DeadLetterReason = 'BAD_JSON' | 'PAYLOAD_TOO_LARGE' | 'BAD_PAYLOAD' | 'BAD_SUBJECT' | 'SUBJECT_MISMATCH' | 'TS_OUT_OF_RANGE' | 'AD_NOT_FOUND';

export interface DeadLetter {
  reason: DeadLetterReason;
  /** One sentence; no secrets (views carry hashes, not IPs). */
  detail: string;
  adId: number | null;
  subject: string;
  seq: number | null;
  /** The offending bytes (first 1 KiB): the view's JSON, or the whole message when it could not be read. */
  payload: Buffer | null;
}

/** `ad_views.window_no` is INT UNSIGNED: INSERT IGNORE would clamp a larger window silently. */
const MAX_WINDOW_NO = 4_294_967_295;

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
  /** For a dead letter if the ad turns out not to exist. */
  subject: string;
  seq: number;
  ts: number;
}

export interface ViewCounterState {
  /** Identifies the current batch so a stale timer does not flush the next one early. */
  batchId: number;
  views: Map<string, PendingView>;
  perAd: Map<number, number>;
  msgs: JsMsg[];
  /** Views in `msgs` (a batch message holds many). */
  viewCount: number;
  /** Refused views of this batch, written with it. */
  dead: DeadLetter[];
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
const decodeBatch = decoder(ViewBatchEnvelope, { maxBytes: 256 * 1_024 });
const validateView = validator(ViewEvent);
const dlPayload = (s: string | Uint8Array): Buffer => Buffer.from(typeof s === 'string' ? Buffer.from(s, 'utf8').subarray(0, 1_024) : s.subarray(0, 1_024));
let batchSeq = 0;
const MAX_TX_ATTEMPTS = 5;

export function spawnViewCounter(parent: Parent, deps: ViewCounterDeps, options: ViewCounterOptions): ActorRef<ViewCounterMsg> {
  const m = deps.metrics;
  const received = m.counter('ads_view_deliveries_total', 'View events delivered by JetStream to this counter');
  const rejected = m.counter<'code'>('ads_view_events_rejected_total', 'Views (or unreadable view messages) dead-lettered instead of counted, by reason', ['code']);
  const counted = m.counter('ads_views_counted_total', 'New unique views added to views_count');
  const flushes = m.counter<'outcome'>('ads_view_flushes_total', 'View flushes by outcome', ['outcome']);
  const flushSeconds = m.histogram('ads_view_flush_seconds', 'Duration of one view flush transaction', [], [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5]);
  const pendingGauge = m.gauge('ads_view_pending', 'Deliveries received and not yet flushed');

  const fresh = (): ViewCounterState => ({ batchId: ++batchSeq, views: new Map(), perAd: new Map(), msgs: [], viewCount: 0, dead: [], timer: undefined });

  async function flush(state: ViewCounterState, log: Logger): Promise<FlushResult> {
    if (state.timer) clearTimeout(state.timer);
    const msgs = state.msgs;
    const views = [...state.views.values()];
    if (msgs.length === 0) return { messages: 0, distinct: 0, counted: 0, deadLettered: 0 };
    const started = process.hrtime.bigint();
    let newViews = 0;
    let dead: DeadLetter[] = [];
    try {
      const r = await writeViews(deps.db, views, state.dead);
      newViews = r.counted;
      dead = r.dead;
      for (const msg of msgs) msg.ack();
      counted.inc(newViews);
      if (dead.length > 0) {
        // One line per flush, not per view: a flood of bad views must not flood the log.
        const reasons: Record<string, number> = {};
        for (const d of dead) {
          rejected.inc({ code: d.reason });
          reasons[d.reason] = (reasons[d.reason] ?? 0) + 1;
        }
        log.warn({ deadLettered: dead.length, reasons, first: { reason: dead[0]!.reason, adId: dead[0]!.adId, subject: dead[0]!.subject, seq: dead[0]!.seq } }, 'views dead-lettered to ad_view_dead_letters');
      }
      flushes.inc({ outcome: 'ok' });
      log.debug({ messages: msgs.length, distinct: views.length, counted: newViews, deadLettered: dead.length }, 'views flushed');
    } catch (e) {
      // Nothing committed: let JetStream redeliver (to us or another counter).
      for (const msg of msgs) msg.nak(options.nakDelayMs ?? 1_000);
      flushes.inc({ outcome: 'failed' });
      log.error({ ...dbErrorFields(e), messages: msgs.length }, 'view flush failed; messages nak-ed for redelivery');
    } finally {
      flushSeconds.observe(Number(process.hrtime.bigint() - started) / 1e9);
      pendingGauge.dec(msgs.length);
    }
    return { messages: msgs.length, distinct: views.length, counted: newViews, deadLettered: dead.length };
  }

  /** Reads one delivery into the batch: good views into `views`, the rest into `dead`. */
  function take(state: ViewCounterState, msg: JsMsg): number {
    const subject = msg.subject;
    const seq = msg.seq;
    const reject = (reason: DeadLetterReason, detail: string, adId: number | null, payload: string | Uint8Array | null): void => {
      state.dead.push({ reason, detail: detail.slice(0, 255), adId, subject: subject.slice(0, 255), seq, payload: payload === null ? null : dlPayload(payload) });
    };
    const raw = (): Uint8Array => msg.data;
    const isBatch = subject.endsWith('.batch');
    let elements: unknown[];
    let subjectAd: number | undefined;
    try {
      if (isBatch) elements = decodeBatch(msg.data).views;
      else {
        const token = subject.slice(subject.lastIndexOf('ads.views.') + 'ads.views.'.length);
        try {
          subjectAd = parseDecimalId(token, 'subject ad id');
        } catch (e) {
          reject('BAD_SUBJECT', describeError(e), null, raw());
          return 1;
        }
        elements = [decodeView(msg.data)];
      }
    } catch (e) {
      const code = isAppError(e) && (e.code === 'BAD_JSON' || e.code === 'PAYLOAD_TOO_LARGE') ? e.code : 'BAD_PAYLOAD';
      reject(code, describeError(e), subjectAd ?? null, raw());
      return 1;
    }
    for (const el of elements) {
      let ev: ViewEvent;
      try {
        // A single view was validated by decodeView already.
        ev = isBatch ? validateView(el) : (el as ViewEvent);
      } catch (e) {
        const adId = (el as { ad_id?: unknown } | null)?.ad_id;
        reject('BAD_PAYLOAD', describeError(e), Number.isSafeInteger(adId) && (adId as number) > 0 ? (adId as number) : null, safeJson(el));
        continue;
      }
      if (subjectAd !== undefined && ev.ad_id !== subjectAd) {
        reject('SUBJECT_MISMATCH', `the subject names ad ${subjectAd} but the view is for ad ${ev.ad_id}`, ev.ad_id, JSON.stringify(ev));
        continue;
      }
      const window = windowOf(ev.ts, options.dedupWindowMs);
      if (window > MAX_WINDOW_NO) {
        reject('TS_OUT_OF_RANGE', `view time ${ev.ts} falls in dedup window ${window}, above ${MAX_WINDOW_NO}`, ev.ad_id, JSON.stringify(ev));
        continue;
      }
      const v: PendingView = { adId: ev.ad_id, visitor: ev.visitor, window, subject, seq, ts: ev.ts };
      const key = viewMsgId(v.adId, v.visitor, v.window);
      if (!state.views.has(key)) {
        state.views.set(key, v);
        state.perAd.set(v.adId, (state.perAd.get(v.adId) ?? 0) + 1);
      }
    }
    return Math.max(1, elements.length);
  }

  return spawn<ViewCounterState, ViewCounterMsg>(parent, {
    name: options.name ?? 'view-counter',
    supervision: Supervision.restartWithBackoff({ minBackoffMs: 200, maxBackoffMs: 10_000 }),
    init: fresh,
    async receive(state, msg, ctx) {
      switch (msg.type) {
        case 'delivery': {
          received.inc();
          state.viewCount += take(state, msg.msg);
          state.msgs.push(msg.msg);
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
 * Writes one batch in one transaction: locks the batch's ads (sorted, FOR UPDATE) to see
 * which exist, inserts the views of existing ads, increments their counts by the rows
 * actually inserted, and writes every dead letter (the ones given, plus AD_NOT_FOUND for
 * views of missing ads). Returns how many views were new and the dead letters written.
 * A deadlock or lock timeout retries the whole transaction (nothing of it was committed).
 */
export async function writeViews(
  db: Knex,
  views: ReadonlyArray<{ adId: number; visitor: string; window: number; subject?: string; seq?: number; ts?: number }>,
  deadIn: readonly DeadLetter[] = [],
): Promise<{ counted: number; dead: DeadLetter[] }> {
  const sorted = [...views].sort((a, b) => a.adId - b.adId || (a.visitor < b.visitor ? -1 : a.visitor > b.visitor ? 1 : 0) || a.window - b.window);
  const adIds = [...new Set(sorted.map((v) => v.adId))];
  for (let attempt = 1; ; attempt++) {
    try {
      return await db.transaction(async (trx) => {
        const dead = [...deadIn];
        let counted = 0;
        if (adIds.length > 0) {
          // Every value was validated (safe integers, 32 lowercase hex characters): literals are safe and
          // spare knex's placeholder substitution over 15,000 bindings.
          const [found] = (await trx.raw(`SELECT id FROM advertisements WHERE id IN (${adIds.join(',')}) ORDER BY id FOR UPDATE`)) as unknown as [Array<{ id: number | string }>];
          const exists = new Set(found.map((r) => Number(r.id)));
          const good = sorted.filter((v) => exists.has(v.adId));
          for (const v of sorted) {
            if (exists.has(v.adId)) continue;
            dead.push({ reason: 'AD_NOT_FOUND', detail: `ad ${v.adId} does not exist`, adId: v.adId, subject: (v.subject ?? '').slice(0, 255), seq: v.seq ?? null, payload: dlPayload(JSON.stringify({ ad_id: v.adId, visitor: v.visitor, ts: v.ts ?? null })) });
          }
          if (good.length > 0) {
            const values = good.map((v) => `(${v.adId},0x${v.visitor},${v.window})`).join(',');
            const [inserted] = (await trx.raw(`INSERT IGNORE INTO ad_views (ad_id, visitor_hash, window_no) VALUES ${values} RETURNING ad_id`)) as unknown as [Array<{ ad_id: number }>];
            if (inserted.length > 0) {
              const perAd = new Map<number, number>();
              for (const r of inserted) perAd.set(Number(r.ad_id), (perAd.get(Number(r.ad_id)) ?? 0) + 1);
              const ids = [...perAd.keys()].sort((a, b) => a - b);
              const cases = ids.map((id) => `WHEN ${id} THEN ${perAd.get(id)}`).join(' ');
              await trx.raw(`UPDATE advertisements SET views_count = views_count + CASE id ${cases} ELSE 0 END WHERE id IN (${ids.join(',')})`);
              counted = inserted.length;
            }
          }
        }
        for (let i = 0; i < dead.length; i += 500) {
          const rows = dead.slice(i, i + 500).map((d) => ({ reason: d.reason, detail: d.detail.slice(0, 255), ad_id: d.adId, subject: d.subject.slice(0, 255), stream_seq: d.seq, payload: d.payload }));
          await trx('ad_view_dead_letters').insert(rows);
        }
        return { counted, dead };
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

function safeJson(v: unknown): string {
  try {
    return JSON.stringify(v) ?? String(v);
  } catch {
    return String(v);
  }
}
