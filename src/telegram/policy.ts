import { backoffDelay } from '../limits/backoff';
import { observeThrottle, type FloodOptions, type FloodState } from '../limits/flood';
import {
  TelegramApiError,
  TelegramMigrated,
  TelegramParseError,
  TelegramPermanent,
  TelegramRateLimited,
  TelegramTooLong,
  TelegramTransient,
  TelegramUnauthorized,
  type UnreachableReason,
} from './errors';

/**
 * What to do with each Telegram answer: a pure function from (answer, job, limiter
 * state) to an action. The sender carries the action out; nothing else decides.
 *
 * | answer                                   | action                                                        |
 * |------------------------------------------|---------------------------------------------------------------|
 * | 429, chat near its own limit / lone chat | `throttled` scope chat|group: that chat waits retry_after, its rate is lowered |
 * | 429, several chats, none near its limit  | `throttled` scope global: everyone waits retry_after, the bot rate is lowered |
 * | 400 + migrate_to_chat_id                 | `migrate`: resend to the new chat id                           |
 * | 400 can't parse entities (HTML)          | `plainText`: re-plan the rest of the message as plain text (once) |
 * | 400 message is too long (text)           | `split`: the part split in two                                 |
 * | 403 blocked/kicked/deactivated, chat not found | `failRecipient`: fail now, mark the recipient            |
 * | 401                                      | `halt`: the token is wrong; nobody sends for a while          |
 * | 5xx, network, timeout                    | `retry` after backoff, or `fail` after the last attempt       |
 * | any other 4xx (or a second parse error)  | `fail`: this message can never go out                          |
 *
 * A `retry_after` above `maxRetryAfterMs` is clamped to it (and says so).
 */
export type ThrottleScope = 'chat' | 'group' | 'global';

export type Action =
  | { kind: 'throttled'; scope: ThrottleScope; until: number; retryAfterMs: number; clampedFromMs?: number; flood: FloodState }
  | { kind: 'migrate'; newChatId: number; note: string }
  | { kind: 'plainText'; note: string }
  | { kind: 'split'; note: string }
  | { kind: 'failRecipient'; reason: UnreachableReason; code: string; description: string }
  | { kind: 'halt'; until: number; reason: string }
  | { kind: 'retry'; at: number; delayMs: number; code: string; reason: string }
  | { kind: 'fail'; code: string; reason: string };

export interface PolicyJob {
  chatId: number;
  /** The call that was answered: its method and, for a text, its length. */
  part: { method: string; textLength?: number };
  /** Already re-planned as plain text after a parse error. */
  plain: boolean;
  /** Failed attempts so far (this one not included). */
  attempts: number;
}

export interface PolicyLimits {
  maxAttempts: number;
  retryBaseMs: number;
  retryMaxMs: number;
  /** The longest retry_after obeyed as given (default 1 h); longer ones are clamped. */
  maxRetryAfterMs: number;
  /** How long a 401 stops sending (ms). */
  unauthorizedPauseMs: number;
}

export interface LimiterView {
  now: number;
  /** The chat had (nearly) used its own window when the rejected request went out. */
  chatNearLimit: boolean;
  /** Recent 429s of this process (see limits/flood.ts). */
  flood: FloodState;
  floodOptions?: FloodOptions;
  /** Jitter source for retry backoff (default Math.random). */
  random?: () => number;
}

export function decide(err: TelegramApiError, job: PolicyJob, limits: PolicyLimits, l: LimiterView): Action {
  const now = l.now;
  if (err instanceof TelegramRateLimited) {
    const asked = err.retryAfterMs;
    const retryAfterMs = Math.min(asked, limits.maxRetryAfterMs);
    const { state, scope } = observeThrottle(l.flood, { chatId: job.chatId, at: now, nearLimit: l.chatNearLimit }, l.floodOptions);
    return {
      kind: 'throttled',
      // Negative ids are groups, supergroups and channels (outbox/shard.ts isGroupChat).
      scope: scope === 'global' ? 'global' : job.chatId < 0 ? 'group' : 'chat',
      until: now + retryAfterMs,
      retryAfterMs,
      ...(asked > retryAfterMs ? { clampedFromMs: asked } : {}),
      flood: state,
    };
  }
  if (err instanceof TelegramMigrated) return { kind: 'migrate', newChatId: err.newChatId, note: `group migrated to ${err.newChatId}` };
  if (err instanceof TelegramParseError && !job.plain) return { kind: 'plainText', note: `parse error, sent as plain text: ${err.description}`.slice(0, 200) };
  if (err instanceof TelegramTooLong && err.what === 'text' && job.part.method === 'sendMessage' && (job.part.textLength ?? 0) > 16) {
    return { kind: 'split', note: 'split again: Telegram counted the text as too long' };
  }
  if (err instanceof TelegramPermanent) return { kind: 'failRecipient', reason: err.reason, code: err.code, description: err.description };
  if (err instanceof TelegramUnauthorized)
    return { kind: 'halt', until: now + limits.unauthorizedPauseMs, reason: 'Telegram rejected the bot token (401); fix TELEGRAM_BOT_TOKEN' };
  if (err instanceof TelegramTransient) {
    const attempts = job.attempts + 1;
    if (attempts >= limits.maxAttempts) return { kind: 'fail', code: err.code, reason: `${err.message} (after ${attempts} attempts)` };
    const delayMs = backoffDelay(attempts, limits.retryBaseMs, limits.retryMaxMs, l.random);
    return { kind: 'retry', at: now + delayMs, delayMs, code: err.code, reason: err.message };
  }
  // Bad request (or a parse error after the plain-text fallback, or a caption too long).
  return { kind: 'fail', code: err.code, reason: err.message };
}
