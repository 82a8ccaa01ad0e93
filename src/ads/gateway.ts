/**
 * The HTTP ads gateway (fastify). Every route validates params and body with a TypeBox
 * schema (unknown fields rejected, no type coercion), bodies are capped at
 * GATEWAY_BODY_LIMIT, every client IP is rate-limited, and every error is JSON
 * `{code, message}` with a stable code from src/errors.ts. Endpoints: docs/ads.md.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import Fastify, { type FastifyError, type FastifyInstance, type FastifyRequest } from 'fastify';
import rateLimit from '@fastify/rate-limit';
import { Type, type Static } from '@sinclair/typebox';
import { LRUCache } from 'lru-cache';
import { RequestStrategy, type NatsConnection, type JetStreamClient } from 'nats';
import type { Knex } from '../db/knex';
import type { Logger } from '../log';
import type { Metrics } from '../metrics';
import type { AdsConfig } from './config';
import { AppError, InputError, describeError, isAppError, type ErrorCode } from '../errors';
import { Subjects } from '../nats/subjects';
import { encodeJson } from '../nats/codec';
import { EnqueueRequest, type EnqueueReply } from '../nats/payloads';
import { parseDecimalId, type BumpRunReply, type PendingReply, type UnreadReply } from '../nats/ads-payloads';
import { visitorHash } from './views-stream';
import { ViewBatcher } from './view-batcher';

export interface GatewayDeps {
  db: Knex;
  nc: NatsConnection;
  config: AdsConfig;
  log: Logger;
  metrics: Metrics;
}

/** Ids in paths: 1 … 2^53-1, decimal, no sign, no leading zero. */
const IdParams = Type.Object({ id: Type.String({ pattern: '^[1-9][0-9]{0,15}$' }) }, { additionalProperties: false });
type IdParams = Static<typeof IdParams>;
const ViewBody = Type.Object({ visitor_id: Type.Optional(Type.String({ minLength: 1, maxLength: 128, pattern: '^[A-Za-z0-9._:-]+$' })) }, { additionalProperties: false });
type ViewBody = Static<typeof ViewBody>;
const Empty = Type.Object({}, { additionalProperties: false });

const STATUS: Partial<Record<ErrorCode, number>> = {
  BAD_JSON: 400,
  BAD_PAYLOAD: 400,
  NOT_FOUND: 404,
  IDEMPOTENCY_CONFLICT: 409,
  UNAUTHORIZED: 401,
  PAYLOAD_TOO_LARGE: 413,
  UNSUPPORTED_MEDIA_TYPE: 415,
  RATE_LIMITED: 429,
  UNAVAILABLE: 503,
  QUERY_TIMEOUT: 504,
};

/** Maps anything thrown in a route to a status and a stable code. */
export function classifyHttpError(err: unknown): { status: number; code: ErrorCode; message: string } {
  if (isAppError(err)) return { status: STATUS[err.code] ?? 500, code: err.code, message: err.message };
  const e = err as Partial<FastifyError> & { validation?: unknown };
  if (e.validation) return { status: 400, code: 'BAD_PAYLOAD', message: e.message ?? 'invalid request' };
  switch (e.code) {
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return { status: 400, code: 'BAD_JSON', message: e.message ?? 'body is not valid JSON' };
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return { status: 413, code: 'PAYLOAD_TOO_LARGE', message: e.message ?? 'body too large' };
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return { status: 415, code: 'UNSUPPORTED_MEDIA_TYPE', message: `${e.message ?? 'unsupported media type'}; send application/json` };
    case 'RATE_LIMITED':
      return { status: 429, code: 'RATE_LIMITED', message: e.message ?? 'too many requests' };
  }
  if (e.statusCode === 429) return { status: 429, code: 'RATE_LIMITED', message: e.message ?? 'too many requests' };
  if (e instanceof SyntaxError || (e.statusCode === 400 && /JSON/i.test(e.message ?? ''))) return { status: 400, code: 'BAD_JSON', message: e.message ?? 'body is not valid JSON' };
  if (typeof e.statusCode === 'number' && e.statusCode >= 400 && e.statusCode < 500) return { status: e.statusCode, code: 'BAD_PAYLOAD', message: e.message ?? 'bad request' };
  return { status: 500, code: 'INTERNAL', message: 'internal error; the details are in the gateway log' };
}

const sha256 = (s: string): Buffer => createHash('sha256').update(s).digest();

/** Builds the fastify app (not listening). The caller owns `db` and `nc`. */
export async function buildGateway(deps: GatewayDeps): Promise<FastifyInstance> {
  const { config: c, db, nc, metrics } = deps;
  const log = deps.log.child({ component: 'ads-gateway' });
  const js: JetStreamClient = nc.jetstream({ timeout: c.requestTimeoutMs });
  const tokenDigest = c.apiToken ? sha256(c.apiToken) : undefined;
  const requests = metrics.counter<'route' | 'status'>('ads_gateway_requests_total', 'Gateway HTTP requests', ['route', 'status']);
  const latency = metrics.histogram<'route'>('ads_gateway_request_seconds', 'Gateway request duration', ['route'], [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1]);
  const batcher = new ViewBatcher(js, Subjects.adsViewBatch(c.subjectPrefix), { timeoutMs: c.requestTimeoutMs });
  const known = new LRUCache<number, boolean>({ max: 100_000, ttl: Math.max(1, c.adCacheTtlMs) });

  const app = Fastify({
    bodyLimit: c.gatewayBodyLimit,
    trustProxy: c.trustedProxies.length > 0 ? c.trustedProxies : false,
    return503OnClosing: true,
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false, useDefaults: true, allErrors: false } },
  });

  // Beacons (navigator.sendBeacon) arrive as text/plain: parse them as JSON too.
  app.addContentTypeParser('text/plain', { parseAs: 'string' }, app.getDefaultJsonParser('error', 'error'));

  await app.register(rateLimit, {
    max: c.rateLimitMax,
    timeWindow: c.rateLimitWindowMs,
    keyGenerator: (req) => req.ip,
    errorResponseBuilder: (_req, ctx) => ({ statusCode: 429, code: 'RATE_LIMITED', message: `rate limit of ${ctx.max} requests per ${Math.round(c.rateLimitWindowMs / 1000)} s exceeded; retry in ${ctx.after}` }),
  });

  app.setErrorHandler((err, req, reply) => {
    const r = classifyHttpError(err);
    if (r.status >= 500) log[r.status === 500 ? 'error' : 'warn']({ err: describeError(err), route: req.routeOptions.url, method: req.method }, 'gateway request failed');
    if (r.status === 401) void reply.header('www-authenticate', 'Bearer');
    void reply.code(r.status).send({ code: r.code, message: r.message });
  });
  app.setNotFoundHandler((req, reply) => {
    void reply.code(404).send({ code: 'NOT_FOUND', message: `no route ${req.method} ${req.url.split('?')[0]}; see docs/ads.md` });
  });
  // A POST without a body (a bare beacon, a bump) validates as `{}`.
  app.addHook('preValidation', async (req) => {
    if (req.body === undefined && req.method === 'POST') req.body = {};
  });
  app.addHook('onResponse', (req, reply, done) => {
    const route = req.routeOptions.url ?? 'unmatched';
    requests.inc({ route, status: String(reply.statusCode) });
    latency.observe({ route }, reply.elapsedTime / 1000);
    done();
  });

  /** Bearer token check before the body is read; digests of equal length compared in constant time. */
  const requireToken = async (req: FastifyRequest): Promise<void> => {
    if (!tokenDigest) throw new InputError('UNAUTHORIZED', 'this endpoint is disabled: ADS_API_TOKEN is not set on the gateway');
    const m = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? '');
    if (!m) throw new InputError('UNAUTHORIZED', 'missing "Authorization: Bearer <token>" header');
    if (!timingSafeEqual(sha256(m[1]!), tokenDigest)) throw new InputError('UNAUTHORIZED', 'wrong bearer token');
  };

  const adExists = async (id: number): Promise<boolean> => {
    const cached = known.get(id);
    if (cached !== undefined) return cached;
    const row = await db('advertisements').where({ id }).first('id');
    known.set(id, !!row, row ? {} : { ttl: Math.min(5_000, Math.max(1, c.adCacheTtlMs)) });
    return !!row;
  };

  const request = async <T>(subject: string, payload: unknown, what: string): Promise<T> => {
    try {
      const m = await nc.request(subject, encodeJson(payload), { timeout: c.requestTimeoutMs });
      return m.json<T>();
    } catch (e) {
      const code = (e as { code?: string }).code;
      if (code === '503') throw new AppError('UNAVAILABLE', `no ${what} is running (nobody answers ${subject}); retry later`);
      if (code === 'TIMEOUT') throw new AppError('UNAVAILABLE', `${what} did not answer within ${c.requestTimeoutMs} ms; retry later`);
      throw new AppError('UNAVAILABLE', `${what} request failed: ${describeError(e)}`);
    }
  };

  app.get('/healthz', { config: { rateLimit: false } }, async () => ({ ok: true }));

  app.get('/readyz', { config: { rateLimit: false } }, async (_req, reply) => {
    const checks = await Promise.all([
      withTimeout(db.raw('SELECT 1'), c.requestTimeoutMs).then(() => 'ok', (e: unknown) => describeError(e)),
      (nc.isClosed() ? Promise.reject(new Error('connection closed')) : withTimeout(nc.flush(), c.requestTimeoutMs)).then(() => 'ok', (e: unknown) => describeError(e)),
    ]);
    const [dbs, nats] = checks;
    if (dbs === 'ok' && nats === 'ok') return { ok: true, db: dbs, nats };
    return reply.code(503).send({ code: 'UNAVAILABLE', message: `not ready: db ${dbs}; nats ${nats}`, db: dbs, nats });
  });

  app.get('/metrics', { config: { rateLimit: false } }, async (_req, reply) => {
    return reply.header('content-type', metrics.registry.contentType).send(await metrics.text());
  });

  app.post<{ Params: IdParams; Body: ViewBody | undefined }>(
    '/ads/:id/views',
    { schema: { params: IdParams, body: ViewBody } },
    async (req, reply) => {
      const adId = parseDecimalId(req.params.id, 'params/id');
      if (!(await adExists(adId))) throw new InputError('NOT_FOUND', `ad ${adId} does not exist`);
      const visitor = visitorHash(c.viewHashSalt, req.ip, req.body?.visitor_id);
      await batcher.add({ ad_id: adId, visitor, ts: Date.now() });
      return reply.code(202).send({ accepted: true });
    },
  );

  app.get<{ Params: IdParams }>('/ads/:id/views', { schema: { params: IdParams } }, async (req) => {
    const adId = parseDecimalId(req.params.id, 'params/id');
    const row = (await db('advertisements').where({ id: adId }).first('views_count')) as { views_count: number | string } | undefined;
    if (!row) throw new InputError('NOT_FOUND', `ad ${adId} does not exist`);
    const persisted = Number(row.views_count);
    const pending = await pendingViews(nc, c, adId, log);
    return { ad_id: adId, views: persisted + pending, persisted, pending };
  });

  app.get<{ Params: IdParams }>('/users/:id/unread', { schema: { params: IdParams } }, async (req) => {
    const userId = parseDecimalId(req.params.id, 'params/id');
    const r = await request<UnreadReply>(Subjects.adsUnreadGet(c.subjectPrefix), { user_id: userId }, 'unread cache');
    if (!r.ok) throw new AppError(r.error.code === 'BAD_PAYLOAD' ? 'BAD_PAYLOAD' : 'UNAVAILABLE', r.error.message);
    return { user_id: userId, unread: r.unread };
  });

  app.post<{ Body: EnqueueRequest }>('/notifications', { onRequest: requireToken, schema: { body: EnqueueRequest } }, async (req, reply) => {
    const r = await request<EnqueueReply>(c.enqueueSubject, req.body, 'notification pipeline');
    if (!r.ok) {
      // The caller's mistakes keep their code (400/409); anything else is our side (503, retry).
      const code: ErrorCode = r.error.code === 'BAD_PAYLOAD' || r.error.code === 'BAD_JSON' ? 'BAD_PAYLOAD' : r.error.code === 'IDEMPOTENCY_CONFLICT' || r.error.code === 'PAYLOAD_TOO_LARGE' ? r.error.code : 'UNAVAILABLE';
      throw new AppError(code, `enqueue refused (${r.error.code}): ${r.error.message}`);
    }
    return reply.code(202).send({ id: r.id, duplicate: r.duplicate });
  });

  app.post<{ Body: Static<typeof Empty> | undefined }>('/ads/bump', { onRequest: requireToken, schema: { body: Empty } }, async () => {
    const r = await request<BumpRunReply>(Subjects.adsBumpRun(c.subjectPrefix), {}, 'bump actor');
    if (!r.ok) throw new AppError('UNAVAILABLE', r.error.message);
    return { run_id: r.run_id, bumped: r.bumped };
  });

  return app;
}

/**
 * Views received by the counters but not yet flushed: a scatter/gather request that every
 * counter answers; we sum what arrives until 25 ms pass without an answer (250 ms at most).
 * An upper bound until the flush: a visitor already counted in an earlier flush is
 * pending here but will not be counted again.
 */
async function pendingViews(nc: NatsConnection, c: AdsConfig, adId: number, log: Logger): Promise<number> {
  let sum = 0;
  try {
    const it = await nc.requestMany(Subjects.adsPending(c.subjectPrefix), encodeJson({ ad_id: adId }), { strategy: RequestStrategy.JitterTimer, jitter: 25, maxWait: 250 });
    for await (const m of it) {
      if (m.data.length === 0) continue; // no-responders status
      try {
        const r = m.json<PendingReply>();
        if (typeof r.pending === 'number' && r.pending > 0) sum += r.pending;
      } catch {
        /* a counter's bad reply: ignore it */
      }
    }
  } catch (e) {
    if ((e as { code?: string }).code !== '503') log.warn({ err: describeError(e) }, 'pending views request failed');
  }
  return sum;
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

export interface RunningGateway {
  app: FastifyInstance;
  port: number;
  /** Stops accepting, finishes in-flight requests. Idempotent. */
  close(): Promise<void>;
}

/** Builds and listens on `port` (0 = random) at GATEWAY_HOST. */
export async function startGateway(deps: GatewayDeps, port: number = deps.config.gatewayPort): Promise<RunningGateway> {
  const app = await buildGateway(deps);
  await app.listen({ port, host: deps.config.gatewayHost });
  const addr = app.server.address();
  const bound = typeof addr === 'object' && addr ? addr.port : port;
  let closing: Promise<void> | undefined;
  return { app, port: bound, close: () => (closing ??= app.close().then(() => undefined)) };
}

