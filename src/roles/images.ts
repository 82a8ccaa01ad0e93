import { Type, type Static } from '@sinclair/typebox';
import type { NatsConnection } from 'nats';
import { decoder } from '../nats/codec';
import { NatsIntake, orEmpty } from '../nats/intake';
import { InputError } from '../errors';
import { query, dispatch, type ActorRef } from '../runtime/actor';
import type { Logger } from '../log';
import type { Knex } from '../db/knex';
import { Metrics } from '../metrics';
import type { ImagesConfig } from '../config/images';
import { OrderAwarePlanner } from '../orders/planner';
import type { Planner } from '../outbox/plan';
import { spawned, type RootRefs } from '../../actors/root';
import {
  fetcherImageSource,
  type FetcherDeps,
  type FetcherMessage,
  type FetcherStats,
  type InvalidateResult,
  type InvalidateTarget,
} from '../../actors/image-fetcher';
import { Subjects, type SubjectSet } from '../nats/subjects';

/** `images.cache.invalidate` payload: exactly one of the three fields. */
export const ImagesInvalidate = Type.Object(
  {
    url: Type.Optional(Type.String({ minLength: 1, maxLength: 2048 })),
    product_id: Type.Optional(Type.Integer({ minimum: 1 })),
    all: Type.Optional(Type.Literal(true)),
  },
  { additionalProperties: false },
);
export type ImagesInvalidate = Static<typeof ImagesInvalidate>;

/** `images.cache.stats*` payload: nothing, or an empty object. */
export const ImagesStatsRequest = Type.Object({}, { additionalProperties: false });

const decodeInvalidate = decoder(ImagesInvalidate, { maxBytes: 4096 });
const decodeStats = orEmpty(decoder(ImagesStatsRequest, { maxBytes: 1024 }), {});

export type ImagesReply =
  | { ok: true; instance: string; stats: FetcherStats }
  | { ok: true; instance: string; removed: number }
  | { ok: false; instance: string; error: { code: string; message: string } };

export interface ImagesServiceOptions {
  nc: NatsConnection;
  fetcher: ActorRef<FetcherMessage>;
  instanceId: string;
  /** Subjects of this deployment (NATS_SUBJECT_PREFIX); default: no prefix. */
  subjects?: SubjectSet;
  log: Logger;
  /** Where the intake counts bad payloads; default a private registry. */
  metrics?: Metrics;
  /** Default 5000. */
  queryTimeoutMs?: number;
}

/**
 * Core NATS endpoints of this process's image cache: stats on
 * `images.cache.stats.<instance>` (and `images.cache.stats` for all), and the broadcast
 * `images.cache.invalidate` that every process applies. Payloads are validated;
 * a bad one gets an error reply (when a reply subject exists) and is logged.
 */
export class ImagesService {
  private readonly intake: NatsIntake;
  private started = false;
  private readonly subjects: SubjectSet;

  constructor(private readonly opts: ImagesServiceOptions) {
    this.subjects = opts.subjects ?? Subjects;
    this.intake = new NatsIntake({ nc: opts.nc, log: opts.log, metrics: opts.metrics ?? new Metrics() });
  }

  start(): void {
    if (this.started) return;
    this.started = true;
    const instance = this.opts.instanceId;
    // Every process answers the broadcast subjects: replies carry the instance.
    const opts = { errorFields: { instance } };
    const stats = async (): Promise<ImagesReply> => ({
      ok: true,
      instance,
      stats: await query<FetcherMessage, FetcherStats>(this.opts.fetcher, (replyTo) => ({ type: 'stats', replyTo }), this.timeout()),
    });
    this.intake.serve(this.subjects.imagesCacheStats(instance), decodeStats, stats, { ...opts, label: this.subjects.imagesCacheStats('<instance>') });
    this.intake.serve(this.subjects.imagesCacheStatsAll, decodeStats, stats, opts);
    this.intake.serve(
      this.subjects.imagesCacheInvalidate,
      decodeInvalidate,
      async (payload, msg): Promise<ImagesReply | undefined> => {
        const target = toTarget(payload);
        if (!msg.reply) {
          dispatch(this.opts.fetcher, { type: 'invalidate', target });
          return undefined;
        }
        const r = await query<FetcherMessage, InvalidateResult>(this.opts.fetcher, (replyTo) => ({ type: 'invalidate', target, replyTo }), this.timeout());
        return { ok: true, instance, removed: r.removed };
      },
      opts,
    );
  }

  /** Drains every subscription; safe to call twice. */
  stop(): Promise<void> {
    return this.intake.drain();
  }

  private timeout(): number {
    return this.opts.queryTimeoutMs ?? 5_000;
  }
}

function toTarget(p: ImagesInvalidate): InvalidateTarget {
  const given = [p.url !== undefined, p.product_id !== undefined, p.all !== undefined].filter(Boolean).length;
  if (given !== 1) throw new InputError('BAD_PAYLOAD', 'give exactly one of "url", "product_id", "all": true');
  if (p.url !== undefined) {
    try {
      return { url: new URL(p.url).href };
    } catch {
      throw new InputError('BAD_PAYLOAD', `/url must be an absolute URL, got ${JSON.stringify(p.url)}`);
    }
  }
  if (p.product_id !== undefined) return { productId: p.product_id };
  return { all: true };
}

export interface ImagesRoleOptions {
  db: Knex;
  nc: NatsConnection;
  config: ImagesConfig;
  instanceId: string;
  subjects: SubjectSet;
  log: Logger;
  metrics: Metrics;
}

/** The images role between `prepareImages` and `start` (the steps of actors/root.ts). */
export interface PreparedImages {
  /** The image fetcher's ports, for `spawnRoot`. */
  readonly fetcher: { deps: FetcherDeps };
  /** Plans order notifications with product photos from the fetcher's cache (the pipeline's planner). */
  planner(fetcher: ActorRef<FetcherMessage>): Planner;
  /** Serves the fetcher's cache over NATS (`images.cache.*`); `stop()` drains it (the fetcher stops with the actor system). */
  start(refs: RootRefs): { stop(): Promise<void> };
}

export function prepareImages(o: ImagesRoleOptions): PreparedImages {
  return {
    fetcher: { deps: { config: o.config, metrics: o.metrics } },
    // The planner's wait covers a queue for a download slot plus the download itself.
    planner: (fetcher) => new OrderAwarePlanner(o.db, fetcherImageSource(fetcher, { timeoutMs: o.config.fetchTimeoutMs * 3 }), o.config, o.log),
    start: (refs) => {
      const service = new ImagesService({
        nc: o.nc,
        fetcher: spawned(refs, 'imageFetcher'),
        instanceId: o.instanceId,
        log: o.log,
        metrics: o.metrics,
        subjects: o.subjects,
      });
      service.start();
      return { stop: () => service.stop() };
    },
  };
}
