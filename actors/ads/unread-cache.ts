/**
 * Unread-count cache: an LRU of per-user unread message counts. A miss loads the count
 * from `messages`; `messages.created` / `messages.read` events keep cached entries
 * current (users not cached are ignored: their next miss reads the database).
 *
 * A created event whose message id is ≤ the highest id seen by the load is already in
 * the loaded count and is skipped. Entries expire after UNREAD_CACHE_TTL so any drift
 * left by races the events cannot order (a read committed just before a load) heals.
 */
import { LRUCache } from 'lru-cache';
import type { Knex } from '../../src/db/knex';
import type { Metrics } from '../../src/metrics';
import type { MessageCreated, MessagesRead } from '../../src/nats/ads-payloads';
import { assertNever, reply, spawn, Supervision, type ActorRef, type Parent, type ReplyTo } from '../../src/runtime/actor';
import { describeError } from '../../src/errors';

export type UnreadResult = { ok: true; unread: number; cached: boolean } | { ok: false; code: 'UNAVAILABLE'; message: string };

export type UnreadCacheMsg =
  | { type: 'get'; userId: number; replyTo: ReplyTo<UnreadResult> }
  | { type: 'created'; event: MessageCreated }
  | { type: 'read'; event: MessagesRead };

interface Entry {
  count: number;
  /** Highest message id of the user when loaded. */
  watermark: number;
}

export interface UnreadCacheState {
  cache: LRUCache<number, Entry>;
}

export interface UnreadCacheDeps {
  db: Knex;
  metrics: Metrics;
}

export interface UnreadCacheOptions {
  max: number;
  ttlMs: number;
  name?: string;
}

export function spawnUnreadCache(parent: Parent, deps: UnreadCacheDeps, options: UnreadCacheOptions): ActorRef<UnreadCacheMsg> {
  const lookups = deps.metrics.counter<'result'>('ads_unread_lookups_total', 'Unread-count lookups', ['result']);
  const events = deps.metrics.counter<'type' | 'applied'>('ads_unread_events_total', 'Message events seen by the unread cache', ['type', 'applied']);

  return spawn<UnreadCacheState, UnreadCacheMsg>(parent, {
    name: options.name ?? 'unread-cache',
    supervision: Supervision.restartWithBackoff(),
    init: () => ({ cache: new LRUCache<number, Entry>({ max: options.max, ttl: options.ttlMs }) }),
    async receive(state, msg, ctx) {
      switch (msg.type) {
        case 'get': {
          const hit = state.cache.get(msg.userId);
          if (hit) {
            lookups.inc({ result: 'hit' });
            reply(msg.replyTo, { ok: true, unread: hit.count, cached: true });
            return state;
          }
          try {
            const e = await loadUnread(deps.db, msg.userId);
            state.cache.set(msg.userId, e);
            lookups.inc({ result: 'miss' });
            reply(msg.replyTo, { ok: true, unread: e.count, cached: false });
          } catch (err) {
            lookups.inc({ result: 'error' });
            ctx.log.error({ err: describeError(err), userId: msg.userId }, 'unread count load failed');
            reply(msg.replyTo, { ok: false, code: 'UNAVAILABLE', message: 'the unread count could not be loaded; retry later' });
          }
          return state;
        }
        case 'created': {
          const e = state.cache.get(msg.event.recipient_id, { updateAgeOnGet: false });
          const applied = !!e && msg.event.id > e.watermark;
          // Compared with the highest id the load saw, not the last event: events from two site
          // processes may arrive out of id order.
          if (e && applied) e.count += 1;
          events.inc({ type: 'created', applied: String(applied) });
          return state;
        }
        case 'read': {
          const e = state.cache.get(msg.event.recipient_id, { updateAgeOnGet: false });
          if (e) e.count = Math.max(0, e.count - msg.event.count);
          events.inc({ type: 'read', applied: String(!!e) });
          return state;
        }
        default:
          return assertNever(msg);
      }
    },
  });
}

async function loadUnread(db: Knex, userId: number): Promise<Entry> {
  const [rows] = (await db.raw('SELECT COALESCE(SUM(is_read = 0), 0) AS n, COALESCE(MAX(id), 0) AS w FROM messages WHERE recipient_id = ?', [userId])) as unknown as [
    Array<{ n: number | string; w: number | string }>,
  ];
  return { count: Number(rows[0]?.n ?? 0), watermark: Number(rows[0]?.w ?? 0) };
}
