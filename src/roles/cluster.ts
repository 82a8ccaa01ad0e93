import type { NatsConnection, Subscription } from 'nats';
import type { Config } from '../config/core';
import type { Logger } from '../log';
import type { Metrics } from '../metrics';
import { dispatch, query, stop, type ActorRef, type ActorSystem, type ReplyTo } from '../runtime/actor';
import type { Pipeline } from './pipeline';
import { perMinuteToWindow, rateToWindow } from '../limits/window';
import { encodeJson } from '../nats/codec';
import { describeError } from '../errors';
import { spawnShardOwner, type ShardOwnerMsg, type ShardOwnerStatus, type Takeover } from '../../actors/cluster/shard-owner';
import { spawnBudgetCoordinator, type BudgetCoordinatorMsg, type BudgetStatus } from '../../actors/cluster/budget-coordinator';
import type { PipelineStatus } from '../../actors/pipeline/pipeline';
import { openClusterBucket } from '../cluster/kv';
import { leaseHolder, readClusterView } from '../cluster/lease';
import { BudgetClient, COORDINATOR_KEY } from '../cluster/budget-client';
import { KvHandoffStore } from '../cluster/handoff';
import { KvLeaseSingleton } from '../cluster/singleton';
import type { Singleton } from '../cluster/singleton';

export interface ClusterOptions {
  config: Config;
  log: Logger;
  metrics: Metrics;
  nc: NatsConnection;
  pipeline: Pipeline;
  system: ActorSystem;
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
  pipeline: PipelineStatus;
}

/** `notify.cluster.status` answer. */
export interface ClusterStatus {
  at: number;
  shardCount: number;
  /** shard → holder (`<instance>:<boot id>`), from the KV bucket. */
  map: Record<number, string>;
  members: string[];
  coordinator: string | null;
  budget: BudgetStatus | null;
  processes: Array<Omit<ProcessStatus, 'pipeline'>>;
  takeovers: Array<Takeover & { by: string }>;
}

export interface Cluster {
  /** A cluster-wide singleton (e.g. the ads bump timer) on the same lease machinery. */
  singleton(name: string): Singleton;
  readonly shardOwner: ActorRef<ShardOwnerMsg>;
  readonly budget: BudgetClient;
  status(): Promise<ShardOwnerStatus>;
  processStatus(): Promise<ProcessStatus>;
  clusterStatus(): Promise<ClusterStatus>;
  /** Hands every shard back (drained) and leaves the cluster. Idempotent. */
  stop(): Promise<void>;
}

/**
 * Joins the cluster: shard leases in the KV bucket decide what the pipeline owns, the
 * budget client runs the gate at this process's share of the bot's limit, and every
 * process can stand for budget coordinator.
 */
export async function startCluster(o: ClusterOptions): Promise<Cluster> {
  const { config, log, nc, pipeline } = o;
  const kv = await openClusterBucket(nc, config.clusterBucket, { leaseTtlMs: config.shardLeaseTtlMs, replicas: config.natsReplicas });
  const global = rateToWindow(config.telegramGlobalRate);
  const holder = pipeline.owner;
  const budget = new BudgetClient({
    subjects: pipeline.subjects,
    nc,
    kv,
    gate: pipeline.gate,
    log,
    metrics: o.metrics,
    holder,
    instance: config.instanceId,
    global,
    demand: () => pipeline.demand(),
    leaseTtlMs: config.shardLeaseTtlMs,
    maxPauseMs: config.telegramMaxRetryAfterMs,
    maxSkewMs: config.budgetMaxClockSkewMs,
    onFlood: (until, from, at) => dispatch(coordinator, { type: 'flood', until, from, at }),
  });
  budget.start();
  pipeline.onBotFlood((until, at) => budget.announceFlood(until, at));
  // Chat windows travel with a shard; records outlive the longest chat-scope window (a group's minute).
  const handoffTtlMs = Math.ceil(Math.max(rateToWindow(config.telegramChatRate).windowMs, perMinuteToWindow(config.telegramGroupRatePerMin).windowMs)) + 60_000;
  try {
    pipeline.setHandoffStore(await KvHandoffStore.open(nc, config.clusterBucket, handoffTtlMs, log));
  } catch (e) {
    // Safe without it: every shard taken over then waits a full window per chat (as after a crash).
    log.error(
      { bucket: `${config.clusterBucket}_handoff`, err: describeError(e) },
      'cannot open the handoff bucket: chat windows are not handed over (check the NATS permissions)',
    );
  }
  const coordinator = spawnBudgetCoordinator(o.system, {
    subjects: pipeline.subjects,
    nc,
    kv,
    log,
    metrics: o.metrics,
    holder,
    instance: config.instanceId,
    global,
    leaseTtlMs: config.shardLeaseTtlMs,
  });
  const shardOwner = spawnShardOwner(o.system, {
    kv,
    pipeline,
    log,
    metrics: o.metrics,
    holder,
    instance: config.instanceId,
    shardCount: config.shardCount,
    leaseTtlMs: config.shardLeaseTtlMs,
  });
  const pokeTimer = setInterval(() => budget.poke(), 50);

  const status = () => query<ShardOwnerMsg, ShardOwnerStatus>(shardOwner, (replyTo) => ({ type: 'status', replyTo }), 5_000);
  const processStatus = async (): Promise<ProcessStatus> => {
    const [own, p] = await Promise.all([status(), pipeline.status()]);
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
      pipeline: p,
    };
  };
  const clusterStatus = async (): Promise<ClusterStatus> => {
    const [, fresh, coord, budgetStatus] = await Promise.all([
      status(),
      readClusterView(kv),
      leaseHolder(kv, COORDINATOR_KEY).catch(() => undefined),
      query<BudgetCoordinatorMsg, BudgetStatus>(coordinator, (replyTo) => ({ type: 'status', replyTo }), 2_000).catch(() => null),
    ]);
    const processes: ClusterStatus['processes'] = [];
    for await (const m of await nc.requestMany(pipeline.subjects.statusAll, encodeJson({}), {
      maxWait: 1_000,
      maxMessages: Math.max(1, fresh.members.length),
    })) {
      try {
        const { pipeline: _omit, ...rest } = JSON.parse(new TextDecoder().decode(m.data)) as ProcessStatus;
        processes.push(rest);
      } catch {
        /* a process answering garbage is left out */
      }
    }
    processes.sort((a, b) => a.instance.localeCompare(b.instance));
    return {
      at: Date.now(),
      shardCount: config.shardCount,
      map: Object.fromEntries(fresh.shards),
      members: fresh.members,
      coordinator: coord?.holder ?? null,
      budget: budgetStatus?.leader ? budgetStatus : null,
      processes,
      takeovers: processes
        .flatMap((p) => p.takeovers.map((t) => ({ ...t, by: p.instance })))
        .sort((a, b) => b.at - a.at)
        .slice(0, 20),
    };
  };

  const subs: Subscription[] = [];
  const answer = (f: () => Promise<unknown>) => (err: Error | null, m: { respond: (d: Uint8Array) => boolean }) => {
    if (err) return;
    f().then(
      (v) => m.respond(encodeJson(v)),
      (e: unknown) => m.respond(encodeJson({ error: { code: 'UNAVAILABLE', message: describeError(e) } })),
    );
  };
  subs.push(nc.subscribe(pipeline.subjects.statusAll, { callback: answer(processStatus) }));
  pipeline.setStatusProvider(processStatus);
  pipeline.service.addEndpoint('cluster', {
    subject: pipeline.subjects.clusterStatus,
    metadata: { reply: 'ClusterStatus JSON' },
    handler: answer(clusterStatus),
  });

  let stopping: Promise<void> | undefined;
  return {
    singleton: (name) =>
      new KvLeaseSingleton(kv, name, holder, config.instanceId, config.shardLeaseTtlMs, (e) =>
        log.warn({ singleton: name, err: describeError(e) }, 'singleton lease error'),
      ),
    shardOwner,
    budget,
    status,
    processStatus,
    clusterStatus,
    stop: () =>
      (stopping ??= (async () => {
        clearInterval(pokeTimer);
        subs.forEach((s) => s.unsubscribe());
        try {
          await query(shardOwner, (replyTo: ReplyTo<void>): ShardOwnerMsg => ({ type: 'leave', replyTo }), config.shutdownTimeoutMs + 10_000);
        } catch (e) {
          log.warn({ err: describeError(e) }, 'leaving the cluster failed; leases expire by themselves');
        }
        await query(coordinator, (replyTo: ReplyTo<void>): BudgetCoordinatorMsg => ({ type: 'stepDown', replyTo }), 5_000).catch(() => undefined);
        budget.stop();
        stop(shardOwner);
        stop(coordinator);
      })()),
  };
}
