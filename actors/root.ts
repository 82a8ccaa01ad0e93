/**
 * The top of the supervision tree: every actor a process runs directly under its actor
 * system is spawned here and nowhere else (test/unit/layout.test.ts checks it), so this
 * file is the whole tree. Children of a supervisor are spawned by the supervisor itself
 * (the pipeline spawns its outcome writer, shard manager and claimer).
 *
 * A process starts in three steps (src/main.ts):
 *   1. prepare: each role (src/roles/) builds the ports of its actors (repositories, the
 *      GlobalGate, KV buckets, streams, planners) and spawns nothing;
 *   2. spawn:   `spawnRoot` spawns the actors whose ports it is given, in this order;
 *   3. wire:    each role connects NATS (src/nats/intake.ts) to the refs it gets back and
 *               returns its `stop()` for the shutdown order.
 * An entry left out is an actor this process does not run (a gateway runs none). Two
 * actors need a sibling, so their ports are functions of it: the pipeline plans product
 * photos through the image fetcher, and the shard owner tells the pipeline its shards.
 *
 *   notify-<instance>
 *   ├── image-fetcher        images role: product photos, byte-bounded LRU, single flight
 *   ├── pipeline             pipeline role: outcome-writer, shard-manager → sender-<shard>, claimer
 *   ├── budget-coordinator   cluster role: splits the bot's limit while it holds the lease
 *   ├── shard-owner          cluster role: shard leases, handoff, fencing; drives the pipeline
 *   ├── view-counter         ads role: JetStream view events → ad_views, views_count
 *   ├── bump                 ads role: re-lists ads on a timer (cluster-wide singleton)
 *   └── unread-cache         ads role: unread message counts per user
 */
import type { ActorRef, Parent } from '../src/runtime/actor';
import { AppError } from '../src/errors';
import { spawnFetcher, type FetcherDeps, type FetcherMessage, type FetcherOptions } from './image-fetcher';
import { spawnPipeline, type PipelineMsg } from './pipeline/pipeline';
import type { PipelineDeps } from './pipeline/deps';
import { spawnBudgetCoordinator, type BudgetCoordinatorDeps, type BudgetCoordinatorMsg } from './cluster/budget-coordinator';
import { spawnShardOwner, type ShardOwnerDeps, type ShardOwnerMsg } from './cluster/shard-owner';
import { spawnViewCounter, type ViewCounterDeps, type ViewCounterMsg, type ViewCounterOptions } from './ads/view-counter';
import { spawnBump, type BumpDeps, type BumpMsg, type BumpOptions } from './ads/bump';
import { spawnUnreadCache, type UnreadCacheDeps, type UnreadCacheMsg, type UnreadCacheOptions } from './ads/unread-cache';

/** The ports of each top-level actor, as the roles prepared them; absent: not run here. */
export interface RootDeps {
  imageFetcher?: { deps: FetcherDeps; options?: FetcherOptions };
  /** Given the image fetcher when this process runs one (its planner reads photos through it). */
  pipeline?: (imageFetcher: ActorRef<FetcherMessage> | undefined) => PipelineDeps;
  budgetCoordinator?: BudgetCoordinatorDeps;
  /** Given the pipeline whose shards it sets; needs `pipeline`. */
  shardOwner?: (pipeline: ActorRef<PipelineMsg>) => ShardOwnerDeps;
  viewCounter?: { deps: ViewCounterDeps; options: ViewCounterOptions };
  bump?: { deps: BumpDeps; options: BumpOptions };
  unreadCache?: { deps: UnreadCacheDeps; options: UnreadCacheOptions };
}

/** The refs of the actors spawned, by the same names. */
export interface RootRefs {
  imageFetcher?: ActorRef<FetcherMessage>;
  pipeline?: ActorRef<PipelineMsg>;
  budgetCoordinator?: ActorRef<BudgetCoordinatorMsg>;
  shardOwner?: ActorRef<ShardOwnerMsg>;
  viewCounter?: ActorRef<ViewCounterMsg>;
  bump?: ActorRef<BumpMsg>;
  unreadCache?: ActorRef<UnreadCacheMsg>;
}

/** Spawns the top level of the tree under `parent` (the process's actor system). */
export function spawnRoot(parent: Parent, d: RootDeps): RootRefs {
  if (d.shardOwner && !d.pipeline) throw new AppError('INTERNAL', 'spawnRoot: the shard owner needs the pipeline it drives');
  const refs: RootRefs = {};
  if (d.imageFetcher) refs.imageFetcher = spawnFetcher(parent, d.imageFetcher.deps, d.imageFetcher.options);
  if (d.pipeline) refs.pipeline = spawnPipeline(parent, d.pipeline(refs.imageFetcher));
  if (d.budgetCoordinator) refs.budgetCoordinator = spawnBudgetCoordinator(parent, d.budgetCoordinator);
  if (d.shardOwner && refs.pipeline) refs.shardOwner = spawnShardOwner(parent, d.shardOwner(refs.pipeline));
  if (d.viewCounter) refs.viewCounter = spawnViewCounter(parent, d.viewCounter.deps, d.viewCounter.options);
  if (d.bump) refs.bump = spawnBump(parent, d.bump.deps, d.bump.options);
  if (d.unreadCache) refs.unreadCache = spawnUnreadCache(parent, d.unreadCache.deps, d.unreadCache.options);
  return refs;
}

/** The ref a role needs from `spawnRoot`; a missing one is a wiring mistake in the composition root. */
export function spawned<K extends keyof RootRefs>(refs: RootRefs, name: K): NonNullable<RootRefs[K]> {
  const ref = refs[name];
  if (!ref) throw new AppError('INTERNAL', `spawnRoot did not spawn the ${name}: its role's ports were not passed`);
  return ref;
}
