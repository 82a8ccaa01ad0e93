import type { Logger } from '../log';
import { AppError, InputError, isAppError, type ErrorCode } from '../errors';
import { decoder } from '../nats/codec';
import { EnqueueRequest, type EnqueueReply } from '../nats/payloads';
import { htmlToPlain } from './html-text';
import { dbErrorFields } from '../db/error-fields';

/** What the outbox needs from the repository to enqueue. */
export interface EnqueueStore {
  insert(req: EnqueueRequest): Promise<{ id: number; shard: number; duplicate: boolean }>;
}

export interface EnqueueResult {
  reply: EnqueueReply;
  /** Set when a new row was committed: the shard to wake. */
  inserted?: { id: number; shard: number };
  /** `inserted`, `duplicate`, or the error code of a refusal. */
  result: 'inserted' | 'duplicate' | ErrorCode;
}

/**
 * Largest `notify.enqueue` payload read (bytes): 512 KiB, so every request the schema
 * accepts fits (65,536 characters written as `\uXXXX` escapes are 384 KiB) and a caller
 * is never refused for the size of a valid request; below NATS's 1 MiB max_payload.
 */
export const MAX_ENQUEUE_BYTES = 512 * 1024;

/** The `notify.enqueue` decoder (bytes → UTF-8 → JSON → schema). */
export const decodeEnqueue = decoder(EnqueueRequest, { maxBytes: MAX_ENQUEUE_BYTES });

/**
 * Checks the schema cannot express: the text must show at least one non-whitespace
 * character once Telegram's HTML is applied (`"  "`, `"\n"` or `"<b> </b>"` would be
 * refused by Telegram only at delivery, after the producer was told "stored").
 */
export function checkEnqueue(req: EnqueueRequest): void {
  const mode = req.parse_mode === undefined ? 'HTML' : req.parse_mode;
  if (!/\S/u.test(htmlToPlain(req.text, mode))) {
    throw new InputError('BAD_PAYLOAD', `/text has no visible character (empty or whitespace only${mode === 'HTML' ? ' once HTML tags are removed' : ''})`, {
      field: 'text',
    });
  }
}

/**
 * Checks and stores one decoded request. Throws only AppErrors: BAD_PAYLOAD (no visible
 * text), IDEMPOTENCY_CONFLICT, or INTERNAL for a database failure — logged here with ids
 * and codes only, never the text, the key or SQL with values (a database error's message
 * contains the whole statement), and never passed on.
 */
export async function enqueue(store: EnqueueStore, req: EnqueueRequest, log: Logger): Promise<{ id: number; shard: number; duplicate: boolean }> {
  checkEnqueue(req);
  try {
    return await store.insert(req);
  } catch (e) {
    if (isAppError(e)) {
      if (e.code === 'IDEMPOTENCY_CONFLICT')
        log.warn({ code: e.code, chat_id: req.chat_id, existing_id: e.details?.id, fields: e.details?.fields }, 'enqueue refused: idempotency key reused');
      throw e;
    }
    log.error({ code: 'INTERNAL', chat_id: req.chat_id, ...dbErrorFields(e) }, 'enqueue failed');
    throw new AppError('INTERNAL', 'internal error: the notification was not stored; retry');
  }
}

/**
 * The `notify.enqueue` edge: bytes → schema → `enqueue` → reply. Never throws. A refusal
 * carries a stable code (BAD_JSON, BAD_PAYLOAD, PAYLOAD_TOO_LARGE, IDEMPOTENCY_CONFLICT,
 * INTERNAL).
 */
export async function handleEnqueue(store: EnqueueStore, data: Uint8Array, log: Logger): Promise<EnqueueResult> {
  try {
    const res = await enqueue(store, decodeEnqueue(data), log);
    return {
      reply: { ok: true, ...res },
      result: res.duplicate ? 'duplicate' : 'inserted',
      ...(res.duplicate ? {} : { inserted: { id: res.id, shard: res.shard } }),
    };
  } catch (e) {
    const err = isAppError(e) ? e : new AppError('INTERNAL', 'internal error: the notification was not stored; retry');
    return { reply: { ok: false, error: { code: err.code, message: err.message } }, result: err.code };
  }
}
