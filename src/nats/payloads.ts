import { Type, type Static } from '@sinclair/typebox';

/** Telegram's limit is 4096 characters per message; longer texts are split. We refuse absurd sizes. */
export const MAX_ENQUEUE_TEXT = 65_536;

/**
 * Largest |chat id| accepted: 2^52 − 1. Telegram documents chat ids as having "at most 52
 * significant bits" (so a double holds them exactly); anything beyond is not a chat.
 */
export const MAX_CHAT_ID = 2 ** 52 - 1;

/** A Telegram chat id: a non-zero integer with |id| ≤ MAX_CHAT_ID (users > 0, groups and channels < 0). */
export const ChatId = Type.Integer({ minimum: -MAX_CHAT_ID, maximum: MAX_CHAT_ID, not: { const: 0 } });

/**
 * A database id (BIGINT UNSIGNED) that JavaScript holds exactly: 1 … 2^53 − 1. JSON numbers
 * above that arrive rounded, always to ≥ 2^53, so the maximum rejects them instead of
 * storing a neighbour's id.
 */
export const SafeId = Type.Integer({ minimum: 1, maximum: Number.MAX_SAFE_INTEGER });

/** `notify.enqueue` request. Unknown fields are rejected so typos never pass silently. */
export const EnqueueRequest = Type.Object(
  {
    chat_id: ChatId,
    text: Type.String({ minLength: 1, maxLength: MAX_ENQUEUE_TEXT }),
    parse_mode: Type.Optional(Type.Union([Type.Literal('HTML'), Type.Literal('MarkdownV2'), Type.Literal('Markdown'), Type.Null()])),
    kind: Type.Optional(Type.String({ minLength: 1, maxLength: 32, pattern: '^[a-z_][a-z0-9_]*$' })),
    order_id: Type.Optional(SafeId),
    /** Higher goes first; transactional (e.g. new orders) > 0 > bulk. */
    priority: Type.Optional(Type.Integer({ minimum: -100, maximum: 100 })),
    /**
     * Compared byte for byte. A repeat with the same key and the same notification (chat,
     * text, parse_mode, kind, order) returns the first id with `duplicate: true` and inserts
     * nothing; the same key with another notification is refused with IDEMPOTENCY_CONFLICT.
     */
    idempotency_key: Type.Optional(Type.String({ minLength: 1, maxLength: 128 })),
  },
  { additionalProperties: false },
);
export type EnqueueRequest = Static<typeof EnqueueRequest>;

export const ErrorBody = Type.Object({ code: Type.String(), message: Type.String() });

/** `notify.enqueue` reply: only after the row is committed. */
export type EnqueueReply = { ok: true; id: number; shard: number; duplicate: boolean } | { ok: false; error: { code: string; message: string } };

/** `notify.wake.<shard>` event. */
export const WakeEvent = Type.Object({ shard: Type.Integer({ minimum: 0, maximum: 65_535 }), id: Type.Optional(SafeId) }, { additionalProperties: false });
export type WakeEvent = Static<typeof WakeEvent>;

/** `notify.outcome.<status>` event, one per finished notification. */
export interface OutcomeEvent {
  id: number;
  chat_id: number;
  status: 'sent' | 'failed';
  error_code?: string | null;
  error?: string | null;
  attempts: number;
  latency_ms: number;
}

/**
 * `notify.recipient.changed` event: an operator cleared (or a sender marked) a recipient.
 * A hint only: receivers re-read the chat's telegram_recipients row and apply that, never
 * the event's own status or migrated_to_chat_id (src/outbox/recipients.ts refresh()).
 */
export const RecipientChanged = Type.Object(
  {
    chat_id: Type.Integer({ minimum: -9_999_999_999_999, maximum: 9_999_999_999_999, not: { const: 0 } }),
    status: Type.Union([
      Type.Literal('ok'),
      Type.Literal('blocked'),
      Type.Literal('deactivated'),
      Type.Literal('kicked'),
      Type.Literal('not_found'),
      Type.Literal('migrated'),
    ]),
    migrated_to_chat_id: Type.Optional(Type.Union([Type.Integer({ minimum: -9_999_999_999_999, maximum: 9_999_999_999_999, not: { const: 0 } }), Type.Null()])),
  },
  { additionalProperties: false },
);
export type RecipientChanged = Static<typeof RecipientChanged>;

/** `notify.budget.grant.<holder>` request from the budget coordinator to one process. */
export const BudgetGrant = Type.Object(
  {
    share: Type.Integer({ minimum: 0 }),
    window_ms: Type.Number({ exclusiveMinimum: 0 }),
    issued_at: Type.Integer({ minimum: 0 }),
    expires_at: Type.Integer({ minimum: 0 }),
    coordinator: Type.String({ maxLength: 256 }),
    /** KV revision of the coordinator's lease when the grant was issued (checked by the receiver). */
    lease_revision: Type.Integer({ minimum: 1 }),
    /** The bot-wide rate the coordinator runs the cluster at now (per second; AIMD under the ceiling). */
    rate: Type.Number({ exclusiveMinimum: 0 }),
  },
  { additionalProperties: false },
);
export type BudgetGrant = Static<typeof BudgetGrant>;

/** `notify.budget.demand` event from every process, 4 times a second. */
export const BudgetDemand = Type.Object(
  {
    holder: Type.String({ minLength: 1, maxLength: 256 }),
    instance: Type.String({ minLength: 1, maxLength: 256 }),
    demand: Type.Integer({ minimum: 0 }),
    share: Type.Integer({ minimum: 0 }),
    at: Type.Integer({ minimum: 0 }),
    /** Sends Telegram accepted from this process in the last window (the coordinator sums them at a flood). */
    accepted: Type.Optional(Type.Integer({ minimum: 0 })),
    /** When set: `accepted` counts the window ending at this instant (a flood's `at`), not at `at`. */
    accepted_at: Type.Optional(Type.Integer({ minimum: 0 })),
    /** The process stops (gracefully) and sends no more: its share is free once its past sends leave its window, at `free_at`. */
    leaving: Type.Optional(Type.Boolean()),
    free_at: Type.Optional(Type.Integer({ minimum: 0 })),
    /** The bot rate this process last heard from a coordinator (per second): a new coordinator starts from the lowest. */
    rate: Type.Optional(Type.Number({ exclusiveMinimum: 0 })),
    /** Whether it runs on a grant or the fallback share (false: only the floor, or nothing). */
    granted: Type.Optional(Type.Boolean()),
  },
  { additionalProperties: false },
);
export type BudgetDemand = Static<typeof BudgetDemand>;

/**
 * `notify.budget.flood` event: Telegram says the bot is flooded; everyone pauses until `until`
 * (clamped to TELEGRAM_MAX_RETRY_AFTER_MS from now) and the coordinator lowers the bot rate.
 * Ignored unless `holder` is a live member of the cluster.
 */
export const BudgetFlood = Type.Object(
  {
    until: Type.Integer({ minimum: 0 }),
    instance: Type.String({ maxLength: 256 }),
    holder: Type.String({ minLength: 1, maxLength: 256 }),
    /** When the 429 came (ms): every member reports what it got accepted in the window ending then. */ at: Type.Optional(Type.Integer({ minimum: 0 })),
  },
  { additionalProperties: false },
);
export type BudgetFlood = Static<typeof BudgetFlood>;
