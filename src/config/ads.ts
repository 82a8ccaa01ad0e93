import { isIP } from 'node:net';
import { EnvReader, instanceIdVar, natsReplicasVar, subjectPrefixVar } from './core';
import { ConfigError } from '../errors';

type Env = Record<string, string | undefined>;

/** Configuration of the ads roles (gateway, view counter, bump, unread cache). Documented in docs/ads.md. */
export interface AdsConfig {
  instanceId: string;
  /** NATS_SUBJECT_PREFIX: prepended to every subject (e.g. `staging.`); '' in production. Tests use a unique one. */
  subjectPrefix: string;
  /** JetStream stream holding view events (subjects `<prefix>ads.views.>`). */
  viewsStream: string;
  /** Durable pull consumer shared by every view-counter process. */
  viewsConsumer: string;
  /** A visitor counts once per ad per window of this length (ms, fixed windows since the epoch). */
  viewDedupWindowMs: number;
  /** Flush pending views at the latest this long after the first one arrived (ms). */
  viewFlushMs: number;
  /** ... or as soon as this many distinct views are pending. */
  viewFlushMax: number;
  /** JetStream ack wait of the consumer (ms): unacked messages are redelivered after it. */
  viewAckWaitMs: number;
  /** Stream-side dedup of publisher retries by msgID (ms). */
  viewDuplicateWindowMs: number;
  /** How long unconsumed view events stay in the stream (ms). */
  viewStreamMaxAgeMs: number;
  /** Replicas of the views stream and its consumer (NATS_REPLICAS, shared with the pipeline; docs/deploy.md). */
  natsReplicas: number;
  /** Salt of the visitor hash (secret). */
  viewHashSalt: string;
  bumpIntervalMs: number;
  bumpCheckMs: number;
  bumpLeaseMs: number;
  bumpChunk: number;
  unreadCacheMax: number;
  unreadCacheTtlMs: number;
  gatewayHost: string;
  gatewayPort: number;
  gatewayBodyLimit: number;
  rateLimitMax: number;
  rateLimitWindowMs: number;
  /** IPs / CIDRs whose X-Forwarded-For is believed. Empty: the peer address is the client. */
  trustedProxies: string[];
  /** Bearer token for POST /notifications and POST /ads/bump; undefined disables them (401). Secret. */
  apiToken: string | undefined;
  /** Timeout of the gateway's NATS requests and JetStream publishes (ms). */
  requestTimeoutMs: number;
  /** How long the gateway remembers that an ad exists (ms). */
  adCacheTtlMs: number;
  /** Subject of the pipeline's enqueue service (POST /notifications); tests use a unique one. */
  enqueueSubject: string;
  /** A request's headers and body must arrive within this (ms), or it is answered 408 and its connection closed (slow bodies). */
  gatewayRequestTimeoutMs: number;
  /** A connection silent for this long (ms) is closed. */
  gatewayIdleTimeoutMs: number;
  /** An idle keep-alive connection is closed after this (ms). */
  gatewayKeepAliveTimeoutMs: number;
  /** `Retry-After` (seconds) of every 503 (database or NATS unavailable). */
  gatewayRetryAfterS: number;
  /** Distinct visitor_ids counted per client IP per ad per dedup window; further ones are accepted but not counted. */
  viewVisitorsPerIp: number;
}

/** Named defaults, so docs/ads.md and the code agree. Durations in ms. */
export const ADS_DEFAULTS = {
  VIEWS_STREAM: 'ADS_VIEWS',
  VIEWS_CONSUMER: 'ads-view-counter',
  VIEW_DEDUP_WINDOW: 86_400_000,
  VIEW_FLUSH_MS: 1_000,
  VIEW_FLUSH_MAX: 5_000,
  VIEW_ACK_WAIT_MS: 30_000,
  VIEW_DUPLICATE_WINDOW: 120_000,
  VIEW_STREAM_MAX_AGE: 7 * 86_400_000,
  VIEW_HASH_SALT: '',
  BUMP_INTERVAL: 3 * 3_600_000,
  BUMP_CHECK_MS: 30_000,
  BUMP_LEASE_MS: 90_000,
  BUMP_CHUNK: 5_000,
  UNREAD_CACHE_MAX: 100_000,
  UNREAD_CACHE_TTL: 300_000,
  GATEWAY_HOST: '0.0.0.0',
  GATEWAY_PORT: 8080,
  GATEWAY_BODY_LIMIT: 16_384,
  RATE_LIMIT_MAX: 1_200,
  RATE_LIMIT_WINDOW: 60_000,
  TRUSTED_PROXIES: '',
  ADS_REQUEST_TIMEOUT_MS: 2_000,
  AD_CACHE_TTL: 60_000,
  // The pipeline's enqueue subject (src/nats/subjects.ts); NATS_SUBJECT_PREFIX is prepended.
  ADS_ENQUEUE_SUBJECT: 'notify.enqueue',
  GATEWAY_REQUEST_TIMEOUT: 10_000,
  GATEWAY_IDLE_TIMEOUT: 30_000,
  GATEWAY_KEEPALIVE_TIMEOUT: 5_000,
  GATEWAY_RETRY_AFTER: 5_000,
  VIEW_VISITORS_PER_IP: 5,
} as const;

function readProxies(r: EnvReader, name: string): string[] {
  const v = r.raw(name);
  if (v === undefined) return [];
  return v.split(',').map((part) => {
    const p = part.trim();
    const [addr, bits, extra] = p.split('/');
    const family = isIP(addr ?? '');
    const maxBits = family === 6 ? 128 : 32;
    const okBits = bits === undefined || (/^\d{1,3}$/.test(bits) && Number(bits) <= maxBits);
    if (!family || !okBits || extra !== undefined)
      throw new ConfigError(name, `expected comma-separated IP addresses or CIDRs (e.g. 10.0.0.0/8,::1), got ${JSON.stringify(p)}`);
    return p;
  });
}

function subject(r: EnvReader, name: string, def: string): string {
  const v = r.string(name, def);
  if (!/^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/.test(v))
    throw new ConfigError(name, `expected a NATS subject without wildcards such as notify.enqueue, got ${JSON.stringify(v)}`);
  return v;
}

/** Parses and validates the ads variables. Throws ConfigError naming the first bad variable. */
export function loadAdsConfig(env: Env = process.env): AdsConfig {
  const r = new EnvReader(env);
  // One prefix for every subject of a deployment (notify.*, images.*, ads.*, messages.*).
  if (r.raw('ADS_SUBJECT_PREFIX') !== undefined) {
    throw new ConfigError(
      'ADS_SUBJECT_PREFIX',
      'no longer read: NATS_SUBJECT_PREFIX now prefixes every subject, ads.* and messages.* included; set that and remove ADS_SUBJECT_PREFIX',
    );
  }
  const subjectPrefix = subjectPrefixVar(r, 'NATS_SUBJECT_PREFIX');
  const name = (v: string, def: string): string => {
    const s = r.string(v, def);
    if (!/^[A-Za-z0-9_-]{1,64}$/.test(s)) throw new ConfigError(v, `expected 1-64 characters of A-Z a-z 0-9 _ -, got ${JSON.stringify(s)}`);
    return s;
  };
  const apiToken = r.optionalString('ADS_API_TOKEN');
  if (apiToken !== undefined && apiToken.length < 16) throw new ConfigError('ADS_API_TOKEN', 'expected at least 16 characters (value not shown)');
  const viewFlushMs = r.duration('VIEW_FLUSH_MS', ADS_DEFAULTS.VIEW_FLUSH_MS, { min: 10, max: 600_000 });
  const bumpCheckMs = r.duration('BUMP_CHECK_MS', ADS_DEFAULTS.BUMP_CHECK_MS, { min: 10, max: 3_600_000 });
  const bumpLeaseMs = r.duration('BUMP_LEASE_MS', ADS_DEFAULTS.BUMP_LEASE_MS, { min: 100, max: 3_600_000 });
  if (bumpLeaseMs <= bumpCheckMs)
    throw new ConfigError('BUMP_LEASE_MS', `expected more than BUMP_CHECK_MS (${bumpCheckMs}), got ${bumpLeaseMs}: the leader renews its lease at each check`);
  return {
    instanceId: instanceIdVar(r),
    subjectPrefix,
    // Deployments that share a NATS server (a prefix each) get a stream each by default: `staging.` → staging_ADS_VIEWS.
    viewsStream: name('VIEWS_STREAM', `${subjectPrefix.replace(/\./g, '_')}${ADS_DEFAULTS.VIEWS_STREAM}`),
    viewsConsumer: name('VIEWS_CONSUMER', ADS_DEFAULTS.VIEWS_CONSUMER),
    viewDedupWindowMs: r.duration('VIEW_DEDUP_WINDOW', ADS_DEFAULTS.VIEW_DEDUP_WINDOW, { min: 1_000, max: 366 * 86_400_000 }),
    viewFlushMs,
    viewFlushMax: r.integer('VIEW_FLUSH_MAX', ADS_DEFAULTS.VIEW_FLUSH_MAX, { min: 1, max: 20_000 }),
    viewAckWaitMs: r.duration('VIEW_ACK_WAIT_MS', ADS_DEFAULTS.VIEW_ACK_WAIT_MS, { min: 1_000, max: 3_600_000 }),
    viewDuplicateWindowMs: r.duration('VIEW_DUPLICATE_WINDOW', ADS_DEFAULTS.VIEW_DUPLICATE_WINDOW, { min: 1_000, max: 86_400_000 }),
    viewStreamMaxAgeMs: r.duration('VIEW_STREAM_MAX_AGE', ADS_DEFAULTS.VIEW_STREAM_MAX_AGE, { min: 60_000, max: 365 * 86_400_000 }),
    natsReplicas: natsReplicasVar(r),
    viewHashSalt: r.string('VIEW_HASH_SALT', ADS_DEFAULTS.VIEW_HASH_SALT),
    bumpIntervalMs: r.duration('BUMP_INTERVAL', ADS_DEFAULTS.BUMP_INTERVAL, { min: 1_000, max: 365 * 86_400_000 }),
    bumpCheckMs,
    bumpLeaseMs,
    bumpChunk: r.integer('BUMP_CHUNK', ADS_DEFAULTS.BUMP_CHUNK, { min: 1, max: 100_000 }),
    unreadCacheMax: r.integer('UNREAD_CACHE_MAX', ADS_DEFAULTS.UNREAD_CACHE_MAX, { min: 1, max: 10_000_000 }),
    unreadCacheTtlMs: r.duration('UNREAD_CACHE_TTL', ADS_DEFAULTS.UNREAD_CACHE_TTL, { min: 1_000, max: 86_400_000 }),
    gatewayHost: r.string('GATEWAY_HOST', ADS_DEFAULTS.GATEWAY_HOST),
    gatewayPort: r.integer('GATEWAY_PORT', ADS_DEFAULTS.GATEWAY_PORT, { min: 0, max: 65535 }),
    gatewayBodyLimit: r.integer('GATEWAY_BODY_LIMIT', ADS_DEFAULTS.GATEWAY_BODY_LIMIT, { min: 256, max: 1_048_576 }),
    rateLimitMax: r.integer('RATE_LIMIT_MAX', ADS_DEFAULTS.RATE_LIMIT_MAX, { min: 1, max: 100_000_000 }),
    rateLimitWindowMs: r.duration('RATE_LIMIT_WINDOW', ADS_DEFAULTS.RATE_LIMIT_WINDOW, { min: 1_000, max: 86_400_000 }),
    trustedProxies: readProxies(r, 'TRUSTED_PROXIES'),
    apiToken,
    requestTimeoutMs: r.duration('ADS_REQUEST_TIMEOUT_MS', ADS_DEFAULTS.ADS_REQUEST_TIMEOUT_MS, { min: 50, max: 60_000 }),
    adCacheTtlMs: r.duration('AD_CACHE_TTL', ADS_DEFAULTS.AD_CACHE_TTL, { min: 0, max: 86_400_000 }),
    // Follows the pipeline's NATS_SUBJECT_PREFIX unless set explicitly.
    enqueueSubject: subject(r, 'ADS_ENQUEUE_SUBJECT', `${r.raw('NATS_SUBJECT_PREFIX') ?? ''}${ADS_DEFAULTS.ADS_ENQUEUE_SUBJECT}`),
    gatewayRequestTimeoutMs: r.duration('GATEWAY_REQUEST_TIMEOUT', ADS_DEFAULTS.GATEWAY_REQUEST_TIMEOUT, { min: 100, max: 600_000 }),
    gatewayIdleTimeoutMs: r.duration('GATEWAY_IDLE_TIMEOUT', ADS_DEFAULTS.GATEWAY_IDLE_TIMEOUT, { min: 100, max: 3_600_000 }),
    gatewayKeepAliveTimeoutMs: r.duration('GATEWAY_KEEPALIVE_TIMEOUT', ADS_DEFAULTS.GATEWAY_KEEPALIVE_TIMEOUT, { min: 100, max: 600_000 }),
    gatewayRetryAfterS: Math.ceil(r.duration('GATEWAY_RETRY_AFTER', ADS_DEFAULTS.GATEWAY_RETRY_AFTER, { min: 1_000, max: 3_600_000 }) / 1_000),
    viewVisitorsPerIp: r.integer('VIEW_VISITORS_PER_IP', ADS_DEFAULTS.VIEW_VISITORS_PER_IP, { min: 1, max: 100_000 }),
  };
}

/** A copy safe to log. */
export function describeAdsConfig(c: AdsConfig): Record<string, unknown> {
  return { ...c, apiToken: c.apiToken ? '***' : undefined, viewHashSalt: c.viewHashSalt ? '***' : '' };
}
