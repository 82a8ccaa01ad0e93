/**
 * The image fetcher: one per process, owner of the image cache. Downloads run outside
 * the mailbox (the handler starts them and returns), so a slow image never delays
 * cache hits, stats or invalidations. Images never travel over NATS (1 MiB max_payload):
 * callers in the same process query this actor.
 */
import { spawn, reply, query, assertNever, Supervision, type ActorRef, type Parent, type ReplyTo } from '../src/runtime/actor';
import { isAppError } from '../src/errors';
import type { ImageSource } from '../src/images/source';
import { ImageCache, type CacheStats, type FetchResult } from '../src/images/cache';
import { downloadImage, FETCH_FAILURE_REASONS, type DownloadOptions, type DownloadResult, type FetchFailureReason } from '../src/images/fetch';
import type { ImagesConfig } from '../src/config/images';
import type { Metrics } from '../src/metrics';

export type { FetchResult } from '../src/images/cache';

/** What to forget: one URL, every URL fetched for a product, or everything. */
export type InvalidateTarget = { url: string } | { productId: number } | { all: true };

export interface InvalidateResult {
  /** Cache entries removed (0 when nothing was cached). */
  removed: number;
}

export interface FetcherStats extends CacheStats {
  /** Downloads started (= misses). */
  downloads: number;
  /** Failed downloads by reason. */
  failures: Record<FetchFailureReason, number>;
  /** Downloads waiting for a free slot (IMAGE_FETCH_CONCURRENCY). */
  queued: number;
}

export type FetcherMessage =
  /** The image at `url` (absolute). Answers a FetchResult; never fails the query. */
  | { type: 'fetch'; url: string; /** tags the cache entry for invalidation by product */ productId?: number; replyTo: ReplyTo<FetchResult> }
  | { type: 'stats'; replyTo: ReplyTo<FetcherStats> }
  | { type: 'invalidate'; target: InvalidateTarget; replyTo?: ReplyTo<InvalidateResult> };

export interface FetcherState {
  cache: ImageCache;
  slots: Slots;
  failures: Record<FetchFailureReason, number>;
  /** Aborts downloads in flight when the actor stops. */
  abort: AbortController;
}

export interface FetcherDeps {
  config: Pick<ImagesConfig, 'allowedHosts' | 'cacheMaxBytes' | 'cacheTtlMs' | 'fetchTimeoutMs' | 'maxBytes' | 'fetchConcurrency'>;
  metrics?: Metrics;
  /** Injected for tests; default `downloadImage`. */
  download?: (url: string, opts: DownloadOptions) => Promise<DownloadResult>;
  /** Clock for cache TTLs (tests). */
  perf?: { now(): number };
}

export interface FetcherOptions {
  /** Default 'image-fetcher'. */
  name?: string;
}

export function spawnFetcher(parent: Parent, deps: FetcherDeps, options: FetcherOptions = {}): ActorRef<FetcherMessage> {
  const m = fetcherMetrics(deps.metrics);
  const download = deps.download ?? downloadImage;
  return spawn<FetcherState, FetcherMessage>(parent, {
    name: options.name ?? 'image-fetcher',
    // Handlers do not throw for bad input (failures are values); a crash is a bug: keep going.
    supervision: Supervision.resume(),
    init: () => {
      const cache = new ImageCache({
        maxBytes: deps.config.cacheMaxBytes,
        ttlMs: deps.config.cacheTtlMs,
        ...(deps.perf ? { perf: deps.perf } : {}),
        observer: {
          hit: () => m?.hits.inc(),
          miss: () => m?.misses.inc(),
          shared: () => m?.shared.inc(),
          evicted: () => m?.evictions.inc(),
          expired: () => m?.expirations.inc(),
          changed: (bytes, entries) => {
            m?.bytes.set(bytes);
            m?.entries.set(entries);
          },
        },
      });
      m?.maxBytes.set(deps.config.cacheMaxBytes);
      const failures = Object.fromEntries(FETCH_FAILURE_REASONS.map((r) => [r, 0])) as Record<FetchFailureReason, number>;
      return { cache, slots: new Slots(deps.config.fetchConcurrency), failures, abort: new AbortController() };
    },
    receive: (state, msg, ctx) => {
      switch (msg.type) {
        case 'fetch': {
          let url: string;
          try {
            url = new URL(msg.url).href;
          } catch {
            reply(msg.replyTo, { ok: false, reason: 'bad_url', message: `not an absolute URL: ${JSON.stringify(msg.url)}` });
            return state;
          }
          const load = async (): Promise<DownloadResult> => {
            await state.slots.acquire();
            const started = performance.now();
            try {
              const r = await download(url, {
                allowedHosts: deps.config.allowedHosts,
                timeoutMs: deps.config.fetchTimeoutMs,
                maxBytes: deps.config.maxBytes,
                signal: state.abort.signal,
              });
              m?.latency.observe({ outcome: r.ok ? 'ok' : 'failed' }, (performance.now() - started) / 1000);
              if (!r.ok) {
                state.failures[r.reason]++;
                m?.failures.inc({ reason: r.reason });
                ctx.log.warn({ url, reason: r.reason, status: r.status, err: r.message }, 'image download failed');
              }
              return r;
            } finally {
              state.slots.release();
            }
          };
          // Not awaited: the mailbox moves on while the download runs. get() never rejects.
          state.cache.get(url, load, msg.productId).then(
            (r) => reply(msg.replyTo, r),
            (e: unknown) => reply(msg.replyTo, { ok: false, reason: 'network', message: String(e) }),
          );
          return state;
        }
        case 'stats': {
          const s = state.cache.stats();
          reply(msg.replyTo, { ...s, downloads: s.misses, failures: { ...state.failures }, queued: state.slots.waiting });
          return state;
        }
        case 'invalidate': {
          const t = msg.target;
          let removed: number;
          if ('url' in t) {
            let url = t.url;
            try {
              url = new URL(t.url).href;
            } catch {
              /* not a URL: nothing cached under it */
            }
            removed = state.cache.invalidate(url);
          } else if ('productId' in t) {
            removed = state.cache.invalidateProduct(t.productId);
          } else {
            removed = state.cache.clear();
          }
          ctx.log.info({ target: t, removed }, 'image cache invalidated');
          if (msg.replyTo) reply(msg.replyTo, { removed });
          return state;
        }
        default:
          return assertNever(msg);
      }
    },
    afterStop: (state) => {
      state.abort.abort();
    },
  });
}

function fetcherMetrics(metrics: Metrics | undefined) {
  if (!metrics) return undefined;
  return {
    hits: metrics.counter('images_cache_hits_total', 'Image requests answered from the cache'),
    misses: metrics.counter('images_cache_misses_total', 'Image requests that started a download'),
    shared: metrics.counter('images_cache_shared_total', 'Image requests that joined a download in flight (single flight)'),
    evictions: metrics.counter('images_cache_evictions_total', 'Images evicted to stay within IMAGE_CACHE_MAX_BYTES'),
    expirations: metrics.counter('images_cache_expirations_total', 'Images dropped because older than IMAGE_CACHE_TTL_MS'),
    bytes: metrics.gauge('images_cache_bytes', 'Bytes of images held in the cache'),
    entries: metrics.gauge('images_cache_entries', 'Images held in the cache'),
    maxBytes: metrics.gauge('images_cache_max_bytes', 'The cache bound, IMAGE_CACHE_MAX_BYTES'),
    latency: metrics.histogram(
      'images_fetch_duration_seconds',
      'Image download time, redirects and body included',
      ['outcome'] as const,
      [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    ),
    failures: metrics.counter('images_fetch_failures_total', 'Failed image downloads by reason', ['reason'] as const),
  };
}

/** A counting semaphore: at most `max` downloads at once, the rest wait in order. */
class Slots {
  private active = 0;
  private readonly queue: Array<() => void> = [];
  constructor(private readonly max: number) {}

  get waiting(): number {
    return this.queue.length;
  }

  acquire(): Promise<void> {
    if (this.active < this.max) {
      this.active++;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.queue.push(resolve));
  }

  release(): void {
    const next = this.queue.shift();
    if (next) next();
    else this.active--;
  }
}

export interface FetcherSourceOptions {
  /**
   * How long to wait for the fetcher's answer. Must cover the queue for a download slot
   * plus IMAGE_FETCH_TIMEOUT_MS; a late answer is reported as `timeout`.
   */
  timeoutMs: number;
}

/** An ImageSource over the fetcher actor (query with a timeout). */
export function fetcherImageSource(fetcher: ActorRef<FetcherMessage>, opts: FetcherSourceOptions): ImageSource {
  return {
    async get(url, productId) {
      try {
        return await query<FetcherMessage, FetchResult>(
          fetcher,
          (replyTo) => (productId === undefined ? { type: 'fetch', url, replyTo } : { type: 'fetch', url, productId, replyTo }),
          opts.timeoutMs,
        );
      } catch (e) {
        if (isAppError(e) && e.code === 'QUERY_TIMEOUT')
          return { ok: false, reason: 'timeout', message: `no answer from the image fetcher within ${opts.timeoutMs} ms for ${url}` };
        return { ok: false, reason: 'network', message: `image fetcher unavailable: ${e instanceof Error ? e.message : String(e)}` };
      }
    },
  };
}
