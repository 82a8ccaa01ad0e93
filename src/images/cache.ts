import { LRUCache } from 'lru-cache';
import type { DownloadResult, FetchFailureReason } from './fetch';

/** What the fetcher answers for one image. Failures are values, never thrown. */
export type FetchResult =
  | { ok: true; bytes: Buffer; contentType: string; /** true: served from the cache without a download */ fromCache: boolean }
  | { ok: false; reason: FetchFailureReason; message: string };

/** One download in flight; identity tells whether it was invalidated meanwhile. */
interface Flight {
  promise: Promise<FetchResult>;
  /** Products asking for this URL, so invalidating one also stops the download from being stored. */
  products: Set<number>;
}

interface CachedImage {
  bytes: Buffer;
  contentType: string;
}

/** Called synchronously on cache events; used for metrics. Must not throw. */
export interface CacheObserver {
  hit?(): void;
  miss?(): void;
  /** A request joined a download already in flight (single flight). */
  shared?(): void;
  evicted?(bytes: number): void;
  expired?(bytes: number): void;
  changed?(bytes: number, entries: number): void;
}

export interface ImageCacheOptions {
  /** Bound on the sum of cached image sizes. 0 disables caching (single flight still applies). */
  maxBytes: number;
  /** Entries older than this are downloaded again. */
  ttlMs: number;
  /** Clock for TTLs (tests); default `performance`. */
  perf?: { now(): number };
  observer?: CacheObserver;
}

export interface CacheStats {
  entries: number;
  /** Bytes held now; never above `maxBytes`. */
  bytes: number;
  maxBytes: number;
  ttlMs: number;
  hits: number;
  /** Requests that started a download. */
  misses: number;
  /** Requests that joined a download in flight. */
  shared: number;
  /** Removed to make room (LRU). */
  evictions: number;
  /** Removed because older than the TTL (found stale on access). */
  expirations: number;
  /** Removed by `invalidate`. */
  invalidations: number;
  /** Downloads in flight now. */
  inflight: number;
  /** Images larger than the whole cache, served but not stored. */
  uncacheable: number;
}

/**
 * Image bytes by URL in an LRU bounded by total bytes (lru-cache `maxSize` with the
 * buffer length as each entry's size), with a TTL and single flight: concurrent
 * requests for one URL share one download. Failures are not cached.
 */
export class ImageCache {
  private readonly lru: LRUCache<string, CachedImage> | undefined;
  private readonly inflight = new Map<string, Flight>();
  /** Product id → URLs cached for it, so `invalidateProduct` can find them. */
  private readonly urlsOfProduct = new Map<number, Set<string>>();
  private readonly productsOfUrl = new Map<string, Set<number>>();
  private readonly counts = { hits: 0, misses: 0, shared: 0, evictions: 0, expirations: 0, invalidations: 0, uncacheable: 0 };

  constructor(private readonly opts: ImageCacheOptions) {
    if (opts.maxBytes > 0) {
      this.lru = new LRUCache<string, CachedImage>({
        maxSize: opts.maxBytes,
        sizeCalculation: (v) => Math.max(1, v.bytes.byteLength),
        ttl: opts.ttlMs,
        // TTL counts from the download, not from the last use: a changed image shows up within ttlMs.
        updateAgeOnGet: false,
        // lru-cache caches "now" for ttlResolution ms of real time; an injected clock must be read every time.
        ...(opts.perf ? { perf: opts.perf, ttlResolution: 0 } : {}),
        dispose: (v, key, reason) => this.onDispose(v, key, reason),
      });
    }
  }

  /**
   * The image at `url`: from the cache, from a download in flight, or by calling
   * `load` (exactly one `load` per URL at a time). `productId` tags the entry for
   * `invalidateProduct`.
   */
  async get(url: string, load: () => Promise<DownloadResult>, productId?: number): Promise<FetchResult> {
    const cached = this.lru?.get(url);
    if (cached) {
      this.counts.hits++;
      this.opts.observer?.hit?.();
      this.tag(url, productId);
      return { ok: true, bytes: cached.bytes, contentType: cached.contentType, fromCache: true };
    }
    const running = this.inflight.get(url);
    if (running) {
      if (productId !== undefined) running.products.add(productId);
      this.counts.shared++;
      this.opts.observer?.shared?.();
      const r = await running.promise;
      if (r.ok) this.tag(url, productId);
      return r;
    }
    this.counts.misses++;
    this.opts.observer?.miss?.();
    const flight: Flight = { promise: undefined as unknown as Promise<FetchResult>, products: new Set(productId === undefined ? [] : [productId]) };
    this.inflight.set(url, flight);
    flight.promise = this.load(url, load, flight);
    const r = await flight.promise;
    if (r.ok) this.tag(url, productId);
    return r;
  }

  private async load(url: string, load: () => Promise<DownloadResult>, flight: Flight): Promise<FetchResult> {
    let r: DownloadResult;
    try {
      r = await load();
    } catch (e) {
      r = { ok: false, reason: 'network', message: e instanceof Error ? e.message : String(e) };
    }
    // Only the current flight stores: one invalidated while running must not bring back stale bytes.
    const current = this.inflight.get(url) === flight;
    if (current) this.inflight.delete(url);
    if (!r.ok) return { ok: false, reason: r.reason, message: r.message };
    if (current && this.lru) {
      if (r.bytes.byteLength > this.opts.maxBytes) {
        this.counts.uncacheable++;
      } else {
        this.lru.set(url, { bytes: r.bytes, contentType: r.contentType });
        this.changed();
      }
    }
    return { ok: true, bytes: r.bytes, contentType: r.contentType, fromCache: false };
  }

  /** Forgets one URL (and lets a download in flight finish without storing). Returns entries removed. */
  invalidate(url: string): number {
    this.inflight.delete(url);
    const had = this.lru?.delete(url) ?? false;
    if (had) this.changed();
    return had ? 1 : 0;
  }

  /** Forgets every URL cached for a product. Returns entries removed. */
  invalidateProduct(productId: number): number {
    // A download still running for the product must not store the old image either.
    for (const [url, flight] of this.inflight) if (flight.products.has(productId)) this.inflight.delete(url);
    const urls = this.urlsOfProduct.get(productId);
    if (!urls) return 0;
    let n = 0;
    for (const url of [...urls]) n += this.invalidate(url);
    this.urlsOfProduct.delete(productId);
    return n;
  }

  /** Forgets everything. Returns entries removed. */
  clear(): number {
    const n = this.lru?.size ?? 0;
    this.inflight.clear();
    this.lru?.clear();
    this.changed();
    return n;
  }

  has(url: string): boolean {
    return this.lru?.has(url) ?? false;
  }

  /** Bytes held now (lru-cache's `calculatedSize`). */
  get bytes(): number {
    return this.lru?.calculatedSize ?? 0;
  }

  stats(): CacheStats {
    return {
      entries: this.lru?.size ?? 0,
      bytes: this.bytes,
      maxBytes: this.opts.maxBytes,
      ttlMs: this.opts.ttlMs,
      ...this.counts,
      inflight: this.inflight.size,
    };
  }

  private tag(url: string, productId: number | undefined): void {
    if (productId === undefined || !this.lru?.has(url)) return;
    let urls = this.urlsOfProduct.get(productId);
    if (!urls) this.urlsOfProduct.set(productId, (urls = new Set()));
    urls.add(url);
    let products = this.productsOfUrl.get(url);
    if (!products) this.productsOfUrl.set(url, (products = new Set()));
    products.add(productId);
  }

  private onDispose(v: CachedImage, url: string, reason: LRUCache.DisposeReason): void {
    if (reason === 'set') return; // same key overwritten: still cached
    if (reason === 'evict') {
      this.counts.evictions++;
      this.opts.observer?.evicted?.(v.bytes.byteLength);
    } else if (reason === 'expire') {
      this.counts.expirations++;
      this.opts.observer?.expired?.(v.bytes.byteLength);
    } else if (reason === 'delete') {
      this.counts.invalidations++;
    }
    const products = this.productsOfUrl.get(url);
    if (products) {
      for (const id of products) {
        const urls = this.urlsOfProduct.get(id);
        urls?.delete(url);
        if (urls && urls.size === 0) this.urlsOfProduct.delete(id);
      }
      this.productsOfUrl.delete(url);
    }
    // Evictions happen inside set(); report the size after it settled.
    queueMicrotask(() => this.changed());
  }

  private changed(): void {
    this.opts.observer?.changed?.(this.bytes, this.lru?.size ?? 0);
  }
}
