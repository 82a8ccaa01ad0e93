import type { Knex } from 'knex';
import { MAX_CHAT_ID, type EnqueueRequest } from '../nats/payloads';
import { AppError } from '../errors';
import { withDeadlockRetry } from '../db/retry';
import { shardOf } from './shard';
import type { Outcome, OutboxRow, Progress } from './types';

const COLUMNS = 'id, telegram_id, message_text, parse_mode, kind, order_id, priority, attempts, retry_count, shard, created_at, progress';

interface RawRow {
  id: number;
  telegram_id: number | string;
  message_text: string;
  parse_mode: string | null;
  kind: string | null;
  order_id: number | string | null;
  priority: number;
  attempts: number;
  retry_count: number;
  shard: number;
  created_at: Date;
  progress: string | null;
}

export interface ClaimRequest {
  shards: readonly number[];
  limit: number;
  leaseMs: number;
  /** Rows already held in memory per chat; the claim tops each chat up to `perChatCap`. */
  buffered: ReadonlyMap<number, number>;
  perChatCap: (chatId: number) => number;
}

/**
 * All SQL of the delivery pipeline. Every statement is fenced by `owner` where it
 * touches claimed rows, so a process that lost its lease cannot write outcomes over
 * the new owner's.
 */
export class OutboxRepository {
  constructor(
    private readonly db: Knex,
    /** Unique per process run: `<instance>:<boot id>`. */
    readonly owner: string,
    private readonly shardCount: number,
  ) {}

  /**
   * Claims due rows of the given shards, highest priority then oldest, skipping rows
   * locked by another claimer, chats whose buffer is full, and any row that would
   * overtake an earlier row of its chat that waits on a retry or is held by another
   * process. One transaction: candidates without locks, then SELECT … FOR UPDATE SKIP LOCKED of
   * those by primary key, each chat's oldest pending row, UPDATE, COMMIT (docs/architecture.md, Claiming).
   *
   * Rows held by this process may be overtaken (that is how a chat's buffer is topped up):
   * the pipeline keeps every row it holds in a shard queued in that shard's one sender,
   * which sorts the new rows behind them. A shard fenced and taken back is claimed for
   * again only once its old sender has given its rows back (docs/architecture.md, Ordering).
   */
  async claim(req: ClaimRequest): Promise<OutboxRow[]> {
    const fetchedAt = Date.now();
    if (req.shards.length === 0 || req.limit <= 0) return [];
    const full = [...req.buffered].filter(([chat, n]) => n >= req.perChatCap(chat)).map(([chat]) => chat);
    // READ COMMITTED: the locking read takes no gap locks, so producers' INSERTs never wait
    // on (or deadlock with) a claim. SKIP LOCKED still keeps two claimers apart.
    return this.db.transaction(
      async (trx) => {
        const marks = req.shards.map(() => '?').join(',');
        let excl = '';
        if (full.length > 0) excl = ` AND t.telegram_id NOT IN (${full.map(() => '?').join(',')})`;
        // First the candidates, without locks. A locking read walks ix_tn_claim_all (claim order, every shard's rows)
        // and keeps each row it reads locked until commit, other processes' rows included: their claims then skipped
        // the first rows of their own chats, so every chat sat the claim out and they claimed nothing for as long as
        // another process kept claiming (a process given shards at a cluster's formation: 0 rows for 4-6 s).
        // A row may not overtake an earlier row of its chat that waits on a retry or that another process holds:
        // per chat, the first such row is a barrier, computed once over the shards' rows (a chat's rows are all
        // in its shard). As a NOT EXISTS per candidate the optimizer scanned every row other processes held for
        // each candidate: 1,000 rows took 1-2 s while three processes claimed 9,000 rows at once.
        const [candidates] = (await trx.raw(
          `SELECT t.id FROM telegram_notifications t
          LEFT JOIN (SELECT b.telegram_id, MIN(b.id) AS barrier FROM telegram_notifications b
                WHERE b.shard IN (${marks})
                  AND ((b.status = 'pending' AND b.next_attempt_at > NOW(3)) OR (b.status = 'claimed' AND b.claimed_by <> ?))
                GROUP BY b.telegram_id) x ON x.telegram_id = t.telegram_id
          WHERE t.status = 'pending' AND t.shard IN (${marks}) AND t.next_attempt_at <= NOW(3)${excl}
            AND EXISTS (SELECT 1 FROM shard_owners o WHERE o.shard = t.shard AND o.owner = ?)
            AND (x.barrier IS NULL OR t.id < x.barrier)
          ORDER BY t.priority DESC, t.id LIMIT ?`,
          [...req.shards, this.owner, ...req.shards, ...full, this.owner, req.limit],
        )) as [Array<{ id: number }>];
        if (candidates.length === 0) return [];
        // Then lock those (by primary key), still pending, due and ours. A barrier that appeared since (a retry of
        // an earlier row written meanwhile) makes that row the chat's oldest pending one: the check below leaves
        // the chat out. Another process cannot hold an earlier row meanwhile: the shard is ours (checked here).
        const [selected] = (await trx.raw(
          `SELECT ${COLUMNS.split(', ')
            .map((c) => `t.${c}`)
            .join(', ')} FROM telegram_notifications t FORCE INDEX (PRIMARY)
          WHERE t.id IN (${candidates.map(() => '?').join(',')}) AND t.status = 'pending' AND t.next_attempt_at <= NOW(3)
            AND EXISTS (SELECT 1 FROM shard_owners o WHERE o.shard = t.shard AND o.owner = ?)
          ORDER BY t.priority DESC, t.id
          FOR UPDATE SKIP LOCKED`,
          [...candidates.map((r) => r.id), this.owner],
        )) as [RawRow[]];
        // Rows written straight into the table (legacy producers) are not checked at any edge:
        // a chat id beyond Telegram's range or an order id beyond 2^53 − 1 would be rounded by
        // Number() and sent to another chat, or with another order's photos. Fail them, unsent.
        const unsafe = selected.filter((r) => outOfRange(r) !== undefined);
        const rows = unsafe.length === 0 ? selected : selected.filter((r) => outOfRange(r) === undefined);
        for (const r of unsafe) {
          await trx.raw(
            "UPDATE telegram_notifications SET status = 'failed', error_code = 'BAD_PAYLOAD', error_message = ?, claimed_by = NULL, claim_expires_at = NULL WHERE id = ?",
            [`${outOfRange(r)!}; not sent`, r.id],
          );
        }
        // SKIP LOCKED also skips a row that some other statement (a lease renewal, a takeover)
        // happens to hold locked for a moment; claiming that chat's later rows now would let
        // them overtake it. A chat whose oldest pending row was not returned sits this claim out.
        const firstClaimed = new Map<number, number>();
        for (const r of rows) {
          const chat = Number(r.telegram_id);
          const id = r.id;
          if (!firstClaimed.has(chat) || id < firstClaimed.get(chat)!) firstClaimed.set(chat, id);
        }
        const skipped = new Set<number>();
        if (firstClaimed.size > 0) {
          const chats = [...firstClaimed.keys()];
          const [firsts] = (await trx.raw(
            `SELECT telegram_id, MIN(id) AS first FROM telegram_notifications
            WHERE status = 'pending' AND telegram_id IN (${chats.map(() => '?').join(',')}) GROUP BY telegram_id`,
            chats,
          )) as [Array<{ telegram_id: number | string; first: number }>];
          for (const f of firsts) {
            const chat = Number(f.telegram_id);
            if (f.first < firstClaimed.get(chat)!) skipped.add(chat);
          }
        }
        // Top each chat up to its cap; the rest stay pending (unlocked at commit).
        const counts = new Map<number, number>();
        const keep: RawRow[] = [];
        for (const r of rows) {
          if (skipped.has(Number(r.telegram_id))) continue;
          const chat = Number(r.telegram_id);
          const n = (counts.get(chat) ?? req.buffered.get(chat) ?? 0) + 1;
          if (n > req.perChatCap(chat)) continue;
          counts.set(chat, n);
          keep.push(r);
        }
        if (keep.length === 0) return [];
        await trx.raw(
          `UPDATE telegram_notifications SET status = 'claimed', claimed_by = ?, claim_expires_at = NOW(3) + INTERVAL ? MICROSECOND
          WHERE id IN (${keep.map(() => '?').join(',')})`,
          [this.owner, req.leaseMs * 1000, ...keep.map((r) => r.id)],
        );
        return keep.map((r) => toRow(r, fetchedAt));
      },
      { isolationLevel: 'read committed' },
    );
  }

  /**
   * Records this process as the owner of `shards` (the fencing row the claim checks) and
   * makes rows another process still holds in them claimable: that process lost its
   * lease, so it has stopped sending. Returns rows taken over and the previous owners.
   */
  async takeShards(shards: readonly number[]): Promise<{ reclaimed: number; previous: Map<number, string | null> }> {
    if (shards.length === 0) return { reclaimed: 0, previous: new Map() };
    const marks = shards.map(() => '?').join(',');
    // READ COMMITTED (no gap locks, non-matching rows unlocked at once), and retried: a
    // deadlock with another process's claim must not leave shards leased but unfenced.
    return withDeadlockRetry(() =>
      this.db.transaction(
        async (trx) => {
          const [prev] = (await trx.raw(`SELECT shard, owner FROM shard_owners WHERE shard IN (${marks}) FOR UPDATE`, [...shards])) as [
            Array<{ shard: number; owner: string | null }>,
          ];
          await trx.raw(
            `INSERT INTO shard_owners (shard, owner, epoch, acquired_at) VALUES ${shards.map(() => '(?, ?, 1, NOW(3))').join(',')}
          ON DUPLICATE KEY UPDATE owner = VALUES(owner), epoch = epoch + 1, acquired_at = VALUES(acquired_at)`,
            shards.flatMap((s) => [s, this.owner]),
          );
          const [res] = (await trx.raw(
            `UPDATE telegram_notifications SET status = 'pending', claimed_by = NULL, claim_expires_at = NULL
          WHERE status = 'claimed' AND shard IN (${marks}) AND claimed_by <> ?`,
            [...shards, this.owner],
          )) as [{ affectedRows: number }];
          return { reclaimed: res.affectedRows, previous: new Map(prev.map((r) => [r.shard, r.owner])) };
        },
        { isolationLevel: 'read committed' },
      ),
    );
  }

  /** Gives up the fencing rows of `shards` (after their rows were released). */
  async dropShards(shards: readonly number[]): Promise<void> {
    if (shards.length === 0) return;
    await this.db.raw(`UPDATE shard_owners SET owner = NULL WHERE owner = ? AND shard IN (${shards.map(() => '?').join(',')})`, [this.owner, ...shards]);
  }

  /** Cheap check (one indexed statement) whether any owned shard has due rows. */
  async hasDue(shards: readonly number[]): Promise<boolean> {
    if (shards.length === 0) return false;
    const [rows] = (await this.db.raw(
      `SELECT 1 AS x FROM telegram_notifications WHERE status = 'pending' AND shard IN (${shards.map(() => '?').join(',')}) AND next_attempt_at <= NOW(3) LIMIT 1`,
      [...shards],
    )) as [unknown[]];
    return rows.length > 0;
  }

  /** Rows this process holds for `shards` (after a sender restart). */
  async loadClaimed(shards: readonly number[]): Promise<OutboxRow[]> {
    const fetchedAt = Date.now();
    if (shards.length === 0) return [];
    // The lease left is a duration read on the database's clock: the sender counts it from `fetchedAt`.
    const [rows] = (await this.db.raw(
      `SELECT ${COLUMNS}, TIMESTAMPDIFF(MICROSECOND, NOW(3), claim_expires_at) AS lease_left_us
      FROM telegram_notifications WHERE claimed_by = ? AND status = 'claimed' AND shard IN (${shards.map(() => '?').join(',')}) ORDER BY id`,
      [this.owner, ...shards],
    )) as [Array<RawRow & { lease_left_us: number | string | null }>];
    return rows.map((r) => ({ ...toRow(r, fetchedAt), leaseLeftMs: Math.max(0, Number(r.lease_left_us ?? 0) / 1000) }));
  }

  /**
   * Of `ids`, the rows this process still holds, with the claim lease left on each (ms, read
   * on the database's clock). A sender asks before it sends a row whose lease it can no longer
   * vouch for (a stall past CLAIM_LEASE_MS): a row not listed was freed meanwhile.
   */
  async claimLeft(ids: readonly number[]): Promise<Map<number, number>> {
    if (ids.length === 0) return new Map();
    const [rows] = (await this.db.raw(
      `SELECT id, TIMESTAMPDIFF(MICROSECOND, NOW(3), claim_expires_at) AS left_us FROM telegram_notifications
      WHERE id IN (${ids.map(() => '?').join(',')}) AND claimed_by = ? AND status = 'claimed'`,
      [...ids, this.owner],
    )) as [Array<{ id: number; left_us: number | string | null }>];
    return new Map(rows.map((r) => [r.id, Math.max(0, Number(r.left_us ?? 0) / 1000)]));
  }

  /** Extends the lease of every row this process holds. One statement. */
  async renewLeases(leaseMs: number): Promise<number> {
    const [res] = (await this.db.raw(
      "UPDATE telegram_notifications SET claim_expires_at = NOW(3) + INTERVAL ? MICROSECOND WHERE claimed_by = ? AND status = 'claimed'",
      [leaseMs * 1000, this.owner],
    )) as [{ affectedRows: number }];
    return res.affectedRows;
  }

  /**
   * Makes rows whose lease expired (their process died) claimable again. Not this process's
   * own: it is alive, its next renewal extends them, and freeing them under its own senders
   * (after a stall past the lease) would only let a row go twice.
   */
  async reapExpired(): Promise<number> {
    const [res] = (await this.db.raw(
      "UPDATE telegram_notifications SET status = 'pending', claimed_by = NULL, claim_expires_at = NULL WHERE status = 'claimed' AND claim_expires_at < NOW(3) AND claimed_by <> ?",
      [this.owner],
    )) as [{ affectedRows: number }];
    return res.affectedRows;
  }

  /** Gives back rows (all this process holds when `ids` is omitted). */
  async release(ids?: readonly number[], shards?: readonly number[]): Promise<number> {
    if (ids && ids.length === 0) return 0;
    let where = "claimed_by = ? AND status = 'claimed'";
    const params: Knex.RawBinding[] = [this.owner];
    if (ids) {
      where += ` AND id IN (${ids.map(() => '?').join(',')})`;
      params.push(...ids);
    }
    if (shards) {
      if (shards.length === 0) return 0;
      where += ` AND shard IN (${shards.map(() => '?').join(',')})`;
      params.push(...shards);
    }
    const [res] = (await this.db.raw(
      `UPDATE telegram_notifications SET status = 'pending', claimed_by = NULL, claim_expires_at = NULL WHERE ${where}`,
      params,
    )) as [{ affectedRows: number }];
    return res.affectedRows;
  }

  /**
   * Writes a batch of outcomes in ONE statement (UPDATE … SET col = CASE id …), fenced
   * by ownership. Returns how many rows were still ours.
   */
  async writeOutcomes(outcomes: readonly Outcome[]): Promise<number> {
    if (outcomes.length === 0) return 0;
    // One outcome per id: the last one wins. Each is made storable first (see sanitizeOutcome).
    const byId = new Map<number, Outcome>();
    for (const o of outcomes) if (Number.isSafeInteger(o.id) && o.id > 0) byId.set(o.id, sanitizeOutcome(o));
    if (byId.size === 0) return 0;
    const list = [...byId.values()];
    const sets: string[] = [];
    const params: Knex.RawBinding[] = [];
    const column = (name: string, value: (o: Outcome) => { sql: string; params?: Knex.RawBinding[] } | undefined): void => {
      const whens: string[] = [];
      const p: Knex.RawBinding[] = [];
      for (const o of list) {
        const v = value(o);
        if (!v) continue;
        whens.push(`WHEN ? THEN ${v.sql}`);
        p.push(o.id, ...(v.params ?? []));
      }
      if (whens.length === 0) return;
      sets.push(`${name} = CASE id ${whens.join(' ')} ELSE ${name} END`);
      params.push(...p);
    };
    const lit = (v: Knex.RawBinding) => ({ sql: '?', params: [v] });
    const date = (ms: number) => ({ sql: '?', params: [new Date(ms)] });
    column('status', (o) => (o.kind === 'sent' ? lit('sent') : o.kind === 'failed' ? lit('failed') : o.kind === 'release' ? lit('pending') : undefined));
    column('sent', (o) => (o.kind === 'sent' ? lit(1) : undefined));
    column('sent_at', (o) => (o.kind === 'sent' ? date(o.at) : undefined));
    column('attempts', (o) => (o.kind === 'sent' || o.kind === 'failed' || o.kind === 'retry' ? lit(o.attempts) : undefined));
    column('retry_count', (o) => (o.kind === 'sent' || o.kind === 'failed' || o.kind === 'retry' ? lit(o.retryCount) : undefined));
    column('next_attempt_at', (o) => (o.kind === 'retry' ? date(o.nextAttemptAt) : undefined));
    column('error_code', (o) => (o.kind === 'failed' || o.kind === 'retry' ? lit(o.code) : o.kind === 'sent' ? lit(null) : undefined));
    column('error_message', (o) => (o.kind === 'failed' || o.kind === 'retry' ? lit(o.reason) : undefined));
    column('notes', (o) => ((o.kind === 'sent' || o.kind === 'failed' || o.kind === 'progress') && o.notes ? lit(o.notes) : undefined));
    column('progress', (o) => ('progress' in o && o.progress ? lit(JSON.stringify(o.progress)) : undefined));
    column('claimed_by', (o) => (o.kind === 'sent' || o.kind === 'failed' || o.kind === 'release' ? lit(null) : undefined));
    column('claim_expires_at', (o) => (o.kind === 'sent' || o.kind === 'failed' || o.kind === 'release' ? lit(null) : undefined));
    const [res] = (await this.db.raw(
      `UPDATE telegram_notifications SET ${sets.join(', ')} WHERE id IN (${list.map(() => '?').join(',')}) AND claimed_by = ? AND status = 'claimed'`,
      [...params, ...list.map((o) => o.id), this.owner],
    )) as [{ affectedRows: number }];
    return res.affectedRows;
  }

  /**
   * Inserts a notification (the `notify.enqueue` path). With an idempotency key (compared
   * byte for byte, see migration 0024): a repeat of the same notification returns the first
   * row's id with `duplicate: true` and inserts nothing; the same key with a different
   * chat, text, parse_mode, kind or order throws IDEMPOTENCY_CONFLICT naming the fields
   * (priority is not compared: it orders delivery, it does not change the message).
   */
  async insert(req: EnqueueRequest): Promise<{ id: number; shard: number; duplicate: boolean }> {
    const shard = shardOf(req.chat_id, this.shardCount);
    const row = {
      telegram_id: req.chat_id,
      message_text: req.text,
      parse_mode: req.parse_mode === undefined ? 'HTML' : req.parse_mode,
      kind: req.kind ?? null,
      order_id: req.order_id ?? null,
      priority: req.priority ?? (req.kind === 'new_order' ? 10 : 0),
      idempotency_key: req.idempotency_key ?? null,
    };
    try {
      const [id] = await this.db('telegram_notifications').insert(row);
      return { id: Number(id), shard, duplicate: false };
    } catch (e) {
      if ((e as { code?: string }).code === 'ER_DUP_ENTRY' && req.idempotency_key) {
        const existing = await this.db('telegram_notifications').where({ idempotency_key: req.idempotency_key }).first<
          | {
              id: number;
              shard: number;
              telegram_id: number | string;
              message_text: string;
              parse_mode: string | null;
              kind: string | null;
              order_id: number | string | null;
            }
          | undefined
        >('id', 'shard', 'telegram_id', 'message_text', 'parse_mode', 'kind', 'order_id');
        if (existing) {
          const differing: string[] = [];
          if (Number(existing.telegram_id) !== row.telegram_id) differing.push('chat_id');
          if (existing.message_text !== row.message_text) differing.push('text');
          if (existing.parse_mode !== row.parse_mode) differing.push('parse_mode');
          if (existing.kind !== row.kind) differing.push('kind');
          if ((existing.order_id === null ? null : Number(existing.order_id)) !== row.order_id) differing.push('order_id');
          if (differing.length > 0) {
            throw new AppError(
              'IDEMPOTENCY_CONFLICT',
              `idempotency_key is already used by notification ${existing.id} with a different ${differing.join(', ')}; use a new key for a new notification`,
              { id: existing.id, fields: differing },
            );
          }
          return { id: existing.id, shard: existing.shard, duplicate: true };
        }
      }
      throw e;
    }
  }
}

/**
 * An outcome every column accepts: counters are whole numbers in INT UNSIGNED range, times
 * are valid dates, `error_code` fits VARCHAR(32), notes fit VARCHAR(255) (cut on a code
 * point). A value that MariaDB would refuse would otherwise fail the whole batch, again
 * and again, and hold back every other outcome.
 */
export function sanitizeOutcome(o: Outcome): Outcome {
  const count = (n: number): number => (Number.isFinite(n) ? Math.min(4_294_967_295, Math.max(0, Math.trunc(n))) : 0);
  const time = (ms: number): number => (Number.isFinite(ms) && ms > 0 && ms < 253_402_300_799_000 ? ms : Date.now());
  const cut = (s: string | undefined, n: number): string | undefined => (s === undefined ? undefined : Array.from(s).slice(0, n).join(''));
  const progress = (p: Progress | undefined): Progress | undefined =>
    p === undefined ? undefined : { done: count(p.done), total: count(p.total), ...(p.plain ? { plain: true } : {}) };
  switch (o.kind) {
    case 'sent':
      return { ...o, at: time(o.at), attempts: count(o.attempts), retryCount: count(o.retryCount), notes: cut(o.notes, 255), progress: progress(o.progress) };
    case 'failed':
      return {
        ...o,
        at: time(o.at),
        attempts: count(o.attempts),
        retryCount: count(o.retryCount),
        code: cut(o.code, 32)!,
        reason: cut(o.reason, 2000)!,
        notes: cut(o.notes, 255),
        progress: progress(o.progress),
      };
    case 'retry':
      return {
        ...o,
        attempts: count(o.attempts),
        retryCount: count(o.retryCount),
        nextAttemptAt: time(o.nextAttemptAt),
        code: cut(o.code, 32)!,
        reason: cut(o.reason, 2000)!,
        progress: progress(o.progress),
      };
    case 'progress':
      return { ...o, progress: progress(o.progress)!, notes: cut(o.notes, 255) };
    case 'release':
      return o;
  }
}

/**
 * The same outcome with only what changes the row's state (status, sent, times, counters,
 * ownership): no notes, reason text or progress. The outcome writer's last try for an
 * outcome MariaDB refused, so the row is not left claimed.
 */
export function minimalOutcome(o: Outcome): Outcome | undefined {
  switch (o.kind) {
    case 'sent':
      return { id: o.id, kind: 'sent', at: o.at, attempts: o.attempts, retryCount: o.retryCount };
    case 'failed':
      return { id: o.id, kind: 'failed', at: o.at, attempts: o.attempts, retryCount: o.retryCount, code: o.code.slice(0, 32), reason: '' };
    case 'retry':
      return { id: o.id, kind: 'retry', attempts: o.attempts, retryCount: o.retryCount, nextAttemptAt: o.nextAttemptAt, code: o.code.slice(0, 32), reason: '' };
    case 'progress':
      return undefined;
    case 'release':
      return o;
  }
}

/**
 * True when MariaDB refused the statement for its data (SQLSTATE class 22: out of range,
 * too long, bad date; class 23: constraint) — retrying the same values cannot succeed.
 * Connection loss, lock waits and deadlocks are not data errors: they are retried.
 */
export function isDataError(e: unknown): boolean {
  const state = (e as { sqlState?: unknown } | undefined)?.sqlState;
  return typeof state === 'string' && (state.startsWith('22') || state.startsWith('23'));
}

/** Why a row's numbers cannot be used exactly (mysql2 hands BIGINTs beyond 2^53 − 1 over as strings), or undefined. */
function outOfRange(r: RawRow): string | undefined {
  const chat = Number(r.telegram_id);
  if (!Number.isSafeInteger(chat) || Math.abs(chat) > MAX_CHAT_ID)
    return `telegram_id ${String(r.telegram_id)} is outside Telegram's range (|id| <= ${MAX_CHAT_ID})`;
  if (r.order_id !== null && !Number.isSafeInteger(Number(r.order_id))) return `order_id ${String(r.order_id)} is above ${Number.MAX_SAFE_INTEGER}`;
  return undefined;
}

function toRow(r: RawRow, fetchedAt: number): OutboxRow {
  let progress: Progress | null = null;
  if (r.progress) {
    try {
      progress = JSON.parse(r.progress) as Progress;
    } catch {
      progress = null;
    }
  }
  return {
    id: r.id,
    chatId: Number(r.telegram_id),
    text: r.message_text,
    parseMode: r.parse_mode,
    kind: r.kind,
    orderId: r.order_id === null ? null : Number(r.order_id),
    priority: r.priority,
    attempts: r.attempts,
    retryCount: r.retry_count,
    shard: r.shard,
    createdAt: r.created_at instanceof Date ? r.created_at.getTime() : Date.parse(String(r.created_at)),
    progress,
    plainText: progress?.plain === true,
    fetchedAt,
  };
}
