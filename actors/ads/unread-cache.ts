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
import type { UnreadEntry, AdsRepository } from '../../src/ads/repository';
import type { Metrics } from '../../src/metrics';
import type { MessageCreated, MessagesRead } from '../../src/nats/ads-payloads';
import { assertNever, dispatch, reply, spawn, Supervision, type ActorRef, type Parent, type ReplyTo } from '../../src/runtime/actor';
import { describeError } from '../../src/errors';

export type UnreadResult = { ok: true; unread: number; cached: boolean } | { ok: false; code: 'UNAVAILABLE'; message: string };

export type UnreadCacheMsg =
  | { type: 'get'; userId: number; replyTo: ReplyTo<UnreadResult> }
  | { type: 'created'; event: MessageCreated }
  | { type: 'read'; event: MessagesRead }
  | { type: 'loaded'; userId: number; entry?: UnreadEntry; error?: string };

/** A miss being loaded: lookups and events for the user wait for the load, in arrival order. */
interface Loading {
  waiters: Array<ReplyTo<UnreadResult>>;
  events: Array<{ type: 'created'; event: MessageCreated } | { type: 'read'; event: MessagesRead }>;
}

export interface UnreadCacheState {
  cache: LRUCache<number, UnreadEntry>;
  loading: Map<number, Loading>;
}

export interface UnreadCacheDeps {
  repo: Pick<AdsRepository, 'loadUnread'>;
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
    init: () => ({ cache: new LRUCache<number, UnreadEntry>({ max: options.max, ttl: options.ttlMs }), loading: new Map() }),
    // A miss's database load runs outside the mailbox: hits for other users are answered meanwhile.
    receive(state, msg, ctx) {
      const applyCreated = (event: MessageCreated): void => {
        const e = state.cache.get(event.recipient_id, { updateAgeOnGet: false });
        const applied = !!e && event.id > e.watermark;
        // Compared with the highest id the load saw, not the last event: events from two site
        // processes may arrive out of id order.
        if (e && applied) e.count += 1;
        events.inc({ type: 'created', applied: String(applied) });
      };
      const applyRead = (event: MessagesRead): void => {
        const e = state.cache.get(event.recipient_id, { updateAgeOnGet: false });
        if (e) e.count = Math.max(0, e.count - event.count);
        events.inc({ type: 'read', applied: String(!!e) });
      };
      switch (msg.type) {
        case 'get': {
          const hit = state.cache.get(msg.userId);
          if (hit) {
            lookups.inc({ result: 'hit' });
            reply(msg.replyTo, { ok: true, unread: hit.count, cached: true });
            return state;
          }
          const loading = state.loading.get(msg.userId);
          if (loading) {
            loading.waiters.push(msg.replyTo);
            return state;
          }
          state.loading.set(msg.userId, { waiters: [msg.replyTo], events: [] });
          const userId = msg.userId;
          deps.repo.loadUnread(userId).then(
            (entry) => dispatch(ctx.self, { type: 'loaded', userId, entry }),
            (e: unknown) => dispatch(ctx.self, { type: 'loaded', userId, error: describeError(e) }),
          );
          return state;
        }
        case 'loaded': {
          const loading = state.loading.get(msg.userId);
          state.loading.delete(msg.userId);
          if (!loading) return state;
          if (!msg.entry) {
            lookups.inc({ result: 'error' }, loading.waiters.length);
            ctx.log.error({ err: msg.error, userId: msg.userId }, 'unread count load failed');
            for (const w of loading.waiters) reply(w, { ok: false, code: 'UNAVAILABLE', message: 'the unread count could not be loaded; retry later' });
            return state;
          }
          state.cache.set(msg.userId, msg.entry);
          // Events that arrived during the load, in order; the watermark skips those it already counted.
          for (const ev of loading.events) {
            if (ev.type === 'created') applyCreated(ev.event);
            else applyRead(ev.event);
          }
          const entry = state.cache.get(msg.userId, { updateAgeOnGet: false }) ?? msg.entry;
          lookups.inc({ result: 'miss' }, loading.waiters.length);
          for (const w of loading.waiters) reply(w, { ok: true, unread: entry.count, cached: false });
          return state;
        }
        case 'created': {
          const loading = state.loading.get(msg.event.recipient_id);
          if (loading) loading.events.push(msg);
          else applyCreated(msg.event);
          return state;
        }
        case 'read': {
          const loading = state.loading.get(msg.event.recipient_id);
          if (loading) loading.events.push(msg);
          else applyRead(msg.event);
          return state;
        }
        default:
          return assertNever(msg);
      }
    },
  });
}
