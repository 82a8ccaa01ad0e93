/**
 * Every error this system raises on purpose, with a stable string code.
 *
 * Decisions branch on `code` (or the class), never on message text. Codes are
 * part of the public contract: they appear in NATS error replies, HTTP error
 * bodies, logs and metrics labels.
 */
export type ErrorCode =
  // configuration and start-up
  | 'CONFIG_INVALID'
  | 'SCHEMA_MISMATCH'
  /** An existing JetStream stream or KV bucket differs from the configuration (replicas, TTL, subjects). */
  | 'NATS_STREAM_MISMATCH'
  | 'STARTUP_TIMEOUT'
  | 'PORT_IN_USE'
  | 'DEPENDENCY_MISSING'
  // input at the edges (NATS payloads, HTTP bodies)
  | 'BAD_JSON'
  | 'BAD_PAYLOAD'
  /** The idempotency key was already used for a different notification (HTTP 409). */
  | 'IDEMPOTENCY_CONFLICT'
  | 'PAYLOAD_TOO_LARGE'
  | 'UNSUPPORTED_MEDIA_TYPE'
  | 'NOT_FOUND'
  | 'UNAUTHORIZED'
  | 'RATE_LIMITED'
  | 'UNAVAILABLE'
  | 'INTERNAL'
  // Telegram answers, classified once in src/telegram/classify.ts
  | 'TG_RATE_LIMITED'
  | 'TG_TRANSIENT'
  | 'TG_PERMANENT'
  | 'TG_PARSE_ERROR'
  | 'TG_TOO_LONG'
  | 'TG_MIGRATED'
  | 'TG_UNAUTHORIZED'
  | 'TG_BAD_REQUEST'
  // actors
  | 'ACTOR_STOPPED'
  | 'QUERY_TIMEOUT';

export class AppError extends Error {
  readonly code: ErrorCode;
  /** Extra machine-readable fields; never secrets. */
  readonly details: Readonly<Record<string, unknown>> | undefined;

  constructor(code: ErrorCode, message: string, details?: Record<string, unknown>, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
    this.details = details;
  }

  toJSON(): { code: ErrorCode; message: string; details?: Readonly<Record<string, unknown>> } {
    return this.details ? { code: this.code, message: this.message, details: this.details } : { code: this.code, message: this.message };
  }
}

/** A bad environment variable: the message names the variable and the expected form. */
export class ConfigError extends AppError {
  readonly variable: string;
  constructor(variable: string, message: string) {
    super('CONFIG_INVALID', `${variable}: ${message}`, { variable });
    this.variable = variable;
  }
}

/**
 * Start-up could not get what it needs from the outside (a server not reachable within
 * STARTUP_TIMEOUT_MS, a port taken). Names the variable to look at; never carries a secret.
 */
export class StartupError extends AppError {
  readonly variable: string;
  constructor(code: 'STARTUP_TIMEOUT' | 'PORT_IN_USE' | 'DEPENDENCY_MISSING', variable: string, message: string, options?: { cause?: unknown }) {
    super(code, `${variable}: ${message}`, { variable }, options);
    this.variable = variable;
  }
}

/** Input rejected at an edge (NATS payload, HTTP body). Counted, answered, never a crash. */
export class InputError extends AppError {
  // eslint-disable-next-line @typescript-eslint/no-useless-constructor -- not useless: it narrows `code` to the input codes and leaves out `options`
  constructor(code: 'BAD_JSON' | 'BAD_PAYLOAD' | 'PAYLOAD_TOO_LARGE' | 'NOT_FOUND' | 'UNAUTHORIZED', message: string, details?: Record<string, unknown>) {
    super(code, message, details);
  }
}

export function isAppError(e: unknown): e is AppError {
  return e instanceof AppError;
}

/** Best-effort one-line description of anything thrown, for logs and error_message columns. */
export function describeError(e: unknown): string {
  if (e instanceof AppError) return `${e.code}: ${e.message}`;
  if (e instanceof Error) return e.message || e.name;
  return String(e);
}
