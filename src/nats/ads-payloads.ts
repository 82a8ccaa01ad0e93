import { Type, type Static } from '@sinclair/typebox';
import { InputError } from '../errors';

/** Ids are positive BIGINT UNSIGNED values that JavaScript holds exactly. */
export const Id = Type.Integer({ minimum: 1, maximum: Number.MAX_SAFE_INTEGER });

const MAX_SAFE_DIGITS = String(Number.MAX_SAFE_INTEGER);

/**
 * Reads a decimal id from text (a URL path parameter, a subject token) without rounding:
 * 1 … 2^53 − 1, no sign, no leading zero. Checked on the digits before Number(), so
 * `9007199254740993` is refused instead of becoming `…992`. Throws BAD_PAYLOAD naming `field`.
 */
export function parseDecimalId(text: string, field: string): number {
  const ok = /^[1-9][0-9]*$/.test(text) && (text.length < MAX_SAFE_DIGITS.length || (text.length === MAX_SAFE_DIGITS.length && text <= MAX_SAFE_DIGITS));
  if (!ok)
    throw new InputError('BAD_PAYLOAD', `${field} must be a decimal integer from 1 to ${MAX_SAFE_DIGITS}; got ${JSON.stringify(text.slice(0, 40))}`, { field });
  return Number(text);
}

/**
 * `ads.views.<adId>` (JetStream). `visitor`: 32 hex characters (salted SHA-256 prefix of
 * client IP + optional visitor id, computed by the gateway). `ts`: view time, ms since
 * the epoch; the counter derives the dedup window from it, so a redelivery lands in the
 * same window.
 */
export const ViewEvent = Type.Object(
  {
    ad_id: Id,
    visitor: Type.String({ pattern: '^[0-9a-f]{32}$' }),
    ts: Type.Integer({ minimum: 0, maximum: 8_640_000_000_000 }),
  },
  { additionalProperties: false },
);
export type ViewEvent = Static<typeof ViewEvent>;

/**
 * `ads.views.batch` (JetStream): the gateway's micro-batch — every view it received in
 * ≤ 1 ms (at most 256), stored as ONE stream message (msgID: a random batch id reused
 * on retry). One JetStream ack answers every request of the batch.
 */
export const ViewBatch = Type.Object({ views: Type.Array(ViewEvent, { minItems: 1, maxItems: 1_000 }) }, { additionalProperties: false });
export type ViewBatch = Static<typeof ViewBatch>;

/**
 * The envelope of a ViewBatch as the counter reads it: each view is then validated on its
 * own, so one bad view is dead-lettered and the others counted (never the whole batch lost).
 */
export const ViewBatchEnvelope = Type.Object({ views: Type.Array(Type.Unknown(), { minItems: 1, maxItems: 1_000 }) }, { additionalProperties: false });
export type ViewBatchEnvelope = Static<typeof ViewBatchEnvelope>;

/** `ads.counter.pending` request. */
export const PendingRequest = Type.Object({ ad_id: Id }, { additionalProperties: false });
export type PendingRequest = Static<typeof PendingRequest>;
/** `ads.counter.pending` reply from one counter. */
export interface PendingReply {
  instance: string;
  ad_id: number;
  pending: number;
}

/** `ads.bump.run` request: empty object. */
export const BumpRunRequest = Type.Object({}, { additionalProperties: false });
export type BumpRunReply = { ok: true; run_id: number; bumped: number } | { ok: false; error: { code: string; message: string } };

/** `ads.bumped` event. */
export interface BumpedEvent {
  run_id: number;
  trigger: 'timer' | 'manual';
  bumped: number;
  instance: string;
  at: string;
}

/** `ads.unread.get` request. */
export const UnreadRequest = Type.Object({ user_id: Id }, { additionalProperties: false });
export type UnreadRequest = Static<typeof UnreadRequest>;
export type UnreadReply = { ok: true; user_id: number; unread: number } | { ok: false; error: { code: string; message: string } };

/** `messages.created` event: one new (unread) message. */
export const MessageCreated = Type.Object({ id: Id, sender_id: Id, recipient_id: Id }, { additionalProperties: false });
export type MessageCreated = Static<typeof MessageCreated>;

/** `messages.read` event: `count` messages of `recipient_id` became read (the ids are optional, informational). */
export const MessagesRead = Type.Object(
  {
    recipient_id: Id,
    count: Type.Integer({ minimum: 1, maximum: 1_000_000 }),
    message_ids: Type.Optional(Type.Array(Id, { maxItems: 10_000 })),
  },
  { additionalProperties: false },
);
export type MessagesRead = Static<typeof MessagesRead>;
