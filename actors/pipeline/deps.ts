import type { Logger } from '../../src/log';
import type { Metrics } from '../../src/metrics';
import type { GlobalGate, Clock } from '../../src/limits/global-gate';
import type { WindowLimit } from '../../src/limits/window';
import { isGroupChat } from '../../src/outbox/shard';
import type { OutboxRepository } from '../../src/outbox/repository';
import type { RecipientDirectory } from '../../src/outbox/recipients';
import type { BufferBook } from '../../src/outbox/buffer-book';
import type { Planner } from '../../src/outbox/plan';
import type { TelegramClient } from '../../src/telegram/client';
import type { OutcomeEvent } from '../../src/nats/payloads';
import type { HandoffStore } from '../../src/cluster/handoff';
import type { Outcome } from '../../src/outbox/types';
import type { PolicyLimits } from '../../src/telegram/policy';
import type { ClaimLeases, ShardLeaseGuard } from '../../src/outbox/send-guard';
import type { SentHere } from '../../src/outbox/chat-queues';
import { DEFAULTS } from '../../src/config/core';

/** Settings of the delivery pipeline, taken from Config. */
export interface PipelineSettings {
  chatLimit: WindowLimit;
  groupLimit: WindowLimit;
  maxAttempts: number;
  retryBaseMs: number;
  retryMaxMs: number;
  /** The longest Telegram retry_after obeyed as given (ms; default 1 h); longer ones are clamped and logged. */
  maxRetryAfterMs?: number;
  claimBatch: number;
  claimLeaseMs: number;
  pollMs: number;
  /** Max rows of one chat in memory = its rate × this many seconds. */
  chatBufferSeconds: number;
  /** Max claimed rows in memory for the whole process. */
  maxBuffered: number;
  outcomeFlushMs: number;
  outcomeFlushMax: number;
  /** How long a drain (shutdown, handoff) waits for in-flight sends before giving rows back anyway. */
  drainTimeoutMs: number;
}

/** The window a chat is held to: groups (negative ids) per minute, private chats per second. */
export function chatLimitOf(settings: Pick<PipelineSettings, 'chatLimit' | 'groupLimit'>, chatId: number): WindowLimit {
  return isGroupChat(chatId) ? settings.groupLimit : settings.chatLimit;
}

/** Messages per millisecond a chat may receive. */
export function chatRatePerMs(settings: Pick<PipelineSettings, 'chatLimit' | 'groupLimit'>, chatId: number): number {
  const l = chatLimitOf(settings, chatId);
  return l.count / l.windowMs;
}

/** The limits the Telegram answer policy applies, from the settings (an invalid token pauses everything for a minute). */
export function policyLimitsOf(settings: PipelineSettings): PolicyLimits {
  return {
    maxAttempts: settings.maxAttempts,
    retryBaseMs: settings.retryBaseMs,
    retryMaxMs: settings.retryMaxMs,
    maxRetryAfterMs: settings.maxRetryAfterMs ?? DEFAULTS.TELEGRAM_MAX_RETRY_AFTER_MS,
    unauthorizedPauseMs: 60_000,
  };
}

/** Everything the pipeline's actors share, injected once by the composition root. */
export interface PipelineDeps {
  settings: PipelineSettings;
  log: Logger;
  metrics: Metrics;
  clock: Clock;
  repo: OutboxRepository;
  telegram: TelegramClient;
  gate: GlobalGate;
  recipients: RecipientDirectory;
  book: BufferBook;
  planner: Planner;
  /** Publishes an event (NATS core); never throws. */
  publishOutcome: (e: OutcomeEvent) => void;
  /** Sees every outcome once its batch committed (the role logs failures and fallbacks from it); never throws. */
  observeOutcome?: (o: Outcome, chatId: number | undefined) => void;
  publishRecipientChanged: (chatId: number, status: string, migratedTo: number | null) => void;
  /** Telegram says the whole bot is flooded: lower the bot rate, tell the other processes (cluster budget). */
  /** `atMs`: when the 429 was answered (the cluster counts accepted sends in the window ending then). */
  onBotFlood: (untilMs: number, atMs?: number) => void;
  /** Chats whose rate a 429 lowered, process-wide (chat id → per second); read by metrics. */
  lowered: Map<number, number>;
  /** Carries chat windows to a shard's next owner (the cluster replaces the no-op one). */
  handoff: HandoffStore;
  /** Asked before each send: may this process still send for the shard (its lease, as last renewed)? Alone: always. */
  shardLease: ShardLeaseGuard;
  /** The claim leases this process can vouch for: the claimer records its extensions, senders ask before each send. */
  claimLeases: ClaimLeases;
  /** Rows Telegram took from this process recently, across its senders: never sent twice from here. */
  sentHere: SentHere;
}
