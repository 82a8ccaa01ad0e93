import type { FetchResult } from './cache';

/** Where planning gets image bytes from: the image fetcher actor in production (`fetcherImageSource` in `actors/image-fetcher.ts`), a stub in unit tests. */
export interface ImageSource {
  /** Never rejects: a failure is `{ ok: false, reason, message }`. `productId` tags the cache entry. */
  get(url: string, productId?: number): Promise<FetchResult>;
}
