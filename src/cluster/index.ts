import type { NatsConnection } from 'nats';
import type { Config } from '../config';
import type { Logger } from '../log';
import type { Metrics } from '../metrics';
import { query, stop, type ActorRef, type ActorSystem } from '../runtime/actor';
import type { Pipeline } from '../pipeline';
import { spawnShardOwner, type ShardOwnerMsg, type ShardOwnerStatus } from '../../actors/shard-owner';
import { openClusterBucket } from './kv';
import { describeError } from '../errors';

export interface ClusterOptions {
  config: Config;
  log: Logger;
  metrics: Metrics;
  nc: NatsConnection;
  pipeline: Pipeline;
  system: ActorSystem;
}

export interface Cluster {
  readonly shardOwner: ActorRef<ShardOwnerMsg>;
  status(): Promise<ShardOwnerStatus>;
  /** Hands every shard back (drained) and leaves the cluster. Idempotent. */
  stop(): Promise<void>;
}

/** Joins the cluster: shard leases in the KV bucket drive what the pipeline owns. */
export async function startCluster(o: ClusterOptions): Promise<Cluster> {
  const { config, log } = o;
  const kv = await openClusterBucket(o.nc, config.clusterBucket, config.shardLeaseTtlMs);
  const shardOwner = spawnShardOwner(o.system, {
    kv,
    pipeline: o.pipeline,
    log,
    metrics: o.metrics,
    holder: o.pipeline.owner,
    instance: config.instanceId,
    shardCount: config.shardCount,
    leaseTtlMs: config.shardLeaseTtlMs,
  });
  let stopping: Promise<void> | undefined;
  return {
    shardOwner,
    status: () => query<ShardOwnerMsg, ShardOwnerStatus>(shardOwner, (replyTo) => ({ type: 'status', replyTo }), 5_000),
    stop: () =>
      (stopping ??= (async () => {
        try {
          await query<ShardOwnerMsg, void>(shardOwner, (replyTo) => ({ type: 'leave', replyTo }), Math.max(30_000, config.claimLeaseMs * 2));
        } catch (e) {
          log.warn({ err: describeError(e) }, 'leaving the cluster failed; leases expire by themselves');
        }
        stop(shardOwner);
      })()),
  };
}
