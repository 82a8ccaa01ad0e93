import type { Config } from '../config/core';
import { ConfigError } from '../errors';

/** Where a worker's sends go: Telegram, or the in-process sandbox. */
export type TelegramTarget = 'telegram' | 'sandbox';

/**
 * Decides, before any connection is made, whether a worker sends to Telegram or to the
 * in-process sandbox. Without TELEGRAM_BOT_TOKEN the sandbox is used only when asked for
 * (TELEGRAM_SANDBOX=1) or on a development setup (DATABASE_URL unset); a worker pointed
 * at a real database without a token refuses to start, so no pending row is "sent" to a
 * sandbox by mistake.
 */
export function telegramTarget(c: Pick<Config, 'telegramBotToken' | 'telegramSandbox' | 'databaseUrlExplicit'>): TelegramTarget {
  if (c.telegramBotToken) return 'telegram';
  if (c.telegramSandbox === true) return 'sandbox';
  if (c.telegramSandbox === false)
    throw new ConfigError('TELEGRAM_BOT_TOKEN', 'not set, and TELEGRAM_SANDBOX=0 forbids the in-process sandbox: set TELEGRAM_BOT_TOKEN (from @BotFather)');
  if (!c.databaseUrlExplicit) return 'sandbox';
  throw new ConfigError(
    'TELEGRAM_BOT_TOKEN',
    'not set while DATABASE_URL is: refusing to start, so that no notification of that database is "delivered" to the in-process sandbox. Set TELEGRAM_BOT_TOKEN to send to Telegram, or TELEGRAM_SANDBOX=1 to use the sandbox with this database on purpose',
  );
}
