import { format } from 'node:util';
import pino, { type DestinationStream, type Logger } from 'pino';

export type { Logger } from 'pino';

const secrets = new Set<string>();

/**
 * Registers a secret value (bot token, NATS password) so it is scrubbed from every
 * log line, wherever it hides (an error message, a URL, a nested object).
 */
export function registerSecret(value: string | undefined): void {
  if (!value || value.length < 4) return;
  secrets.add(value);
  // Scrubbing runs on the serialized JSON line, where `"`, `\` and control characters are escaped.
  const escaped = JSON.stringify(value).slice(1, -1);
  if (escaped !== value) secrets.add(escaped);
}

// Telegram method URLs embed the token: /bot<id>:<secret>/sendMessage.
const TOKEN_IN_URL = /bot\d+:[A-Za-z0-9_-]{20,}/g;

/** Removes registered secrets and anything shaped like a bot token from a string. */
export function scrubSecrets(text: string): string {
  let out = text.replace(TOKEN_IN_URL, 'bot<redacted>');
  for (const s of secrets) if (out.includes(s)) out = out.split(s).join('<redacted>');
  return out;
}

export interface LoggerOptions {
  level: string;
  /** Where lines go; defaults to stdout. Tests pass a capturing stream. */
  destination?: DestinationStream;
  base?: Record<string, unknown>;
}

/** Structured JSON logs (pino). The last step of every line scrubs secrets. */
export function createLogger(opts: LoggerOptions): Logger {
  return pino(
    {
      level: opts.level,
      base: opts.base ?? { pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: { paths: ['token', '*.token', 'password', '*.password', 'authorization', '*.authorization', 'headers.authorization'], censor: '<redacted>' },
      hooks: { streamWrite: scrubSecrets },
      serializers: { err: pino.stdSerializers.err },
    },
    opts.destination ?? pino.destination({ fd: 1, sync: false }),
  );
}

/**
 * The process logger of an entry point: JSON lines on stdout. When stdout closes (the
 * reader of a pipe died: EPIPE), logging stops quietly and `onStdoutClosed` runs once,
 * so the caller can shut down gracefully instead of dying on an uncaught EPIPE.
 */
export function createStdoutLogger(opts: Omit<LoggerOptions, 'destination'> & { onStdoutClosed?: (err: Error) => void }): Logger {
  const dest = pino.destination({ fd: 1, sync: false });
  let closed = false;
  const onError = (e: NodeJS.ErrnoException): void => {
    if (closed) return;
    closed = true;
    opts.onStdoutClosed?.(e);
  };
  // pino's own listener turns the stream into a no-op on EPIPE; ours tells the process.
  dest.on('error', onError);
  // Anything else writing to process.stdout (a library) gets the same treatment.
  process.stdout.on('error', onError);
  return createLogger({ level: opts.level, ...(opts.base ? { base: opts.base } : {}), destination: dest });
}

/**
 * Routes `console.*` through the logger, so that a library printing with console does
 * not break "one JSON object per line" on stdout. Returns a function that restores it.
 */
export function routeConsole(log: Logger): () => void {
  const saved = { log: console.log, info: console.info, debug: console.debug, warn: console.warn, error: console.error, trace: console.trace };
  const to =
    (level: 'debug' | 'info' | 'warn' | 'error') =>
    (...args: unknown[]): void => {
      log[level]({ source: 'console' }, format(...args));
    };
  console.log = to('info');
  console.info = to('info');
  console.debug = to('debug');
  console.trace = to('debug');
  console.warn = to('warn');
  console.error = to('error');
  return () => Object.assign(console, saved);
}

/** knex's `log` option: its warnings, errors and deprecations as JSON lines. */
export function knexLog(log: Logger): {
  warn: (m: unknown) => void;
  error: (m: unknown) => void;
  deprecate: (method: string, alternative: string) => void;
  debug: (m: unknown) => void;
} {
  // One line each: knex appends stacks to some messages.
  const text = (m: unknown): string => (m instanceof Error ? m.message : typeof m === 'string' ? m : format('%o', m)).split('\n')[0] ?? '';
  return {
    // A failed acquire also rejects the query that asked for it, whose caller reports it (with the variable to fix).
    warn: (m) => {
      if (text(m).startsWith('Acquire connection error')) log.debug({ source: 'knex' }, text(m));
      else log.warn({ source: 'knex' }, text(m));
    },
    error: (m) => {
      log.error({ source: 'knex' }, text(m));
    },
    deprecate: (method, alternative) => {
      log.warn({ source: 'knex' }, `${method} is deprecated, use ${alternative}`);
    },
    debug: (m) => {
      log.debug({ source: 'knex' }, text(m));
    },
  };
}
