import { scrubSecrets } from '../log';
import {
  TelegramApiError,
  TelegramBadRequest,
  TelegramMigrated,
  TelegramParseError,
  TelegramPermanent,
  TelegramRateLimited,
  TelegramTooLong,
  TelegramTransient,
  TelegramUnauthorized,
} from './errors';

/** The parts of a Telegram error answer (or telegraf's TelegramError) we decide on. */
export interface TelegramAnswer {
  error_code: number;
  description: string;
  parameters?: { retry_after?: number; migrate_to_chat_id?: number };
}

/**
 * The one place that turns a Telegram answer into a typed error. Telegram gives no
 * machine-readable sub-codes, so the description is matched here and nowhere else.
 */
export function classifyAnswer(method: string, a: TelegramAnswer): TelegramApiError {
  const d = scrubSecrets(a.description ?? '');
  const code = a.error_code;
  if (code === 429) {
    const fromText = /retry after (\d+)/i.exec(d);
    const retry = a.parameters?.retry_after ?? (fromText ? Number(fromText[1]) : 1);
    return new TelegramRateLimited(method, d, Math.max(1, Math.ceil(retry)));
  }
  if (code === 401) return new TelegramUnauthorized(method, d);
  if (code >= 500) return new TelegramTransient(method, code, d, 'server_error');
  // eslint-disable-next-line @typescript-eslint/no-unnecessary-type-conversion -- the id comes straight from Telegram's JSON: the type is what we expect, Number() what we defend with
  if (a.parameters?.migrate_to_chat_id !== undefined) return new TelegramMigrated(method, d, Number(a.parameters.migrate_to_chat_id));
  if (code === 403) {
    if (/blocked by the user/i.test(d)) return new TelegramPermanent(method, code, d, 'blocked');
    if (/deactivated/i.test(d)) return new TelegramPermanent(method, code, d, 'deactivated');
    if (/kicked|not a member|have no rights to send/i.test(d)) return new TelegramPermanent(method, code, d, 'kicked');
    return new TelegramPermanent(method, code, d, 'blocked');
  }
  if (code === 400) {
    if (/chat not found|user not found|PEER_ID_INVALID/i.test(d)) return new TelegramPermanent(method, code, d, 'not_found');
    if (/can't parse entities|can't find end|unsupported start tag/i.test(d)) return new TelegramParseError(method, d);
    if (/message caption is too long/i.test(d)) return new TelegramTooLong(method, d, 'caption');
    if (/message is too long|text is too long/i.test(d)) return new TelegramTooLong(method, d, 'text');
    return new TelegramBadRequest(method, code, d);
  }
  if (code === 408 || code === 420) return new TelegramTransient(method, code, d, 'server_error');
  return new TelegramBadRequest(method, code, d);
}

/**
 * Classifies anything a call can throw: telegraf's TelegramError (has `response`),
 * node-fetch failures, aborts (our per-request timeout) and bad bodies.
 */
export function classifyThrown(method: string, e: unknown, timedOut: boolean): TelegramApiError {
  if (e instanceof TelegramApiError) return e;
  const err = e as { name?: string; type?: string; code?: string; message?: string; response?: Partial<TelegramAnswer> };
  if (err && typeof err === 'object' && err.response && typeof err.response.error_code === 'number') {
    return classifyAnswer(method, {
      error_code: err.response.error_code,
      // eslint-disable-next-line @typescript-eslint/no-unnecessary-type-conversion -- a thrown error's response is unchecked JSON: String() keeps a stray non-string description from breaking the classifier
      description: String(err.response.description ?? ''),
      parameters: err.response.parameters,
    });
  }
  const message = scrubSecrets(err?.message ?? String(e));
  if (timedOut || err?.name === 'AbortError' || err?.type === 'aborted') return new TelegramTransient(method, 0, 'request timed out', 'timeout');
  if (err?.type === 'invalid-json') return new TelegramTransient(method, 0, `unreadable answer: ${message}`, 'bad_response');
  const netCode = err?.code ? ` (${err.code})` : '';
  return new TelegramTransient(method, 0, `network error${netCode}: ${message}`, 'network');
}
