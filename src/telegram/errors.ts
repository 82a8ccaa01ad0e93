import { AppError, type ErrorCode } from '../errors';

/**
 * Telegram's answers, classified once (see classify.ts) by what the caller must do:
 *
 * | class                  | code             | what to do                                        |
 * |------------------------|------------------|---------------------------------------------------|
 * | TelegramRateLimited    | TG_RATE_LIMITED  | wait `retryAfterMs`, resend; not a failed attempt |
 * | TelegramTransient      | TG_TRANSIENT     | back off and retry (5xx, network, timeout)        |
 * | TelegramPermanent      | TG_PERMANENT     | fail now, mark the recipient unreachable          |
 * | TelegramParseError     | TG_PARSE_ERROR   | resend once as plain text                         |
 * | TelegramTooLong        | TG_TOO_LONG      | split (text) or shorten (caption)                 |
 * | TelegramMigrated       | TG_MIGRATED      | resend to `newChatId`                             |
 * | TelegramUnauthorized   | TG_UNAUTHORIZED  | the token is wrong: stop sending, loudly          |
 * | TelegramBadRequest     | TG_BAD_REQUEST   | this message can never be sent: fail it           |
 */
export abstract class TelegramApiError extends AppError {
  /** HTTP status / Telegram error_code, or 0 for network failures and timeouts. */
  readonly status: number;
  /** Telegram's description (never contains the token). */
  readonly description: string;
  readonly method: string;

  constructor(code: ErrorCode, status: number, description: string, method: string, details?: Record<string, unknown>) {
    super(code, `${method}: ${status ? `${status} ` : ''}${description}`, { status, ...details });
    this.status = status;
    this.description = description;
    this.method = method;
  }
}

export class TelegramRateLimited extends TelegramApiError {
  constructor(
    method: string,
    description: string,
    readonly retryAfterSec: number,
  ) {
    super('TG_RATE_LIMITED', 429, description, method, { retryAfterSec });
  }
  get retryAfterMs(): number {
    return this.retryAfterSec * 1000;
  }
}

export type TransientReason = 'server_error' | 'network' | 'timeout' | 'bad_response';

export class TelegramTransient extends TelegramApiError {
  constructor(
    method: string,
    status: number,
    description: string,
    readonly reason: TransientReason,
  ) {
    super('TG_TRANSIENT', status, description, method, { reason });
  }
}

/** Why a chat is unreachable; stored in telegram_recipients.status. */
export type UnreachableReason = 'blocked' | 'deactivated' | 'kicked' | 'not_found';

export class TelegramPermanent extends TelegramApiError {
  constructor(
    method: string,
    status: number,
    description: string,
    readonly reason: UnreachableReason,
  ) {
    super('TG_PERMANENT', status, description, method, { reason });
  }
}

export class TelegramParseError extends TelegramApiError {
  constructor(method: string, description: string) {
    super('TG_PARSE_ERROR', 400, description, method);
  }
}

export class TelegramTooLong extends TelegramApiError {
  constructor(
    method: string,
    description: string,
    readonly what: 'text' | 'caption',
  ) {
    super('TG_TOO_LONG', 400, description, method, { what });
  }
}

export class TelegramMigrated extends TelegramApiError {
  constructor(
    method: string,
    description: string,
    readonly newChatId: number,
  ) {
    super('TG_MIGRATED', 400, description, method, { newChatId });
  }
}

export class TelegramUnauthorized extends TelegramApiError {
  constructor(method: string, description: string) {
    super('TG_UNAUTHORIZED', 401, description, method);
  }
}

export class TelegramBadRequest extends TelegramApiError {
  constructor(method: string, status: number, description: string) {
    super('TG_BAD_REQUEST', status, description, method);
  }
}
