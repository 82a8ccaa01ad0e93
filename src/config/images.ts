import { ConfigError } from '../errors';
import { EnvReader } from './core';

type Env = Record<string, string | undefined>;

/** How a product photo reaches Telegram. */
export type ImageSendMode = 'upload' | 'url';

/**
 * Configuration of the image fetcher and of new-order notifications. Parsed once at
 * start-up; every error names its variable. Documented in docs/images.md.
 */
export interface ImagesConfig {
  /** Product `image_path`s are resolved against this URL. Undefined: paths must be absolute URLs. */
  baseUrl: string | undefined;
  /** Hosts images may be downloaded from, also after every redirect. Default: the host of `baseUrl`. */
  allowedHosts: string[];
  /** Upper bound of the cached image bytes per process. */
  cacheMaxBytes: number;
  /** A cached image is downloaded again this long after it was stored. */
  cacheTtlMs: number;
  /** Whole download (all redirect hops and the body) must finish within this. */
  fetchTimeoutMs: number;
  /** Larger images are refused (Telegram's upload limit is 10 MB). */
  maxBytes: number;
  /** Downloads running at once per process; more wait their turn. */
  fetchConcurrency: number;
  /** 'upload' sends the bytes we downloaded; 'url' lets Telegram fetch the (public) URL. */
  sendMode: ImageSendMode;
  /** Chats whose legacy rows (`НОВЫЙ ЗАКАЗ #<id>`, no kind) are treated as new-order notifications. */
  adminChatIds: number[];
  /** Caption per photo; placeholders {name}, {price}, {quantity}, {id}. */
  orderCaptionTemplate: string;
  /** Said under the caption of a product whose photo could not be sent; in the captions' language. Default IMAGES_DEFAULTS.ORDER_IMAGE_UNAVAILABLE_TEXT. */
  orderImageUnavailableText?: string;
}

export const IMAGES_DEFAULTS = {
  IMAGE_CACHE_MAX_BYTES: 256 * 1024 * 1024,
  IMAGE_CACHE_TTL_MS: 60 * 60 * 1000,
  IMAGE_FETCH_TIMEOUT_MS: 10_000,
  /** Telegram's limit for uploaded photos. */
  IMAGE_MAX_BYTES: 10 * 1024 * 1024,
  IMAGE_FETCH_CONCURRENCY: 8,
  IMAGE_SEND_MODE: 'upload',
  ORDER_CAPTION_TEMPLATE: 'Товар: {name}\nЦена: {price} руб.',
  /** The default captions are Russian: so is this. */
  ORDER_IMAGE_UNAVAILABLE_TEXT: '(изображение недоступно)',
} as const;

const HOST_ENTRY = /^(\*\.)?([a-z0-9-]+(\.[a-z0-9-]+)*|\[[0-9a-f:.]+\])(:\d{1,5})?$/i;

/** Parses the IMAGE_* variables, ADMIN_CHAT_IDS and ORDER_CAPTION_TEMPLATE. Throws ConfigError naming the variable. */
export function loadImagesConfig(env: Env = process.env): ImagesConfig {
  const r = new EnvReader(env);
  const rawBase = r.optionalString('IMAGE_BASE_URL');
  let baseUrl: string | undefined;
  if (rawBase !== undefined) {
    baseUrl = r.url('IMAGE_BASE_URL', rawBase, ['http:', 'https:']);
    // `new URL('p.jpg', 'https://cdn/img')` drops `img`: a base with a path needs its trailing slash.
    if (!baseUrl.endsWith('/')) baseUrl += '/';
  }

  const hostsRaw = r.optionalString('IMAGE_ALLOWED_HOSTS');
  let allowedHosts: string[];
  if (hostsRaw !== undefined) {
    allowedHosts = hostsRaw
      .split(',')
      .map((h) => h.trim().toLowerCase())
      .filter((h) => h !== '');
    for (const h of allowedHosts) {
      if (!HOST_ENTRY.test(h))
        throw new ConfigError('IMAGE_ALLOWED_HOSTS', `expected comma-separated host names (optionally host:port or *.domain), got ${JSON.stringify(h)}`);
    }
  } else {
    allowedHosts = baseUrl ? [new URL(baseUrl).hostname.toLowerCase()] : [];
  }

  const template =
    env.ORDER_CAPTION_TEMPLATE !== undefined && env.ORDER_CAPTION_TEMPLATE.trim() !== ''
      ? env.ORDER_CAPTION_TEMPLATE.replace(/\\n/g, '\n')
      : IMAGES_DEFAULTS.ORDER_CAPTION_TEMPLATE;
  const unknown = [...template.matchAll(/\{([^{}]*)\}/g)].map((m) => m[1]).filter((p) => !['name', 'price', 'quantity', 'id'].includes(p ?? ''));
  if (unknown.length > 0) throw new ConfigError('ORDER_CAPTION_TEMPLATE', `unknown placeholder {${unknown[0]}}; use {name}, {price}, {quantity} or {id}`);
  if (template.length > 1024)
    throw new ConfigError('ORDER_CAPTION_TEMPLATE', `expected at most 1024 characters (Telegram's caption limit), got ${template.length}`);

  const maxBytes = r.integer('IMAGE_MAX_BYTES', IMAGES_DEFAULTS.IMAGE_MAX_BYTES, { min: 1, max: 50 * 1024 * 1024 });
  const cacheMaxBytes = r.integer('IMAGE_CACHE_MAX_BYTES', IMAGES_DEFAULTS.IMAGE_CACHE_MAX_BYTES, { min: 0, max: Number.MAX_SAFE_INTEGER });

  return {
    baseUrl,
    allowedHosts,
    cacheMaxBytes,
    cacheTtlMs: r.duration('IMAGE_CACHE_TTL_MS', IMAGES_DEFAULTS.IMAGE_CACHE_TTL_MS, { min: 1, max: 30 * 86_400_000 }),
    fetchTimeoutMs: r.duration('IMAGE_FETCH_TIMEOUT_MS', IMAGES_DEFAULTS.IMAGE_FETCH_TIMEOUT_MS, { min: 100, max: 600_000 }),
    maxBytes,
    fetchConcurrency: r.integer('IMAGE_FETCH_CONCURRENCY', IMAGES_DEFAULTS.IMAGE_FETCH_CONCURRENCY, { min: 1, max: 256 }),
    sendMode: r.oneOf('IMAGE_SEND_MODE', ['upload', 'url'] as const, IMAGES_DEFAULTS.IMAGE_SEND_MODE),
    adminChatIds: r.integerList('ADMIN_CHAT_IDS'),
    orderCaptionTemplate: template,
    orderImageUnavailableText: unavailableText(r),
  };
}

function unavailableText(r: EnvReader): string {
  const v = r.string('ORDER_IMAGE_UNAVAILABLE_TEXT', IMAGES_DEFAULTS.ORDER_IMAGE_UNAVAILABLE_TEXT);
  if (v.length > 200) throw new ConfigError('ORDER_IMAGE_UNAVAILABLE_TEXT', `expected at most 200 characters, got ${v.length}`);
  return v;
}

/** True when `url`'s host is in the allow-list (`host`, `host:port` or `*.domain`). */
export function hostAllowed(url: URL, allowedHosts: readonly string[]): boolean {
  const hostname = url.hostname.toLowerCase();
  const host = url.host.toLowerCase();
  return allowedHosts.some((entry) => {
    if (entry.startsWith('*.')) return hostname.endsWith(entry.slice(1)) && hostname.length > entry.length - 1;
    return entry.includes(':') && !entry.startsWith('[') ? entry === host : entry === hostname || entry === host;
  });
}
