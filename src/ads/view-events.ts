/**
 * Reading view deliveries from the `ads.views.*` stream, one view at a time: every view is
 * judged on its own, so one bad view never spoils its batch. A good view becomes a
 * `PendingView`; anything else a `DeadLetter` with a stable reason (docs/integrity.md).
 */
import { decoder, validator } from '../nats/codec';
import { ViewBatchEnvelope, ViewEvent, parseDecimalId } from '../nats/ads-payloads';
import { describeError, isAppError } from '../errors';
import { windowOf } from './views-stream';

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
export const MAX_WINDOW_NO = 4_294_967_295;

/** A view that passed every check, waiting for the flush. */
export interface PendingView {
  adId: number;
  visitor: string;
  window: number;
  /** For a dead letter if the ad turns out not to exist. */
  subject: string;
  seq: number;
  ts: number;
}

/** What one delivery holds: its good views, its refused ones, and how many views it counted for. */
export interface ReadDelivery {
  views: PendingView[];
  dead: DeadLetter[];
  /** Views in the message (a batch message holds many); at least 1. */
  count: number;
}

const decodeView = decoder(ViewEvent, { maxBytes: 4_096 });
const decodeBatch = decoder(ViewBatchEnvelope, { maxBytes: 256 * 1_024 });
const validateView = validator(ViewEvent);

/** The first 1 KiB of an offending payload, for the dead-letter row. */
export const deadLetterPayload = (s: string | Uint8Array): Buffer =>
  Buffer.from(typeof s === 'string' ? Buffer.from(s, 'utf8').subarray(0, 1_024) : s.subarray(0, 1_024));

/** Reads one delivery (a ViewEvent on `….views.<ad id>`, or a ViewBatch on `….views.batch`). Pure. */
export function readDelivery(msg: { subject: string; seq: number; data: Uint8Array }, dedupWindowMs: number): ReadDelivery {
  const { subject, seq } = msg;
  const out: ReadDelivery = { views: [], dead: [], count: 1 };
  const reject = (reason: DeadLetterReason, detail: string, adId: number | null, payload: string | Uint8Array | null): void => {
    out.dead.push({
      reason,
      detail: detail.slice(0, 255),
      adId,
      subject: subject.slice(0, 255),
      seq,
      payload: payload === null ? null : deadLetterPayload(payload),
    });
  };
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
        reject('BAD_SUBJECT', describeError(e), null, msg.data);
        return out;
      }
      elements = [decodeView(msg.data)];
    }
  } catch (e) {
    const code = isAppError(e) && (e.code === 'BAD_JSON' || e.code === 'PAYLOAD_TOO_LARGE') ? e.code : 'BAD_PAYLOAD';
    reject(code, describeError(e), subjectAd ?? null, msg.data);
    return out;
  }
  out.count = Math.max(1, elements.length);
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
    const window = windowOf(ev.ts, dedupWindowMs);
    if (window > MAX_WINDOW_NO) {
      reject('TS_OUT_OF_RANGE', `view time ${ev.ts} falls in dedup window ${window}, above ${MAX_WINDOW_NO}`, ev.ad_id, JSON.stringify(ev));
      continue;
    }
    out.views.push({ adId: ev.ad_id, visitor: ev.visitor, window, subject, seq, ts: ev.ts });
  }
  return out;
}

function safeJson(v: unknown): string {
  try {
    return JSON.stringify(v) ?? String(v);
  } catch {
    return String(v);
  }
}
