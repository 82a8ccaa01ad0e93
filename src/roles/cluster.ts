/**
 * The cluster role, in the three steps of actors/root.ts: `prepareCluster` opens the KV
 * buckets and makes what the pipeline takes from the cluster (flood announcement, handoff
 * store) and the ports of the shard owner and budget coordinator; `spawnRoot` spawns them;
 * `start` runs the budget client and serves `notify.status.all` and `notify.cluster.status`.
 */
import { Type } from '@sinclair/typebox';
import type { KV, NatsConnection, Service } from 'nats';
import type { Config } from '../config/core';
import type { Logger } from '../log';
import type { Metrics } from '../metrics';
import { dispatch, query, stop, type ReplyTo } from '../runtime/actor';
import type { ClusterPorts, PipelineShared } from './pipeline';
import { perMinuteToWindow, rateToWindow } from '../limits/window';
import { decoder, encodeJson } from '../nats/codec';
import { NatsIntake, orEmpty } from '../nats/intake';
import { makeSubjects, type SubjectSet } from '../nats/subjects';
import { ShutdownSequence } from '../lifecycle';
import { AppError, describeError, isAppError } from '../errors';
import { spawned, type RootRefs } from '../../actors/root';
import type { ShardOwnerDeps, ShardOwnerMsg, ShardOwnerStatus, OwnedShards, Takeover } from '../../actors/cluster/shard-owner';
import type { BudgetCoordinatorDeps, BudgetCoordinatorMsg, BudgetStatus } from '../../actors/cluster/budget-coordinator';
import type { PipelineMsg, PipelineStatus } from '../../actors/pipeline/pipeline';
import { openClusterBucket } from '../cluster/kv';
import { leaseHolder, readClusterView } from '../cluster/lease';
import { BudgetClient, COORDINATOR_KEY, floodAnnouncer } from '../cluster/budget-client';
import { KvHandoffStore, noHandoff, type HandoffStore } from '../cluster/handoff';
import { KvLeaseSingleton } from '../cluster/singleton';
import { ShardLeaseBoard } from '../cluster/held-shards';
import type { Singleton } from '../cluster/singleton';

export interface ClusterOptions {
  config: Config;
  log: Logger;
  metrics: Metrics;
  nc: NatsConnection;
  /** The gate the budget steers, the demand it reports, the holder name (the pipeline's owner). */
  shared: PipelineShared;
}

/** One process's answer to `notify.status.<instance>` / `notify.status.all`. */
export interface ProcessStatus {
  instance: string;
  holder: string;
  owned: number[];
  budget: { share: number; mode: string; demand: number; expiresAt: number; rate: number };
  /** 429s by the scope they were attributed to, and the chats whose rate a 429 lowered (at most 20). */
  throttledByScope: { chat: number; group: number; global: number };
  lowered: Array<{ chatId: number; rate: number; ceiling: number }>;
  queued: number;
  inFlight: number;
  buffered: number;
  sent: number;
  failed: number;
  retried: number;
  throttled: number;
  rateLimitedChats: number;
  takeovers: Takeover[];
  /** Only the budget coordinator's answer has it: its split, so any process can show the cluster's budget. */
  coordinating?: BudgetStatus;
  pipeline: PipelineStatus;
}

/** `notify.cluster.status` answer. */
export interface ClusterStatus {
  at: number;
  /** The instance whose process answered (any one of them answers `notify.cluster.status`). */
  answeredBy: string;
  shardCount: number;
  /** shard → holder (`<instance>:<boot id>`), from the KV bucket. */
  map: Record<number, string>;
  members: string[];
  coordinator: string | null;
  /** The coordinator's split, whichever process answered (null while nobody coordinates, or its answer did not come). */
  budget: BudgetStatus | null;
  processes: Array<Omit<ProcessStatus, 'pipeline' | 'coordinating'>>;
  takeovers: Array<Takeover & { by: string }>;
}

export interface Cluster {
  readonly budget: BudgetClient;
  status(): Promise<ShardOwnerStatus>;
  processStatus(): Promise<ProcessStatus>;
  clusterStatus(): Promise<ClusterStatus>;
  /** Hands every shard back (drained) and leaves the cluster. Idempotent. */
  stop(): Promise<void>;
}

/** The cluster between `prepareCluster` and `start`. */
export interface PreparedCluster {
  /** What the pipeline takes from the cluster; made before it. */
  readonly ports: ClusterPorts;
  /** The budget coordinator's ports, for `spawnRoot`. */
  readonly coordinator: BudgetCoordinatorDeps;
  /** The shard owner's ports, for `spawnRoot`: it drives `pipeline`. */
  shardOwner(pipeline: OwnedShards): ShardOwnerDeps;
  /** A cluster-wide singleton (e.g. the ads bump timer) on the same lease machinery. */
  singleton(name: string): Singleton;
  /** Runs the budget client and serves the status endpoints; `service`: the worker's NATS service. */
  start(refs: RootRefs, service: Service): Cluster;
}

/**
 * Joins the cluster: shard leases in the KV bucket decide what the pipeline owns, the
 * budget client runs the gate at this process's share of the bot's limit, and every
 * process can stand for budget coordinator.
 */
export async function prepareCluster(o: ClusterOptions): Promise<PreparedCluster> {
  const { config, log, nc, shared } = o;
  const subjects = makeSubjects(config.natsSubjectPrefix);
  const kv = await openClusterBucket(nc, config.clusterBucket, { leaseTtlMs: config.shardLeaseTtlMs, replicas: config.natsReplicas });
  const global = rateToWindow(config.telegramGlobalRate);
  const holder = shared.owner;
  const handoff = await openHandoff(o);
  // The shard owner points it at its leases; the senders ask it before each send.
  const board = new ShardLeaseBoard();
  return {
    ports: { announceFlood: floodAnnouncer({ nc, subjects, instance: config.instanceId, holder, log }), handoff, shardLease: board },
    coordinator: {
      subjects,
      nc,
      intake: new NatsIntake({ nc, log, metrics: o.metrics }),
      kv,
      log,
      metrics: o.metrics,
      holder,
      instance: config.instanceId,
      global,
      leaseTtlMs: config.shardLeaseTtlMs,
    },
    shardOwner: (pipeline) => ({
      kv,
      pipeline,
      log,
      metrics: o.metrics,
      holder,
      instance: config.instanceId,
      shardCount: config.shardCount,
      leaseTtlMs: config.shardLeaseTtlMs,
      formationMs: config.shardFormationMs,
      board,
    }),
    singleton: (name) =>
      new KvLeaseSingleton(kv, name, holder, config.instanceId, config.shardLeaseTtlMs, (e) =>
        log.warn({ singleton: name, err: describeError(e) }, 'singleton lease error'),
      ),
    start: (refs, service) => startCluster(o, kv, subjects, refs, service),
  };
}

/** Chat windows travel with a shard; records outlive the longest chat-scope window (a group's minute). */
async function openHandoff(o: ClusterOptions): Promise<HandoffStore> {
  const { config, log } = o;
  const ttlMs =
    Math.ceil(
      Math.max(rateToWindow(config.telegramChatRate).windowMs, perMinuteToWindow(config.telegramGroupRatePerMin, config.telegramGroupWindowMs).windowMs),
    ) + 60_000;
  try {
    return await KvHandoffStore.open(o.nc, config.clusterBucket, ttlMs, log, { replicas: config.natsReplicas, timeoutMs: 1_000 });
  } catch (e) {
    // Replicas that differ from NATS_REPLICAS are a start-up error like for every stream (the migration step is in the message).
    if (isAppError(e) && e.code === 'NATS_STREAM_MISMATCH') throw e;
    // Safe without it: every shard taken over then waits a full window per chat (as after a crash).
    log.error(
      { bucket: `${config.clusterBucket}_handoff`, err: describeError(e) },
      'cannot open the handoff bucket: chat windows are not handed over (check the NATS permissions)',
    );
    return noHandoff;
  }
}

/** `notify.status.all` and `notify.cluster.status` take nothing (any JSON object is accepted and ignored). */
const decodeStatusRequest = orEmpty(decoder(Type.Object({}), { maxBytes: 1024 }), {});

/** A status that could not be gathered is answered UNAVAILABLE with the reason. */
const unavailable = (f: () => Promise<unknown>) => () =>
  f().catch((e: unknown) => {
    throw new AppError('UNAVAILABLE', describeError(e));
  });

function startCluster(o: ClusterOptions, kv: KV, subjects: SubjectSet, refs: RootRefs, service: Service): Cluster {
  const { config, log, nc, shared } = o;
  const holder = shared.owner;
  const shardOwner = spawned(refs, 'shardOwner');
  const coordinator = spawned(refs, 'budgetCoordinator');
  const pipeline = spawned(refs, 'pipeline');
  const budget = new BudgetClient({
    subjects,
    nc,
    kv,
    gate: shared.gate,
    log,
    metrics: o.metrics,
    holder,
    instance: config.instanceId,
    global: rateToWindow(config.telegramGlobalRate),
    demand: () => shared.demand(),
    leaseTtlMs: config.shardLeaseTtlMs,
    maxPauseMs: config.telegramMaxRetryAfterMs,
    maxSkewMs: config.budgetMaxClockSkewMs,
    onFlood: (until, from, at) => dispatch(coordinator, { type: 'flood', until, from, at }),
  });
  budget.start();
  const pokeTimer = setInterval(() => budget.poke(), 50);

  const status = () => query<ShardOwnerMsg, ShardOwnerStatus>(shardOwner, (replyTo) => ({ type: 'status', replyTo }), 5_000);
  const pipelineStatus = () => query<PipelineMsg, PipelineStatus>(pipeline, (replyTo) => ({ type: 'status', replyTo }), 5_000);
  const coordinating = () =>
    query<BudgetCoordinatorMsg, BudgetStatus>(coordinator, (replyTo) => ({ type: 'status', replyTo }), 2_000).then(
      (b) => (b.leader ? b : null),
      () => null,
    );
  const processStatus = async (): Promise<ProcessStatus> => {
    const [own, p, budgetSplit] = await Promise.all([status(), pipelineStatus(), coordinating()]);
    const sum = (f: (s: PipelineStatus['shards'][number]) => number) => p.shards.reduce((a, s) => a + f(s), 0);
    return {
      instance: config.instanceId,
      holder,
      owned: own.owned,
      budget: budget.current,
      queued: sum((s) => s.queued),
      inFlight: sum((s) => s.inFlight),
      buffered: p.buffered,
      sent: sum((s) => s.sent),
      failed: sum((s) => s.failed),
      retried: sum((s) => s.retried),
      throttled: sum((s) => s.throttled),
      throttledByScope: {
        chat: sum((s) => s.throttledByScope.chat),
        group: sum((s) => s.throttledByScope.group),
        global: sum((s) => s.throttledByScope.global),
      },
      lowered: p.shards
        .flatMap((s) => s.lowered)
        .sort((a, b) => a.rate / a.ceiling - b.rate / b.ceiling)
        .slice(0, 20),
      rateLimitedChats: sum((s) => s.rateLimited.length),
      takeovers: own.takeovers,
      ...(budgetSplit ? { coordinating: budgetSplit } : {}),
      pipeline: p,
    };
  };
  const mBad = o.metrics.counter('nats_bad_payloads_total', 'NATS payloads rejected at the edge', ['subject', 'code']);
  const clusterStatus = async (): Promise<ClusterStatus> => {
    const [, fresh, coord, budgetStatus] = await Promise.all([
      status(),
      readClusterView(kv),
      leaseHolder(kv, COORDINATOR_KEY).catch(() => undefined),
      coordinating(),
    ]);
    const processes: ClusterStatus['processes'] = [];
    let relayed: BudgetStatus | null = null;
    for await (const m of await nc.requestMany(subjects.statusAll, encodeJson({}), {
      maxWait: 1_000,
      maxMessages: Math.max(1, fresh.members.length),
    })) {
      try {
        // A peer's reply is input: one that is not a process status (an error, garbage) is left out.
        const { pipeline: _omit, coordinating: split, ...rest } = decodeProcessStatus(m.data);
        processes.push(rest);
        // Not ours: the coordinator's own answer carries its split (the lease's holder first, should two answer during a handover).
        if (split?.leader === true && (relayed === null || rest.holder === coord?.holder)) relayed = split;
      } catch (e) {
        const code = isAppError(e) ? e.code : 'BAD_PAYLOAD';
        mBad.inc({ subject: subjects.statusAll, code });
        log.warn({ code, err: describeError(e) }, 'a notify.status.all answer that is not a process status: left out of the cluster status');
      }
    }
    processes.sort((a, b) => a.instance.localeCompare(b.instance));
    return {
      at: Date.now(),
      answeredBy: config.instanceId,
      shardCount: config.shardCount,
      map: Object.fromEntries(fresh.shards),
      members: fresh.members,
      coordinator: coord?.holder ?? null,
      budget: budgetStatus ?? relayed,
      processes,
      takeovers: processes
        .flatMap((p) => p.takeovers.map((t) => ({ ...t, by: p.instance })))
        .sort((a, b) => b.at - a.at)
        .slice(0, 20),
    };
  };

  // One NATS edge: validated, counted, drained on stop. `status.all` has no queue: every process answers.
  const intake = new NatsIntake({ nc, log, metrics: o.metrics });
  intake.serve(subjects.statusAll, decodeStatusRequest, unavailable(processStatus));
  intake.serveEndpoint(service, 'cluster', subjects.clusterStatus, decodeStatusRequest, unavailable(clusterStatus), {
    metadata: { reply: 'ClusterStatus JSON' },
  });

  // Each step isolated: a failed leave still steps down and stops the budget.
  const shutdown = new ShutdownSequence(log, config.shutdownTimeoutMs + 15_000)
    .add('cluster: status subscriptions', () => {
      clearInterval(pokeTimer);
      return intake.drain();
    })
    .add('cluster: hand shards back and leave', async () => {
      try {
        await query(shardOwner, (replyTo: ReplyTo<void>): ShardOwnerMsg => ({ type: 'leave', replyTo }), config.shutdownTimeoutMs + 10_000);
      } catch (e) {
        log.warn({ err: describeError(e) }, 'leaving the cluster failed; leases expire by themselves');
      }
    })
    .add('cluster: step down as budget coordinator', () =>
      query(coordinator, (replyTo: ReplyTo<void>): BudgetCoordinatorMsg => ({ type: 'stepDown', replyTo }), 5_000).catch(() => undefined),
    )
    .add('cluster: budget client', () => budget.stop())
    .add('cluster: actors', () => {
      stop(shardOwner);
      stop(coordinator);
    });

  return { budget, status, processStatus, clusterStatus, stop: () => shutdown.run() };
}

const Num = Type.Number();
/** A coordinator's split as a peer relays it (what `npm run cli -- status` prints of it). */
const BudgetSplit = Type.Object({
  leader: Type.Boolean(),
  since: Type.Union([Num, Type.Null()]),
  capacity: Num,
  ceiling: Num,
  rate: Num,
  windowMs: Num,
  processes: Type.Array(Type.Unknown()),
});
/**
 * A peer's `notify.status.all` answer, checked for every field the cluster status and the CLI read (the rest
 * is passed on): anyone on the bus can answer, and one nonsense answer must not break the status for all.
 */
const checkProcessStatus = decoder(
  Type.Object({
    instance: Type.String(),
    holder: Type.String(),
    owned: Type.Array(Type.Integer()),
    budget: Type.Object({ share: Num, mode: Type.String(), demand: Num }),
    queued: Num,
    inFlight: Num,
    sent: Num,
    failed: Num,
    throttled: Num,
    throttledByScope: Type.Optional(Type.Object({ chat: Num, group: Num, global: Num })),
    lowered: Type.Optional(Type.Array(Type.Object({ chatId: Num, rate: Num, ceiling: Num }))),
    takeovers: Type.Array(Type.Object({ shard: Type.Integer(), from: Type.String(), at: Num })),
    coordinating: Type.Optional(BudgetSplit),
  }),
  { maxBytes: 1024 * 1024 },
);
const decodeProcessStatus = (data: Uint8Array): ProcessStatus => checkProcessStatus(data) as unknown as ProcessStatus;
