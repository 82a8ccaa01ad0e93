import type { Logger } from '../log';
import { LogAggregator, type LogAggregatorOptions } from '../log-aggregator';
import type { Outcome } from './types';

/** Recipient states that mean "this chat cannot receive from the bot" (see src/telegram/classify.ts). */
const UNREACHABLE = new Set(['blocked', 'deactivated', 'kicked', 'not_found']);

export interface OutcomeLog {
  /** Every written outcome (deps.observeOutcome). */
  outcome(o: Outcome, chatId: number | undefined): void;
  /** A recipient marked unreachable or migrated (deps.publishRecipientChanged). */
  recipient(chatId: number, status: string, migratedTo: number | null): void;
  /** Writes what is still counted (shutdown). */
  stop(): void;
}

/**
 * What an operator hears about deliveries, at most one line per kind per 10 s with counts:
 * failed notifications (warn; reason and chat id), unreachable recipients (warn), plain-text
 * fallbacks after a parse error and messages split into several parts (info).
 */
export function outcomeLog(log: Logger, opts: LogAggregatorOptions = {}): OutcomeLog {
  const agg = new LogAggregator(log, opts)
    .define('notification failed', 'warn', (n) => (n === 1 ? '1 notification failed' : `${n} notifications failed`))
    .define('recipient unreachable', 'warn', (n) =>
      n === 1
        ? '1 recipient cannot be reached (its notifications fail without a send)'
        : `${n} recipients cannot be reached (their notifications fail without a send)`,
    )
    .define('group migrated', 'info', (n) => `${n} group(s) became supergroups (sent to the new chat id)`)
    .define('plain-text fallback', 'info', (n) => `${n} notification(s) sent as plain text after Telegram refused their formatting`)
    .define('split', 'info', (n) => `${n} notification(s) sent as several messages (long text, or photos)`);
  // A fallback shows on the row's 'progress' outcome; it is logged once, with the row's final outcome.
  const fellBack = new Set<number>();
  return {
    outcome(o, chatId) {
      if (o.kind === 'progress' && o.progress.plain) {
        if (fellBack.size > 10_000) fellBack.clear();
        fellBack.add(o.id);
      }
      if (o.kind === 'failed')
        agg.note('notification failed', {
          reason: `${o.code}: ${o.reason}`.slice(0, 200),
          example: { id: o.id, chatId, code: o.code, reason: o.reason.slice(0, 200), attempts: o.attempts },
        });
      if (o.kind !== 'sent' && o.kind !== 'failed') return;
      const plain = fellBack.delete(o.id) || o.progress?.plain === true;
      if (plain) agg.note('plain-text fallback', { reason: 'parse error', example: { id: o.id, chatId } });
      if (o.kind === 'sent' && o.progress && o.progress.total > 1)
        agg.note('split', { reason: `${o.progress.total} parts`, example: { id: o.id, chatId, parts: o.progress.total } });
    },
    recipient(chatId, status, migratedTo) {
      if (UNREACHABLE.has(status)) agg.note('recipient unreachable', { reason: status, example: { chatId, status } });
      else if (status === 'migrated') agg.note('group migrated', { reason: 'migrated', example: { chatId, migratedTo } });
    },
    stop: () => {
      agg.stop();
    },
  };
}
