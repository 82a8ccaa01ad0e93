import type { Knex } from 'knex';
import type { Logger } from '../log';
import type { UnreachableReason } from '../telegram/errors';
import { dbErrorFields } from '../db/error-fields';
import { backoffDelay } from '../limits/backoff';

type RecipientRow = {
  chat_id: number | string;
  status: string;
  reason: string | null;
  migrated_to_chat_id: number | string | null;
  unreachable_since: Date | null;
  updated_at: Date;
};

const COLUMNS = ['chat_id', 'status', 'reason', 'migrated_to_chat_id', 'unreachable_since', 'updated_at'] as const;

export interface RecipientInfo {
  status: UnreachableReason | 'migrated';
  reason: string;
  since: number;
  migratedTo: number | null;
}

/**
 * The process's view of telegram_recipients: chats Telegram said are unreachable, and
 * groups that moved. Reads are synchronous (senders consult it before every send);
 * writes update memory at once and the database in the background, retried until they
 * land, so a sender never waits on it.
 */
export class RecipientDirectory {
  private readonly map = new Map<number, RecipientInfo>();
  private pendingWrites = new Set<Promise<void>>();
  /** The last background write per chat (see written()). */
  private lastWrite = new Map<number, Promise<void>>();
  /** Refreshes per chat run one after another, so the last one read wins. */
  private refreshing = new Map<number, Promise<unknown>>();

  constructor(
    private readonly db: Knex,
    private readonly log: Logger,
  ) {}

  async load(): Promise<void> {
    const rows = await this.db('telegram_recipients')
      .whereNot('status', 'ok')
      .select<RecipientRow[]>(...COLUMNS);
    this.map.clear();
    for (const r of rows) this.map.set(Number(r.chat_id), fromRow(r));
  }

  get(chatId: number): RecipientInfo | undefined {
    return this.map.get(chatId);
  }

  /** The chat to send to (follows group → supergroup migrations). */
  target(chatId: number): number {
    let id = chatId;
    for (let hops = 0; hops < 5; hops++) {
      const r = this.map.get(id);
      if (r?.status !== 'migrated' || r.migratedTo === null) return id;
      id = r.migratedTo;
    }
    return id;
  }

  unreachable(chatId: number): RecipientInfo | undefined {
    const r = this.map.get(chatId);
    return r && r.status !== 'migrated' ? r : undefined;
  }

  markUnreachable(chatId: number, status: UnreachableReason, reason: string, code: string): void {
    const since = Date.now();
    this.map.set(chatId, { status, reason, since, migratedTo: null });
    this.persist(chatId, { status, reason: reason.slice(0, 512), error_code: code, migrated_to_chat_id: null, unreachable_since: new Date(since) });
  }

  markMigrated(chatId: number, newChatId: number, reason: string): void {
    this.map.set(chatId, { status: 'migrated', reason, since: Date.now(), migratedTo: newChatId });
    this.persist(chatId, {
      status: 'migrated',
      reason: reason.slice(0, 512),
      error_code: 'TG_MIGRATED',
      migrated_to_chat_id: newChatId,
      unreachable_since: null,
    });
  }

  /**
   * Re-reads one chat from telegram_recipients and applies what the database says. This is
   * what a `notify.recipient.changed` event triggers: the event only says "look again", so a
   * forged or stale event can never redirect or block sends — only the stored row can.
   * Resolves with the status now in effect ('ok' when the chat has no row or an ok row).
   */
  refresh(chatId: number): Promise<RecipientInfo['status'] | 'ok'> {
    const prev = this.refreshing.get(chatId) ?? Promise.resolve();
    const next = prev
      .catch(() => undefined)
      .then(async () => {
        const row = await this.db('telegram_recipients')
          .where({ chat_id: chatId })
          .first<RecipientRow | undefined>(...COLUMNS);
        if (!row || row.status === 'ok') {
          this.map.delete(chatId);
          return 'ok' as const;
        }
        const info = fromRow(row);
        this.map.set(chatId, info);
        return info.status;
      });
    this.refreshing.set(chatId, next);
    void next
      .finally(() => {
        if (this.refreshing.get(chatId) === next) this.refreshing.delete(chatId);
      })
      .catch(() => undefined);
    return next;
  }

  /** Resolves when the last write for `chatId` has landed (or given up): announce a change only after it. */
  async written(chatId: number): Promise<void> {
    await this.lastWrite.get(chatId);
  }

  /** Operator action: the chat is reachable again. */
  async clear(chatId: number): Promise<boolean> {
    this.map.delete(chatId);
    const n = await this.db('telegram_recipients').where({ chat_id: chatId }).update({ status: 'ok', reason: null, error_code: null, unreachable_since: null });
    return n > 0;
  }

  /** Waits for background writes (shutdown). */
  async flush(): Promise<void> {
    while (this.pendingWrites.size > 0) await Promise.allSettled([...this.pendingWrites]);
  }

  get size(): number {
    return this.map.size;
  }

  private persist(chatId: number, row: Record<string, unknown>): void {
    const write = async (): Promise<void> => {
      for (let attempt = 1; ; attempt++) {
        try {
          await this.db('telegram_recipients')
            .insert({ chat_id: chatId, ...row })
            .onConflict('chat_id')
            .merge();
          return;
        } catch (e) {
          this.log.warn({ chatId, attempt, ...dbErrorFields(e) }, 'recipient write failed; retrying');
          await new Promise((r) => setTimeout(r, backoffDelay(attempt, 400, 30_000)));
          if (attempt >= 20) return;
        }
      }
    };
    const p = write().finally(() => {
      this.pendingWrites.delete(p);
      if (this.lastWrite.get(chatId) === p) this.lastWrite.delete(chatId);
    });
    this.pendingWrites.add(p);
    this.lastWrite.set(chatId, p);
  }
}

function fromRow(r: RecipientRow): RecipientInfo {
  return {
    status: r.status as RecipientInfo['status'],
    reason: r.reason ?? r.status,
    since: (r.unreachable_since ?? r.updated_at).getTime(),
    migratedTo: r.migrated_to_chat_id === null ? null : Number(r.migrated_to_chat_id),
  };
}
