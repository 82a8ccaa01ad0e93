import { randomBytes } from 'node:crypto';
import type { Knex } from 'knex';
import type { NatsConnection, Subscription, Service } from 'nats';
import { startActorSystem, stopActorSystem, dispatch, query, stop, type ActorRef, type ActorSystem } from '../runtime/actor';
import type { Config } from '../config/core';
import type { Logger } from '../log';
import type { Metrics } from '../metrics';
import { GlobalGate, systemClock } from '../limits/global-gate';
import { GlobalRate } from '../limits/global-rate';
import { noHandoff, type HandoffStore } from '../cluster/handoff';
import { rateToWindow, perMinuteToWindow, windowAt } from '../limits/window';
import { OutboxRepository } from '../outbox/repository';
import { RecipientDirectory } from '../outbox/recipients';
import { BufferBook } from '../outbox/buffer-book';
import { TextPlanner, type Planner } from '../outbox/plan';
import type { TelegramClient } from '../telegram/client';
import { makeSubjects, type SubjectSet } from '../nats/subjects';
import { decoder, encodeJson } from '../nats/codec';
import { RecipientChanged, WakeEvent, type OutcomeEvent } from '../nats/payloads';
import { handleEnqueue } from '../outbox/enqueue';
import { describeError, isAppError } from '../errors';
import { outcomeLog } from '../outbox/outcome-log';
import { ranges } from '../outbox/shard';
import { spawnPipeline, type OwnResult, type PipelineMsg, type PipelineStatus } from '../../actors/pipeline/pipeline';
import { chatRatePerMs, type PipelineDeps, type PipelineSettings } from '../../actors/pipeline/deps';
import { dbErrorFields } from '../db/error-fields';

export interface PipelineOptions {
  config: Config;
  log: Logger;
  metrics: Metrics;
  db: Knex;
  nc: NatsConnection;
  telegram: TelegramClient;
  /** Defaults to text-only plans; the composition root passes the order-aware planner. */
  planner?: Planner;
  /** Take every shard at once (tests and benchmarks of one process); otherwise the cluster assigns shards. */
  ownAllShards?: boolean;
  /** Overrides (tests, benchmarks). */
  settings?: Partial<PipelineSettings>;
  /** Spawn under this actor system (shared with other roles); otherwise the pipeline starts its own. */
  system?: ActorSystem;
}

export interface Pipeline {
  readonly owner: string;
  readonly repo: OutboxRepository;
  readonly gate: GlobalGate;
  readonly recipients: RecipientDirectory;
  readonly root: ActorRef<PipelineMsg>;
  readonly system: ActorSystem;
  /** Sets the owned shards; resolves when removed ones are drained and new ones fenced. */
  own(shards: number[]): Promise<OwnResult>;
  /** Stops sending for `shards` at once (lost lease); their rows go back to the outbox. */
  fence(shards: number[]): Promise<{ released: number }>;
  status(): Promise<PipelineStatus>;
  /** Sends per global window this process could use now (its chats with rows waiting × their rate). */
  demand(): number;
  /** What `notify.status.<instance>` answers (the cluster adds shards and budget). */
  setStatusProvider(f: () => Promise<unknown>): void;
  /** Who hears about bot-wide floods (the cluster budget); from then on the cluster owns the bot rate. */
  onBotFlood(handler: (untilMs: number, atMs?: number) => void): void;
  /** Where chat windows go at a handoff (the cluster's KV store). */
  setHandoffStore(store: HandoffStore): void;
  /** The bot-wide rate this process applies alone (without a cluster), per second. */
  readonly globalRate: GlobalRate;
  /** The NATS service (other modules add endpoints); its metadata shows in `nats micro info`. */
  readonly service: Service;
  readonly serviceMetadata: Record<string, string>;
  readonly subjects: SubjectSet;
  /** Stop intake, drain, flush, close subscriptions. Idempotent. */
  stop(): Promise<void>;
  /** Claimed rows given back to the outbox so far (hand-offs, fencing, shutdown): the shutdown line counts them. */
  releasedRows(): number;
}

export function settingsFromConfig(c: Config): PipelineSettings {
  return {
    chatLimit: rateToWindow(c.telegramChatRate),
    groupLimit: perMinuteToWindow(c.telegramGroupRatePerMin),
    maxAttempts: c.telegramMaxAttempts,
    retryBaseMs: c.retryBaseMs,
    retryMaxMs: c.retryMaxMs,
    maxRetryAfterMs: c.telegramMaxRetryAfterMs,
    claimBatch: c.claimBatch,
    claimLeaseMs: c.claimLeaseMs,
    pollMs: c.outboxPollMs,
    chatBufferSeconds: c.chatBufferSeconds,
    maxBuffered: c.claimBatch * 5,
    outcomeFlushMs: c.outcomeFlushMs,
    outcomeFlushMax: c.outcomeFlushMax,
    drainTimeoutMs: c.shutdownTimeoutMs,
  };
}

/**
 * Builds and starts the delivery pipeline of this process: the actor tree, the NATS
 * service (`enqueue`, `status`), the wake and recipient subscriptions.
 */
export async function startPipeline(o: PipelineOptions): Promise<Pipeline> {
  const { config, log, metrics, db, nc } = o;
  const owner = `${config.instanceId}:${randomBytes(4).toString('hex')}`;
  const subjects = makeSubjects(config.natsSubjectPrefix);
  const settings = { ...settingsFromConfig(config), ...o.settings };
  const repo = new OutboxRepository(db, owner, config.shardCount);
  const recipients = new RecipientDirectory(db, log);
  await recipients.load();
  // Paced beyond half a window: a stricter server rejects a few sends, not the excess of a whole window.
  const gate = new GlobalGate(rateToWindow(config.telegramGlobalRate), systemClock, 0.5);
  const lowered = new Map<number, number>();
  const globalRate = new GlobalRate(config.telegramGlobalRate, Date.now());
  // Alone, this process lowers and raises its own gate; a cluster hands that to its coordinator.
  let localRate = true;
  const applyRate = (rate: number): void => {
    if (!localRate) return;
    // Never a shorter window than the configured one: two bursts would fit in one server window.
    const w = windowAt(rate, rateToWindow(config.telegramGlobalRate));
    if (w.count !== gate.limit.count || Math.abs(w.windowMs - gate.limit.windowMs) > 0.5) gate.setLimit(w);
  };
  const rateTimer = setInterval(() => applyRate(globalRate.tick(Date.now(), gate.waiting > 0)), 1_000);
  rateTimer.unref();
  const book = new BufferBook();
  // Read at scrape time from live state: queue depth and sends on the wire per shard, the gate.
  metrics.gauge('sender_queue_depth', 'Claimed rows waiting in memory, per shard', ['shard'], (g) => {
    g.reset();
    for (const [shard, n] of book.byShard()) g.set({ shard: String(shard) }, n);
  });
  metrics.gauge('sender_in_flight', 'Telegram calls on the wire, per shard', ['shard'], (g) => {
    g.reset();
    for (const [shard, n] of book.inFlightByShard()) g.set({ shard: String(shard) }, n);
  });
  metrics.gauge('gate_waiting_chats', 'Chats ready to send, waiting for a global slot', [], (g) => g.set(gate.waiting));
  metrics.gauge('gate_limit_per_window', 'Sends per window this process may make now (its cluster share)', [], (g) => g.set(gate.limit.count));
  metrics.gauge(
    'telegram_effective_rate',
    'Sends per second this process may make now, by scope (global: its gate; chat/group: the lowest lowered chat, else the configured rate)',
    ['scope'],
    (g) => {
      g.set({ scope: 'global' }, (gate.limit.count / gate.limit.windowMs) * 1000);
      let chat = (settings.chatLimit.count / settings.chatLimit.windowMs) * 1000;
      let group = (settings.groupLimit.count / settings.groupLimit.windowMs) * 1000;
      for (const [id, r] of lowered)
        if (id < 0) group = Math.min(group, r);
        else chat = Math.min(chat, r);
      g.set({ scope: 'chat' }, chat);
      g.set({ scope: 'group' }, group);
    },
  );
  metrics.gauge('telegram_lowered_chats', 'Chats whose rate a 429 lowered below the configured one', ['scope'], (g) => {
    let chat = 0;
    for (const id of lowered.keys()) if (id > 0) chat++;
    g.set({ scope: 'chat' }, chat);
    g.set({ scope: 'group' }, lowered.size - chat);
  });
  metrics.gauge('gate_paused_until_seconds', 'Bot-wide pause after a flood 429 (epoch seconds; 0 = none)', [], (g) => g.set(gate.pausedUntilMs / 1000));
  const mBadInput = metrics.counter('nats_bad_payloads_total', 'NATS payloads rejected at the edge', ['subject', 'code']);
  const mEnqueued = metrics.counter('notifications_enqueued_total', 'Notifications enqueued over NATS', ['result']);

  const safePublish = (subject: string, payload: unknown): void => {
    try {
      nc.publish(subject, encodeJson(payload));
    } catch (e) {
      log.warn({ subject, err: describeError(e) }, 'publish failed');
    }
  };

  // Failures, unreachable recipients, fallbacks: logged once per kind per 10 s, with counts.
  const outcomes = outcomeLog(log);
  const deps: PipelineDeps = {
    settings,
    log,
    metrics,
    clock: systemClock,
    repo,
    telegram: o.telegram,
    gate,
    recipients,
    book,
    planner: o.planner ?? new TextPlanner(),
    publishOutcome: (e: OutcomeEvent) => safePublish(subjects.outcome(e.status), e),
    observeOutcome: (o, chatId) => outcomes.outcome(o, chatId),
    // Announced once the row is written: receivers re-read it (RecipientDirectory.refresh).
    publishRecipientChanged: (chatId, status, migratedTo) => {
      outcomes.recipient(chatId, status, migratedTo);
      void recipients.written(chatId).then(() => safePublish(subjects.recipientChanged, { chat_id: chatId, status, migrated_to_chat_id: migratedTo }));
    },
    onBotFlood: (until, at) => {
      // What the server took in the window ending when its 429 was answered (not when we got to it).
      applyRate(
        globalRate.throttled(
          Date.now(),
          gate.acceptedPerSecond(rateToWindow(config.telegramGlobalRate).windowMs, Math.min(Date.now(), at ?? Date.now())) || undefined,
        ),
      );
      floodHandler(until, at);
    },
    handoff: noHandoff,
    lowered,
  };
  let floodHandler: (untilMs: number, atMs?: number) => void = () => undefined;
  let statusProvider: () => Promise<unknown> = async () => ({
    instance: config.instanceId,
    owner,
    ...(await query<PipelineMsg, PipelineStatus>(root, (replyTo) => ({ type: 'status', replyTo }), 5_000)),
  });

  const ownSystem = o.system === undefined;
  const system = o.system ?? startObservedSystem(`pipeline-${config.instanceId}`, log, metrics);
  const root = spawnPipeline(system, deps);

  // ---- NATS: wake-ups and recipient changes ---------------------------------------
  const decodeWake = decoder(WakeEvent, { maxBytes: 1024 });
  const decodeRecipient = decoder(RecipientChanged, { maxBytes: 1024 });
  const subs: Subscription[] = [];
  subs.push(
    nc.subscribe(subjects.wakeAll, {
      callback: (err, m) => {
        if (err) return;
        try {
          const w = decodeWake(m.data);
          dispatch(root, { type: 'wake', shard: w.shard });
        } catch (e) {
          mBadInput.inc({ subject: 'notify.wake', code: isAppError(e) ? e.code : 'INTERNAL' });
        }
      },
    }),
  );
  subs.push(
    nc.subscribe(subjects.recipientChanged, {
      callback: (err, m) => {
        if (err) return;
        try {
          const r = decodeRecipient(m.data);
          // The database decides; the event only says which chat to look at again.
          recipients.refresh(r.chat_id).then(
            (stored) => {
              if (stored !== r.status) {
                mBadInput.inc({ subject: subjects.recipientChanged, code: 'RECIPIENT_MISMATCH' });
                log.warn(
                  { chatId: r.chat_id, announced: r.status, stored, code: 'RECIPIENT_MISMATCH' },
                  'recipient event does not match the database; the database state applies',
                );
              }
            },
            (e: unknown) =>
              log.warn(
                { chatId: r.chat_id, code: 'UNAVAILABLE', ...dbErrorFields(e) },
                'recipient event not applied: the database could not be read; the cached state stays',
              ),
          );
        } catch (e) {
          mBadInput.inc({ subject: subjects.recipientChanged, code: isAppError(e) ? e.code : 'INTERNAL' });
          log.warn({ code: isAppError(e) ? e.code : 'INTERNAL', err: describeError(e) }, 'bad recipient event ignored');
        }
      },
    }),
  );

  // ---- NATS service: enqueue + status ---------------------------------------------
  // Kept by reference in the service: updating it updates `nats micro info`.
  const serviceMetadata: Record<string, string> = { instance: config.instanceId, owner, shards: '' };
  const service: Service = await nc.services.add({
    name: subjects.workerService,
    version: '0.1.0',
    description: 'Telegram notification worker: outbox → per-shard senders',
    metadata: serviceMetadata,
  });
  service.addEndpoint('enqueue', {
    subject: subjects.enqueue,
    metadata: { payload: 'EnqueueRequest JSON', reply: 'EnqueueReply JSON' },
    handler: (err, m) => {
      if (err) return;
      void (async () => {
        const r = await handleEnqueue(repo, m.data, log);
        mEnqueued.inc({ result: r.result === 'inserted' || r.result === 'duplicate' ? r.result : 'rejected' });
        if (!r.reply.ok) mBadInput.inc({ subject: subjects.enqueue, code: r.result });
        if (r.inserted) safePublish(subjects.wake(r.inserted.shard), { shard: r.inserted.shard, id: r.inserted.id });
        try {
          m.respond(encodeJson(r.reply));
        } catch (e) {
          log.warn({ err: describeError(e) }, 'enqueue reply failed');
        }
      })();
    },
  });
  service.addEndpoint('status', {
    subject: subjects.status(config.instanceId),
    handler: (err, m) => {
      if (err) return;
      statusProvider().then(
        (s) => m.respond(encodeJson(s)),
        (e: unknown) => m.respond(encodeJson({ error: { code: isAppError(e) ? e.code : 'INTERNAL', message: describeError(e) } })),
      );
    },
  });

  if (o.ownAllShards === true) dispatch(root, { type: 'own', shards: Array.from({ length: config.shardCount }, (_, i) => i) });

  let stopping: Promise<void> | undefined;
  let releasedRows = 0;
  let owned: number[] = [];
  return {
    owner,
    repo,
    gate,
    recipients,
    root,
    system,
    service,
    serviceMetadata,
    subjects,
    own: async (shards) => {
      const r = await query<PipelineMsg, OwnResult>(root, (replyTo) => ({ type: 'own', shards, replyTo }), settings.drainTimeoutMs + 10_000);
      owned = r.owned;
      releasedRows += r.released;
      serviceMetadata.shards = ranges(owned);
      return r;
    },
    demand: () => {
      const windowMs = gate.limit.windowMs;
      let d = 0;
      for (const [chat, n] of book.perChat()) if (n > 0) d += Math.min(n, chatRatePerMs(settings, chat) * windowMs);
      return Math.ceil(d);
    },
    onBotFlood: (handler) => {
      floodHandler = handler;
      localRate = false;
    },
    setHandoffStore: (store) => {
      deps.handoff = store;
    },
    globalRate,
    setStatusProvider: (f) => {
      statusProvider = f;
    },
    fence: async (shards) => {
      owned = owned.filter((s) => !shards.includes(s));
      serviceMetadata.shards = ranges(owned);
      const r = await query<PipelineMsg, { released: number }>(root, (replyTo) => ({ type: 'release', shards, replyTo }), settings.drainTimeoutMs + 10_000);
      releasedRows += r.released;
      return r;
    },
    releasedRows: () => releasedRows,
    status: () => query<PipelineMsg, PipelineStatus>(root, (replyTo) => ({ type: 'status', replyTo }), 5_000),
    stop: () =>
      (stopping ??= (async () => {
        const step = async (name: string, f: () => unknown): Promise<void> => {
          try {
            await f();
          } catch (e) {
            log.error({ step: name, err: describeError(e) }, 'pipeline stop step failed; continuing');
          }
        };
        await step('service', () => service.stop());
        await step('subscriptions', () => subs.forEach((s) => s.unsubscribe()));
        await step('drain actors', async () => {
          const r = await query<PipelineMsg, { released: number }>(root, (replyTo) => ({ type: 'shutdown', replyTo }), settings.drainTimeoutMs + 5_000);
          releasedRows += r.released;
          log.info({ releasedAtDrain: r.released }, 'pipeline drained');
        });
        // Anything still claimed (a sender that did not drain in time) goes back now.
        await step('release leftovers', async () => {
          releasedRows += await repo.release();
        });
        await step('recipients', () => recipients.flush());
        outcomes.stop();
        await step('actors', () => (ownSystem ? stopActorSystem(system) : stop(root)));
        clearInterval(rateTimer);
        gate.stop();
      })()),
  };
}

/** An actor system whose crashes, restarts and dead letters show in metrics and logs. */
export function startObservedSystem(name: string, log: Logger, metrics: Metrics): ActorSystem {
  return startActorSystem(name, log, {
    crashed: (path) => metrics.counter('actor_crashes_total', 'Actor handler failures', ['actor']).inc({ actor: path.replace(/-\d+$/, '') }),
    restarting: (path, attempt, delayMs) => log.warn({ actor: path, attempt, delayMs }, 'restarting actor'),
    deadLetter: (path, type) => {
      metrics.counter('actor_dead_letters_total', 'Messages sent to stopped actors').inc();
      log.debug({ actor: path, message: type }, 'dead letter');
    },
  });
}
