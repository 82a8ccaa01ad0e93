/** A claimed outbox row, as the sender needs it. */
export interface OutboxRow {
  id: number;
  chatId: number;
  text: string;
  parseMode: string | null;
  kind: string | null;
  orderId: number | null;
  priority: number;
  attempts: number;
  retryCount: number;
  shard: number;
  createdAt: number;
  /** Parts Telegram already accepted in earlier attempts (see Progress). */
  progress: Progress | null;
  /** Set after a parse error: resend as plain text. */
  plainText: boolean;
  /**
   * Local time (ms) at which the claim or reload that produced this copy started. A sender
   * that finished the row after this instant holds a stale copy; a claim that started after
   * the row finished here is a new one (an operator's retry) and is sent.
   */
  fetchedAt: number;
  /** A reload's reading of the claim lease left at `fetchedAt` (ms); absent: a fresh claim (CLAIM_LEASE_MS). */
  leaseLeftMs?: number;
}

/** Stored in telegram_notifications.progress as JSON. */
export interface Progress {
  /** Number of plan parts accepted so far. */
  done: number;
  /** Total parts of the plan when it was recorded. */
  total: number;
  /** The message fell back to plain text after a parse error. */
  plain?: boolean;
}

/** What the outcome writer persists for one row. */
export type Outcome =
  | { id: number; kind: 'sent'; at: number; attempts: number; retryCount: number; notes?: string | undefined; progress?: Progress | undefined }
  | {
      id: number;
      kind: 'failed';
      at: number;
      attempts: number;
      retryCount: number;
      code: string;
      reason: string;
      notes?: string | undefined;
      progress?: Progress | undefined;
    }
  /** Transient failure: stays claimed by us, waiting in memory until `nextAttemptAt`. */
  | { id: number; kind: 'retry'; attempts: number; retryCount: number; nextAttemptAt: number; code: string; reason: string; progress?: Progress | undefined }
  /** Some parts accepted: remember it so a retry resends only the rest. */
  | { id: number; kind: 'progress'; progress: Progress; notes?: string | undefined }
  /** Give the row back (shutdown, shard handed off): pending again, claimable by anyone. */
  | { id: number; kind: 'release' };
