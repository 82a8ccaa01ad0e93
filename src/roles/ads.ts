/**
 * The ads roles. `prepareAds` builds the ports of the ads actors (view counter, bump,
 * unread cache) for actors/root.ts and `start` wires the views stream and NATS to them;
 * `startAds` does both under a given parent. `startGatewayRole` runs the HTTP gateway.
 * Both return an idempotent `stop()`; neither owns the database pool or the NATS connection.
 */
import { ConsumerEvents, type ConsumerMessages, type NatsConnection } from 'nats';
import type { Knex } from '../db/knex';
import type { Logger } from '../log';
import type { Metrics } from '../metrics';
import type { AdsConfig } from '../config/ads';
import { ShutdownSequence } from '../lifecycle';
import { describeError } from '../errors';
import { dispatch, query, stop as stopActor, type ActorRef, type Parent } from '../runtime/actor';
import { Subjects } from '../nats/subjects';
import { decoder, encodeJson } from '../nats/codec';
import { NatsIntake } from '../nats/intake';
import { backoffDelay } from '../limits/backoff';
import {
  MessageCreated,
  MessagesRead,
  PendingRequest,
  UnreadRequest,
  BumpRunRequest,
  type BumpRunReply,
  type PendingReply,
  type UnreadReply,
} from '../nats/ads-payloads';
import { ensureViewsConsumer, ensureViewsStream, viewsStreamNames } from '../ads/views-stream';
import { DbLeaseSingleton, type Singleton } from '../ads/singleton';
import { startGateway, type RunningGateway } from '../ads/gateway';
import type { FlushResult, ViewCounterMsg } from '../../actors/ads/view-counter';
import type { BumpMsg, BumpResult } from '../../actors/ads/bump';
import { AdsRepository } from '../ads/repository';
import type { UnreadCacheMsg, UnreadResult } from '../../actors/ads/unread-cache';
import { spawnRoot, type RootDeps, type RootRefs } from '../../actors/root';

export { loadAdsConfig, describeAdsConfig, type AdsConfig } from '../config/ads';
export { buildGateway, startGateway } from '../ads/gateway';
export { DbLeaseSingleton, type Singleton } from '../ads/singleton';

export interface AdsDeps {
  /** The actor system (or an actor) the ads actors are spawned under. */
  parent: Parent;
  db: Knex;
  nc: NatsConnection;
  config: AdsConfig;
  log: Logger;
  metrics: Metrics;
  /** Who runs the bump timer. Default: a `DbLeaseSingleton` named `ads-bump`. */
  singleton?: Singleton;
  /** Which actors to run in this process (those set true); default all three. */
  parts?: { viewCounter?: boolean; bump?: boolean; unread?: boolean };
}

export interface RunningAds {
  viewCounter: ActorRef<ViewCounterMsg> | undefined;
  bump: ActorRef<BumpMsg> | undefined;
  unread: ActorRef<UnreadCacheMsg> | undefined;
  /** Stops intake, flushes pending views (acks after commit), releases the bump lease, stops the actors. Idempotent, never throws. */
  stop(): Promise<void>;
}

const decodePending = decoder(PendingRequest, { maxBytes: 1_024 });
const decodeBumpRun = decoder(BumpRunRequest, { maxBytes: 1_024 });
const decodeUnread = decoder(UnreadRequest, { maxBytes: 1_024 });
const decodeCreated = decoder(MessageCreated, { maxBytes: 4_096 });
const decodeRead = decoder(MessagesRead, { maxBytes: 256 * 1_024 });

/** The ads actors between `prepareAds` and `start` (the steps of actors/root.ts). */
export interface PreparedAds {
  /** The ports of the ads actors this process runs, for `spawnRoot`. */
  readonly actors: Pick<RootDeps, 'viewCounter' | 'bump' | 'unreadCache'>;
  /** Wires the views stream and NATS subjects to the spawned actors. */
  start(refs: RootRefs): Promise<RunningAds>;
}

/** Makes sure the views stream and consumer exist and builds the actors' ports; spawns nothing. */
export async function prepareAds(deps: Omit<AdsDeps, 'parent'>): Promise<PreparedAds> {
  const { config: c, nc, log, metrics } = deps;
  const parts = deps.parts
    ? { viewCounter: !!deps.parts.viewCounter, bump: !!deps.parts.bump, unread: !!deps.parts.unread }
    : { viewCounter: true, bump: true, unread: true };
  const p = c.subjectPrefix;
  const repo = new AdsRepository(deps.db);
  if (parts.viewCounter) {
    const jsm = await nc.jetstreamManager();
    await ensureViewsStream(jsm, c);
    await ensureViewsConsumer(jsm, c);
  }
  const singleton =
    deps.singleton ??
    new DbLeaseSingleton(repo, 'ads-bump', c.instanceId, c.bumpLeaseMs, (e) => log.warn({ err: describeError(e) }, 'bump lease check failed'));
  const actors: PreparedAds['actors'] = {
    ...(parts.viewCounter
      ? { viewCounter: { deps: { repo, log, metrics }, options: { flushMs: c.viewFlushMs, flushMax: c.viewFlushMax, dedupWindowMs: c.viewDedupWindowMs } } }
      : {}),
    ...(parts.bump
      ? {
          bump: {
            deps: {
              repo,
              log,
              metrics,
              singleton,
              instanceId: c.instanceId,
              publishBumped: (e) => {
                try {
                  nc.publish(Subjects.adsBumped(p), encodeJson(e));
                } catch (err) {
                  log.warn({ err: describeError(err) }, 'ads.bumped not published');
                }
              },
            },
            options: { intervalMs: c.bumpIntervalMs, checkMs: c.bumpCheckMs, chunk: c.bumpChunk },
          },
        }
      : {}),
    ...(parts.unread ? { unreadCache: { deps: { repo, metrics }, options: { max: c.unreadCacheMax, ttlMs: c.unreadCacheTtlMs } } } : {}),
  };
  return { actors, start: (refs) => wireAds(deps, refs, singleton) };
}

/** Prepares, spawns (actors/root.ts) and wires the ads actors under `deps.parent`. */
export async function startAds(deps: AdsDeps): Promise<RunningAds> {
  const prepared = await prepareAds(deps);
  return prepared.start(spawnRoot(deps.parent, prepared.actors));
}

async function wireAds(deps: Omit<AdsDeps, 'parent'>, refs: RootRefs, singleton: Singleton): Promise<RunningAds> {
  const { config: c, nc, log, metrics } = deps;
  const p = c.subjectPrefix;
  // One NATS edge: payloads validated, rejections counted in nats_bad_payloads_total, drained on stop.
  const edge = new NatsIntake({ nc, log, metrics });
  // Steps wait up to 30 s (the final view flush); the sequence must not cut them off sooner.
  const shutdown = new ShutdownSequence(log, 35_000);

  // ---- view counter -------------------------------------------------------------
  const viewCounter = refs.viewCounter;
  let intake: ConsumerMessages | undefined;
  let intakeDone: Promise<void> = Promise.resolve();
  let intakeStopping = false;
  if (viewCounter) {
    const counter = viewCounter;
    const n = viewsStreamNames(c);
    const open = async (): Promise<ConsumerMessages> => {
      const consumer = await nc.jetstream().consumers.get(n.stream, n.consumer);
      // Short pulls and heartbeats: after a JetStream leader change a pull the old leader held is gone,
      // and two missed heartbeats (2 s) tell us to pull anew instead of waiting out a 30 s expiry.
      return consumer.consume({ max_messages: Math.max(100, Math.min(c.viewFlushMax, 2_000)), expires: 5_000, idle_heartbeat: 1_000 });
    };
    intake = await open();
    intakeDone = (async () => {
      for (let attempt = 0; !intakeStopping; attempt++) {
        try {
          const messages = intake ?? (await open());
          intake = messages;
          void (async () => {
            for await (const st of await messages.status()) {
              const missed = st.type === ConsumerEvents.HeartbeatsMissed && Number(st.data) >= 2;
              if (missed || st.type === ConsumerEvents.ConsumerNotFound || st.type === ConsumerEvents.ConsumerDeleted) {
                log.warn({ status: st.type, data: st.data }, 'view intake: pulling anew from the consumer');
                messages.stop();
                break;
              }
            }
          })().catch(() => undefined);
          for await (const m of messages) {
            attempt = 0;
            // A stopped counter drops nothing silently: the unacked message is redelivered.
            dispatch(counter, { type: 'delivery', msg: m });
          }
        } catch (e) {
          log.warn({ err: describeError(e) }, 'view intake interrupted; reopening the consumer');
        }
        intake = undefined;
        if (intakeStopping) break;
        await new Promise((r) => setTimeout(r, backoffDelay(attempt + 1, 200, 5_000)));
      }
    })().catch((e: unknown) => {
      log.error({ err: describeError(e) }, 'view intake stopped');
    });
    edge.serve(Subjects.adsPending(p), decodePending, async (req): Promise<PendingReply> => {
      const pending = await query<ViewCounterMsg, number>(counter, (replyTo) => ({ type: 'pending', adId: req.ad_id, replyTo }), 1_000);
      return { instance: c.instanceId, ad_id: req.ad_id, pending };
    });
    log.info({ stream: n.stream, consumer: n.consumer }, 'view counter consuming');
  }

  // ---- bump ---------------------------------------------------------------------
  const bump = refs.bump;
  if (bump) {
    const ref = bump;
    edge.serve(
      Subjects.adsBumpRun(p),
      decodeBumpRun,
      async (): Promise<BumpRunReply> => {
        const r = await query<BumpMsg, BumpResult>(ref, (replyTo) => ({ type: 'run-now', replyTo }), 120_000);
        return r.ok ? { ok: true, run_id: r.runId, bumped: r.bumped } : { ok: false, error: { code: r.code, message: r.message } };
      },
      { queue: 'ads-bump' },
    );
  }

  // ---- unread cache ---------------------------------------------------------------
  const unread = refs.unreadCache;
  if (unread) {
    const ref = unread;
    edge.listen(Subjects.messagesCreated(p), decodeCreated, (event) => void dispatch(ref, { type: 'created', event }));
    edge.listen(Subjects.messagesRead(p), decodeRead, (event) => void dispatch(ref, { type: 'read', event }));
    edge.serve(
      Subjects.adsUnreadGet(p),
      decodeUnread,
      async (req): Promise<UnreadReply> => {
        const r = await query<UnreadCacheMsg, UnreadResult>(ref, (replyTo) => ({ type: 'get', userId: req.user_id, replyTo }), 5_000);
        return r.ok ? { ok: true, user_id: req.user_id, unread: r.unread } : { ok: false, error: { code: r.code, message: r.message } };
      },
      { queue: 'ads-unread' },
    );
  }

  // Subscriptions must reach the server before we report started (tests publish at once).
  await nc.flush();

  shutdown
    .add('stop view intake', async () => {
      intakeStopping = true;
      if (intake) await intake.close();
      await intakeDone;
    })
    .add('drain subscriptions', () => edge.drain())
    .add('flush views', async () => {
      if (!viewCounter) return;
      const r = await query<ViewCounterMsg, FlushResult>(viewCounter, (replyTo) => ({ type: 'flush', replyTo }), 30_000);
      log.info(r, 'final view flush');
    })
    .add('send acks', async () => {
      if (!nc.isClosed()) await nc.flush();
    })
    .add('release bump lease', () => (bump ? singleton.release() : undefined))
    .add('stop actors', () => {
      if (viewCounter) stopActor(viewCounter as ActorRef<unknown>);
      if (bump) stopActor(bump as ActorRef<unknown>);
      if (unread) stopActor(unread as ActorRef<unknown>);
    });

  return { viewCounter, bump, unread, stop: () => shutdown.run() };
}

export interface GatewayRoleDeps {
  db: Knex;
  nc: NatsConnection;
  config: AdsConfig;
  log: Logger;
  metrics: Metrics;
  /** Default: config.gatewayPort. */
  port?: number;
}

/** Runs the HTTP gateway role. `stop()` closes the listener after in-flight requests. */
export async function startGatewayRole(deps: GatewayRoleDeps): Promise<{ port: number; gateway: RunningGateway; stop(): Promise<void> }> {
  const gateway = await startGateway(deps, deps.port ?? deps.config.gatewayPort);
  deps.log.info({ port: gateway.port }, 'ads gateway listening');
  return { port: gateway.port, gateway, stop: () => gateway.close() };
}
