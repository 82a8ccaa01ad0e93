import { hostAllowed } from '../config/images';

/**
 * Why a download failed. Stable strings: they label metrics and appear in logs.
 * - `bad_url`: not an absolute http(s) URL (or a relative path without IMAGE_BASE_URL)
 * - `host_not_allowed`: the URL's host is outside IMAGE_ALLOWED_HOSTS
 * - `redirect_not_allowed`: a redirect led outside the allow-list or to another scheme, or there were more than `maxRedirects`
 * - `timeout`: the whole download (hops and body) took longer than `timeoutMs`
 * - `http_status`: an answer other than 2xx (or a 3xx without Location)
 * - `not_image`: the Content-Type is not one of PHOTO_TYPES (JPEG, PNG, WebP, GIF — what Telegram takes as a
 *   photo; SVG is not), or the bytes do not start with one of those formats' signatures
 * - `too_large`: Content-Length or the streamed body exceeds `maxBytes`
 * - `network`: connection refused/reset, DNS, TLS, a body cut short
 */
export type FetchFailureReason = 'bad_url' | 'host_not_allowed' | 'redirect_not_allowed' | 'timeout' | 'http_status' | 'not_image' | 'too_large' | 'network';

export const FETCH_FAILURE_REASONS: readonly FetchFailureReason[] = [
  'bad_url',
  'host_not_allowed',
  'redirect_not_allowed',
  'timeout',
  'http_status',
  'not_image',
  'too_large',
  'network',
];

export interface FetchFailure {
  ok: false;
  reason: FetchFailureReason;
  /** One line for logs: what failed and where (never secrets; URLs are ours). */
  message: string;
  /** The HTTP status, when the failure came with one. */
  status?: number;
}

export interface DownloadedImage {
  ok: true;
  bytes: Buffer;
  /** e.g. `image/jpeg` (parameters stripped, lower case). */
  contentType: string;
  /** The URL the bytes came from, after redirects. */
  finalUrl: string;
}

export type DownloadResult = DownloadedImage | FetchFailure;

export interface DownloadOptions {
  /** Hosts allowed for the first URL and every redirect hop (see `hostAllowed`). */
  allowedHosts: readonly string[];
  /** Deadline for the whole download: every hop plus the body. */
  timeoutMs: number;
  /** Bodies larger than this are refused, announced (Content-Length) or streamed. */
  maxBytes: number;
  /** Default 5. */
  maxRedirects?: number;
  /** Aborts the download from outside (shutdown); reported as `network`. */
  signal?: AbortSignal;
  /** Injected for tests; default: Node's global fetch (undici). */
  fetch?: typeof fetch;
}

const REDIRECTS = new Set([301, 302, 303, 307, 308]);

/** Content types accepted (Telegram photos: JPEG, PNG, WebP; GIF is sent as an animation). Aliases map to the canonical type. */
export const PHOTO_TYPES: Readonly<Record<string, string>> = {
  'image/jpeg': 'image/jpeg',
  'image/jpg': 'image/jpeg',
  'image/pjpeg': 'image/jpeg',
  'image/png': 'image/png',
  'image/webp': 'image/webp',
  'image/gif': 'image/gif',
};

/**
 * The format of `bytes` from its signature, or undefined when it is none of JPEG
 * (FF D8 FF), PNG (89 'PNG' 0D 0A 1A 0A), GIF ('GIF87a'/'GIF89a') or WebP ('RIFF' … 'WEBP').
 */
export function sniffImageType(bytes: Uint8Array): string | undefined {
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, Math.min(bytes.byteLength, 16));
  if (b.length >= 3 && b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) return 'image/jpeg';
  if (b.length >= 8 && b.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]))) return 'image/png';
  if (b.length >= 6 && (b.toString('latin1', 0, 6) === 'GIF87a' || b.toString('latin1', 0, 6) === 'GIF89a')) return 'image/gif';
  if (b.length >= 12 && b.toString('latin1', 0, 4) === 'RIFF' && b.toString('latin1', 8, 12) === 'WEBP') return 'image/webp';
  return undefined;
}

/**
 * Downloads one image with GET. Never throws: every failure is a typed FetchFailure.
 * Redirects are followed by hand so that each hop's host is checked against the
 * allow-list before we connect to it.
 */
export async function downloadImage(url: string, opts: DownloadOptions): Promise<DownloadResult> {
  const maxRedirects = opts.maxRedirects ?? 5;
  const doFetch = opts.fetch ?? fetch;
  let current: URL;
  try {
    current = new URL(url);
  } catch {
    return fail('bad_url', `not an absolute URL: ${JSON.stringify(url)}`);
  }
  if (current.protocol !== 'http:' && current.protocol !== 'https:') return fail('bad_url', `scheme ${current.protocol} is not http(s): ${url}`);
  if (!hostAllowed(current, opts.allowedHosts))
    return fail('host_not_allowed', `host ${current.host} is not in IMAGE_ALLOWED_HOSTS (${opts.allowedHosts.join(',') || 'empty'}): ${url}`);

  const controller = new AbortController();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    controller.abort();
  }, opts.timeoutMs);
  const onOuterAbort = (): void => controller.abort();
  opts.signal?.addEventListener('abort', onOuterAbort, { once: true });
  if (opts.signal?.aborted) controller.abort();

  let res: Response | undefined;
  try {
    for (let hop = 0; ; hop++) {
      res = await doFetch(current, { method: 'GET', redirect: 'manual', signal: controller.signal, headers: { accept: 'image/*' } });
      if (!REDIRECTS.has(res.status)) break;
      const location = res.headers.get('location');
      await discard(res);
      if (!location) return fail('http_status', `HTTP ${res.status} without Location from ${current.href}`, res.status);
      if (hop >= maxRedirects) return fail('redirect_not_allowed', `more than ${maxRedirects} redirects starting at ${url}`, res.status);
      let next: URL;
      try {
        next = new URL(location, current);
      } catch {
        return fail('redirect_not_allowed', `unparsable redirect Location ${JSON.stringify(location)} from ${current.href}`, res.status);
      }
      if (next.protocol !== 'http:' && next.protocol !== 'https:')
        return fail('redirect_not_allowed', `redirect to scheme ${next.protocol} from ${current.href}`, res.status);
      if (!hostAllowed(next, opts.allowedHosts))
        return fail('redirect_not_allowed', `redirect from ${current.href} to host ${next.host}, which is not in IMAGE_ALLOWED_HOSTS`, res.status);
      current = next;
    }

    if (res.status < 200 || res.status > 299) {
      await discard(res);
      return fail('http_status', `HTTP ${res.status} from ${current.href}`, res.status);
    }
    const declared = (res.headers.get('content-type') ?? '').split(';')[0]!.trim().toLowerCase();
    if (PHOTO_TYPES[declared] === undefined) {
      await discard(res);
      return fail(
        'not_image',
        `Content-Type ${JSON.stringify(declared.slice(0, 100) || '(none)')} is not a photo type Telegram takes (JPEG, PNG, WebP, GIF) at ${current.href}`,
        res.status,
      );
    }
    const announced = res.headers.get('content-length');
    if (announced !== null && /^\d+$/.test(announced) && Number(announced) > opts.maxBytes) {
      await discard(res);
      return fail('too_large', `Content-Length ${announced} exceeds the limit of ${opts.maxBytes} bytes at ${current.href}`, res.status);
    }

    const chunks: Buffer[] = [];
    let total = 0;
    if (res.body) {
      // A fetch body is bytes; node's typings leave its chunk type `any`.
      const reader = (res.body as ReadableStream<Uint8Array>).getReader();
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        total += value.byteLength;
        if (total > opts.maxBytes) {
          controller.abort();
          await reader.cancel().catch(() => undefined);
          return fail('too_large', `body exceeds the limit of ${opts.maxBytes} bytes at ${current.href}`, res.status);
        }
        chunks.push(Buffer.from(value.buffer, value.byteOffset, value.byteLength));
      }
    }
    // concat copies even one chunk: a cached Buffer must not pin a larger pooled ArrayBuffer.
    const bytes = Buffer.concat(chunks, total);
    // The bytes decide: a server may call anything image/png. The sniffed type is the one we report.
    const contentType = sniffImageType(bytes);
    if (contentType === undefined)
      return fail('not_image', `the body (declared ${declared}) does not start with a JPEG, PNG, WebP or GIF signature at ${current.href}`, res.status);
    return { ok: true, bytes, contentType, finalUrl: current.href };
  } catch (e) {
    if (timedOut) return fail('timeout', `no complete answer within ${opts.timeoutMs} ms from ${current.href}`);
    return fail('network', `${describeNetworkError(e)} at ${current.href}`);
  } finally {
    clearTimeout(timer);
    opts.signal?.removeEventListener('abort', onOuterAbort);
  }
}

function fail(reason: FetchFailureReason, message: string, status?: number): FetchFailure {
  return status === undefined ? { ok: false, reason, message } : { ok: false, reason, message, status };
}

/** Releases the connection of a response whose body we do not want. */
async function discard(res: Response): Promise<void> {
  try {
    await res.body?.cancel();
  } catch {
    /* already closed */
  }
}

function describeNetworkError(e: unknown): string {
  if (e instanceof Error) {
    const cause = (e as Error & { cause?: unknown }).cause;
    if (cause instanceof Error) {
      const code = (cause as Error & { code?: string }).code;
      return code ? `${e.message}: ${code}` : `${e.message}: ${cause.message}`;
    }
    return e.message || e.name;
  }
  return String(e);
}
