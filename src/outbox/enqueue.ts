import type { Logger } from '../log';
import { InputError, isAppError, type ErrorCode } from '../errors';
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

/** Largest `notify.enqueue` payload read (bytes); the text itself is capped by the schema. */
export const MAX_ENQUEUE_BYTES = 256 * 1024;

const decode = decoder(EnqueueRequest, { maxBytes: MAX_ENQUEUE_BYTES });

/**
 * Checks the schema cannot express: the text must show at least one non-whitespace
 * character once Telegram's HTML is applied (`"  "`, `"\n"` or `"<b> </b>"` would be
 * refused by Telegram only at delivery, after the producer was told "stored").
 */
export function checkEnqueue(req: EnqueueRequest): void {
  const mode = req.parse_mode === undefined ? 'HTML' : req.parse_mode;
  if (!/\S/u.test(htmlToPlain(req.text, mode))) {
    throw new InputError('BAD_PAYLOAD', `/text has no visible character (empty or whitespace only${mode === 'HTML' ? ' once HTML tags are removed' : ''})`, { field: 'text' });
  }
}

/**
 * The `notify.enqueue` edge: bytes → schema → semantic checks → insert → reply. Never
 * throws. A refusal carries a stable code (BAD_JSON, BAD_PAYLOAD, PAYLOAD_TOO_LARGE,
 * IDEMPOTENCY_CONFLICT, INTERNAL). Logs carry codes and ids only: never the text, the
 * key or SQL with values (a database error's message contains the whole statement).
 */
export async function handleEnqueue(store: EnqueueStore, data: Uint8Array, log: Logger): Promise<EnqueueResult> {
  let req: EnqueueRequest | undefined;
  try {
    req = decode(data);
    checkEnqueue(req);
    const res = await store.insert(req);
    return {
      reply: { ok: true, ...res },
      result: res.duplicate ? 'duplicate' : 'inserted',
      ...(res.duplicate ? {} : { inserted: { id: res.id, shard: res.shard } }),
    };
  } catch (e) {
    if (isAppError(e)) {
      if (e.code === 'IDEMPOTENCY_CONFLICT') log.warn({ code: e.code, chat_id: req?.chat_id, existing_id: e.details?.id, fields: e.details?.fields }, 'enqueue refused: idempotency key reused');
      return { reply: { ok: false, error: { code: e.code, message: e.message } }, result: e.code };
    }
    log.error({ code: 'INTERNAL', chat_id: req?.chat_id, ...dbErrorFields(e) }, 'enqueue failed');
    return { reply: { ok: false, error: { code: 'INTERNAL', message: 'internal error: the notification was not stored; retry' } }, result: 'INTERNAL' };
  }
}
