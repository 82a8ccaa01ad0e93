/**
 * The delivery pipeline role, in the three steps of actors/root.ts: `pipelineShared` and
 * `preparePipeline` build the ports (repository, GlobalGate, buffer book, the NATS service),
 * `spawnRoot` spawns the pipeline actor from `deps()`, and `start` wires the `notify.*`
 * endpoints and subscriptions to it (src/outbox/pipeline-subjects.ts). `startPipeline` runs the three for one process alone
 * (tests, benchmarks).
 */
import { randomBytes } from 'node:crypto';
import type { Knex } from 'knex';
import type { NatsConnection, Service } from 'nats';
import { stopActorSystem, dispatch, query, stop, type ActorRef, type ActorSystem } from '../runtime/actor';
import type { Config } from '../config/core';
import type { Logger } from '../log';
import type { Metrics } from '../metrics';
import { ShutdownSequence } from '../lifecycle';
import { GlobalGate, systemClock } from '../limits/global-gate';
import { GlobalRate } from '../limits/global-rate';
import { noHandoff, type HandoffStore } from '../cluster/handoff';
import { ClaimLeases, singleProcess, type ShardLeaseGuard } from '../outbox/send-guard';
import { rateToWindow, perMinuteToWindow, windowAt } from '../limits/window';
import { OutboxRepository } from '../outbox/repository';
import { RecipientDirectory } from '../outbox/recipients';
import { BufferBook } from '../outbox/buffer-book';
import { SentHere } from '../outbox/chat-queues';
import { TextPlanner, type Planner } from '../outbox/plan';
import type { TelegramClient } from '../telegram/client';
import { makeSubjects, type SubjectSet } from '../nats/subjects';
import { encodeJson } from '../nats/codec';
import { NatsIntake } from '../nats/intake';
import type { OutcomeEvent } from '../nats/payloads';
import { describeError } from '../errors';
import { outcomeLog } from '../outbox/outcome-log';
import { ranges } from '../outbox/shard';
import { spawnRoot, spawned, type RootRefs } from '../../actors/root';
import type { OwnResult, PipelineMsg, PipelineStatus } from '../../actors/pipeline/pipeline';
import { chatRatePerMs, type PipelineDeps, type PipelineSettings } from '../../actors/pipeline/deps';
import type { OwnedShards } from '../../actors/cluster/shard-owner';
import { servePipelineSubjects } from '../outbox/pipeline-subjects';
import { registerPipelineGauges } from '../outbox/pipeline-gauges';
import { startObservedSystem } from '../runtime/observed-system';

/**
 * What the pipeline takes from the cluster, made before it: the budget's flood
 * announcement and the handoff store. Given, the cluster's coordinator sets the bot rate
 * (this process no longer lowers its own gate after a flood).
 */
export interface ClusterPorts {
  /** Tells every process the bot is flooded; `atMs`: when the 429 was answered. */
  announceFlood: (untilMs: number, atMs: number) => void;
  /** Where chat windows go at a handoff (the cluster's KV store). */
  handoff: HandoffStore;
  /** The shard owner's lease state, asked by the senders before each send. */
  shardLease: ShardLeaseGuard;
}

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
  /** Made by `pipelineShared` when the cluster needs them first; otherwise made here. */
  shared?: PipelineShared;
  /** Absent: this process alone sets its bot rate and keeps no chat windows across handoffs. */
  cluster?: ClusterPorts;
}

export interface Pipeline {
  readonly owner: string;
  readonly repo: OutboxRepository;
  readonly gate: GlobalGate;
  readonly recipients: RecipientDirectory;
  readonly root: ActorRef<PipelineMsg>;
  /** Sets the owned shards; resolves when removed ones are drained and new ones fenced. */
  own(shards: number[]): Promise<OwnResult>;
  /** Stops sending for `shards` at once (lost lease); their rows go back to the outbox. */
  fence(shards: number[]): Promise<{ released: number }>;
  status(): Promise<PipelineStatus>;
  /** Sends per global window this process could use now (its chats with rows waiting × their rate). */
  demand(): number;
  /** The bot-wide rate this process applies alone (without a cluster), per second. */
  readonly globalRate: GlobalRate;
  /** The NATS service (the cluster adds an endpoint); its metadata shows in `nats micro info`. */
  readonly service: Service;
  readonly serviceMetadata: Record<string, string>;
  readonly subjects: SubjectSet;
  /** Stop intake, drain, flush, close subscriptions. Idempotent. */
  stop(): Promise<void>;
  /** Claimed rows given back to the outbox so far (hand-offs, fencing, shutdown): the shutdown line counts them. */
  releasedRows(): number;
}

/**
 * What the pipeline's actors share with the cluster's budget: made first, because the
 * budget client (made by the cluster role) steers this gate by this demand.
 */
export interface PipelineShared {
  /** `<instance>:<boot id>`: claimed_by of this process's rows, its cluster holder name. */
  readonly owner: string;
  readonly settings: PipelineSettings;
  readonly gate: GlobalGate;
  readonly book: BufferBook;
  /** Sends per global window this process could use now (its chats with rows waiting × their rate). */
  demand(): number;
}

export function pipelineShared(config: Config, overrides: Partial<PipelineSettings> = {}): PipelineShared {
  const settings = { ...settingsFromConfig(config), ...overrides };
  // Paced beyond a tenth of a window: a stricter server rejects a few sends, not the excess of a whole window (at a
  // cold start under load the first half-window burst went out before the first answer: 100 × 429 at 200/s told 300/s).
  const gate = new GlobalGate(rateToWindow(config.telegramGlobalRate), systemClock, 0.1);
  const book = new BufferBook();
  return {
    owner: `${config.instanceId}:${randomBytes(4).toString('hex')}`,
    settings,
    gate,
    book,
    demand: () => {
      const windowMs = gate.limit.windowMs;
      let d = 0;
      for (const [chat, n] of book.perChat()) if (n > 0) d += Math.min(n, chatRatePerMs(settings, chat) * windowMs);
      return Math.ceil(d);
    },
  };
}

/** The pipeline between `preparePipeline` and `start`. */
export interface PreparedPipeline {
  readonly shared: PipelineShared;
  /** The NATS service `notify-worker`, without endpoints until `start` (the cluster adds one). */
  readonly service: Service;
  /** The pipeline actor's ports, for `spawnRoot`; `planner` defaults to text-only plans. */
  deps(planner?: Planner): PipelineDeps;
  /** What the shard owner drives: own/fence through the pipeline actor, counted for the shutdown line. */
  shards(ref: ActorRef<PipelineMsg>): OwnedShards;
  /**
   * Wires NATS to the spawned pipeline. `status`: what `notify.status.<instance>` answers
   * (the cluster's process status; default this pipeline's). `system`: an actor system
   * that stops with the pipeline (one it was given its own).
   */
  start(refs: RootRefs, ports?: { status?: () => Promise<unknown>; system?: ActorSystem }): Pipeline;
}

export function settingsFromConfig(c: Config): PipelineSettings {
  return {
    chatLimit: rateToWindow(c.telegramChatRate),
    groupLimit: perMinuteToWindow(c.telegramGroupRatePerMin, c.telegramGroupWindowMs),
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

/** Builds the pipeline's ports: nothing is spawned and no endpoint serves until `start`. */
export async function preparePipeline(o: PipelineOptions): Promise<PreparedPipeline> {
  const { config, log, metrics, db, nc } = o;
  const shared = o.shared ?? pipelineShared(config, o.settings);
  const { owner, settings, gate, book } = shared;
  const subjects = makeSubjects(config.natsSubjectPrefix);
  const repo = new OutboxRepository(db, owner, config.shardCount);
  const recipients = new RecipientDirectory(db, log);
  await recipients.load();
  const lowered = new Map<number, number>();
  const globalRate = new GlobalRate(config.telegramGlobalRate, Date.now());
  // Alone, this process lowers and raises its own gate; a cluster hands that to its coordinator.
  const localRate = o.cluster === undefined;
  const applyRate = (rate: number): void => {
    if (!localRate) return;
    // Never a shorter window than the configured one: two bursts would fit in one server window.
    const w = windowAt(rate, rateToWindow(config.telegramGlobalRate));
    if (w.count !== gate.limit.count || Math.abs(w.windowMs - gate.limit.windowMs) > 0.5) gate.setLimit(w);
  };
  registerPipelineGauges(metrics, shared, lowered);

  const safePublish = (subject: string, payload: unknown): void => {
    try {
      nc.publish(subject, encodeJson(payload));
    } catch (e) {
      log.warn({ subject, err: describeError(e) }, 'publish failed');
    }
  };

  // Failures, unreachable recipients, fallbacks: logged once per kind per 10 s, with counts.
  const outcomes = outcomeLog(log);
  const announceFlood = o.cluster?.announceFlood;
  // One per process, outliving actor restarts: the claimer's extensions vouch for every sender's rows.
  const claimLeases = new ClaimLeases(settings.claimLeaseMs);
  const sentHere = new SentHere();
  const deps = (planner?: Planner): PipelineDeps => ({
    settings,
    log,
    metrics,
    clock: systemClock,
    repo,
    telegram: o.telegram,
    gate,
    recipients,
    book,
    planner: planner ?? o.planner ?? new TextPlanner(),
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
      announceFlood?.(until, at ?? Date.now());
    },
    handoff: o.cluster?.handoff ?? noHandoff,
    shardLease: o.cluster?.shardLease ?? singleProcess,
    claimLeases,
    sentHere,
    lowered,
  });

  // One NATS edge: payloads validated, rejections counted, everything drained on stop.
  const intake = new NatsIntake({ nc, log, metrics });
  // Kept by reference in the service: updating it updates `nats micro info`.
  const serviceMetadata: Record<string, string> = { instance: config.instanceId, owner, shards: '' };
  const service = await intake.addService({
    name: subjects.workerService,
    version: '0.1.0',
    description: 'Telegram notification worker: outbox → per-shard senders',
    metadata: serviceMetadata,
  });

  // What own/fence gave back and hold, for the shutdown line and `nats micro info`.
  let releasedRows = 0;
  let owned: number[] = [];
  const shards = (root: ActorRef<PipelineMsg>): OwnedShards => ({
    own: async (want) => {
      const r = await query<PipelineMsg, OwnResult>(root, (replyTo) => ({ type: 'own', shards: want, replyTo }), settings.drainTimeoutMs + 10_000);
      owned = r.owned;
      releasedRows += r.released;
      serviceMetadata.shards = ranges(owned);
      return r;
    },
    fence: async (lost) => {
      owned = owned.filter((s) => !lost.includes(s));
      serviceMetadata.shards = ranges(owned);
      const r = await query<PipelineMsg, { released: number }>(
        root,
        (replyTo) => ({ type: 'release', shards: lost, replyTo }),
        settings.drainTimeoutMs + 10_000,
      );
      releasedRows += r.released;
      return r;
    },
  });

  const start = (refs: RootRefs, ports: { status?: () => Promise<unknown>; system?: ActorSystem } = {}): Pipeline => {
    const root = spawned(refs, 'pipeline');
    const rateTimer = setInterval(() => applyRate(globalRate.tick(Date.now(), gate.waiting > 0)), 1_000);
    rateTimer.unref();
    const pipelineStatus = () => query<PipelineMsg, PipelineStatus>(root, (replyTo) => ({ type: 'status', replyTo }), 5_000);
    const status =
      ports.status ??
      (async () => ({
        instance: config.instanceId,
        owner,
        ...(await pipelineStatus()),
      }));

    servePipelineSubjects({
      intake,
      service,
      subjects,
      instanceId: config.instanceId,
      wake: (shard) => void dispatch(root, shard === undefined ? { type: 'wake' } : { type: 'wake', shard }),
      repo,
      recipients,
      log,
      metrics,
      publish: safePublish,
      status,
    });

    const system = ports.system;
    // Fixed order, each step isolated: stop intake → drain senders → give back → flush.
    const shutdown = new ShutdownSequence(log, settings.drainTimeoutMs + 10_000)
      .add('pipeline: NATS service and subscriptions', () => intake.drain())
      .add('pipeline: drain actors', async () => {
        const r = await query<PipelineMsg, { released: number }>(root, (replyTo) => ({ type: 'shutdown', replyTo }), settings.drainTimeoutMs + 5_000);
        releasedRows += r.released;
        log.info({ releasedAtDrain: r.released }, 'pipeline drained');
      })
      // Anything still claimed (a sender that did not drain in time) goes back now.
      .add('pipeline: release leftovers', async () => {
        releasedRows += await repo.release();
      })
      .add('pipeline: recipients', () => recipients.flush())
      .add('pipeline: actors', () => {
        outcomes.stop();
        if (system) stopActorSystem(system);
        else stop(root);
        clearInterval(rateTimer);
        gate.stop();
      });

    const control = shards(root);
    return {
      owner,
      repo,
      gate,
      recipients,
      root,
      service,
      serviceMetadata,
      subjects,
      globalRate,
      own: (s) => control.own(s),
      fence: (s) => control.fence(s),
      demand: () => shared.demand(),
      releasedRows: () => releasedRows,
      status: pipelineStatus,
      stop: () => shutdown.run(),
    };
  };

  return { shared, service, deps, shards, start };
}

/**
 * Builds and starts the delivery pipeline of one process on its own (tests, benchmarks):
 * the three steps of actors/root.ts for the pipeline alone.
 */
export async function startPipeline(o: PipelineOptions): Promise<Pipeline> {
  const prepared = await preparePipeline(o);
  const ownSystem = o.system === undefined;
  const system = o.system ?? startObservedSystem(`pipeline-${o.config.instanceId}`, o.log, o.metrics);
  const refs = spawnRoot(system, { pipeline: () => prepared.deps() });
  const pipeline = prepared.start(refs, ownSystem ? { system } : {});
  if (o.ownAllShards === true) dispatch(pipeline.root, { type: 'own', shards: Array.from({ length: o.config.shardCount }, (_, i) => i) });
  return pipeline;
}
