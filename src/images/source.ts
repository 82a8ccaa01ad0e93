import { query, type ActorRef } from '../runtime/actor';
import { isAppError } from '../errors';
import type { FetchResult } from './cache';
import type { FetcherMessage } from '../../actors/fetcher';

/** Where planning gets image bytes from: the fetcher actor in production, a stub in unit tests. */
export interface ImageSource {
  /** Never rejects: a failure is `{ ok: false, reason, message }`. `productId` tags the cache entry. */
  get(url: string, productId?: number): Promise<FetchResult>;
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
        if (isAppError(e) && e.code === 'QUERY_TIMEOUT') return { ok: false, reason: 'timeout', message: `no answer from the image fetcher within ${opts.timeoutMs} ms for ${url}` };
        return { ok: false, reason: 'network', message: `image fetcher unavailable: ${e instanceof Error ? e.message : String(e)}` };
      }
    },
  };
}
