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
