/**
 * The HTTP ads gateway (fastify). Every route validates params and body with a TypeBox
 * schema (unknown fields rejected, no type coercion), bodies are capped at
 * GATEWAY_BODY_LIMIT, every client IP is rate-limited, and every error is JSON
 * `{code, message}` with a stable code from src/errors.ts. Endpoints: docs/ads.md.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import rateLimit from '@fastify/rate-limit';
import { Type, type Static, type TSchema } from '@sinclair/typebox';
import { LRUCache } from 'lru-cache';
import { RequestStrategy, type Msg, type NatsConnection, type JetStreamClient } from 'nats';
import type { Knex } from '../db/knex';
import type { Logger } from '../log';
import type { Metrics } from '../metrics';
import type { AdsConfig } from '../config/ads';
import { AppError, InputError } from '../errors';
import { classifyHttpError, databaseUnavailable, errorFields, writeClientError, UpstreamError } from './http-errors';
import type { IncomingMessage } from 'node:http';
import { Subjects } from '../nats/subjects';
import { encodeJson, validator } from '../nats/codec';
import { EnqueueRequest } from '../nats/payloads';
import { parseDecimalId, type PendingReply } from '../nats/ads-payloads';
import { visitorHash, windowOf } from './views-stream';
import { ViewBatcher } from './view-batcher';
import { AdsRepository } from './repository';

export interface GatewayDeps {
  /** The pool the gateway reads through an `AdsRepository`; the caller owns it. */
  db: Knex;
  nc: NatsConnection;
  config: AdsConfig;
  log: Logger;
  metrics: Metrics;
}

/** Ids in paths: 1 … 2^53-1, decimal, no sign, no leading zero. */
const IdParams = Type.Object({ id: Type.String({ pattern: '^[1-9][0-9]{0,15}$' }) }, { additionalProperties: false });
type IdParams = Static<typeof IdParams>;
const ViewBody = Type.Object(
  { visitor_id: Type.Optional(Type.String({ minLength: 1, maxLength: 128, pattern: '^[A-Za-z0-9._:-]+$' })) },
  { additionalProperties: false },
);
type ViewBody = Static<typeof ViewBody>;
const Empty = Type.Object({}, { additionalProperties: false });

// Ok replies the gateway reads (extra fields tolerated: a newer peer may add some).
const EnqueueOk = Type.Object({ ok: Type.Literal(true), id: Type.Integer({ minimum: 1 }), duplicate: Type.Boolean() });
const UnreadOk = Type.Object({ ok: Type.Literal(true), unread: Type.Integer({ minimum: 0 }) });
const BumpOk = Type.Object({ ok: Type.Literal(true), run_id: Type.Integer({ minimum: 0 }), bumped: Type.Integer({ minimum: 0 }) });
const validators = new Map<TSchema, (v: unknown) => unknown>();
function replyValidator<S extends TSchema>(schema: S): (v: unknown) => Static<S> {
  let f = validators.get(schema);
  if (!f) validators.set(schema, (f = validator(schema)));
  return f;
}

export { classifyHttpError } from './http-errors';

const sha256 = (s: string): Buffer => createHash('sha256').update(s).digest();

/** Builds the fastify app (not listening). The caller owns `db` and `nc`. */
export async function buildGateway(deps: GatewayDeps): Promise<FastifyInstance> {
  const { config: c, nc, metrics } = deps;
  const repo = new AdsRepository(deps.db);
  const log = deps.log.child({ component: 'ads-gateway' });
  const js: JetStreamClient = nc.jetstream({ timeout: c.requestTimeoutMs });
  const tokenDigest = c.apiToken ? sha256(c.apiToken) : undefined;
  const requests = metrics.counter<'route' | 'status'>('ads_gateway_requests_total', 'Gateway HTTP requests', ['route', 'status']);
  const latency = metrics.histogram<'route'>(
    'ads_gateway_request_seconds',
    'Gateway request duration',
    ['route'],
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
  );
  const refused = metrics.counter<'code'>(
    'ads_gateway_client_errors_total',
    'Connections refused before routing (timeouts, oversized headers, malformed HTTP)',
    ['code'],
  );
  const capped = metrics.counter(
    'ads_gateway_views_capped_total',
    'Views accepted but not counted: the IP already has VIEW_VISITORS_PER_IP visitors for the ad in this window',
  );
  const batcher = new ViewBatcher(js, Subjects.adsViewBatch(c.subjectPrefix), { timeoutMs: c.requestTimeoutMs });
  const known = new LRUCache<number, boolean>({ max: 100_000, ttl: Math.max(1, c.adCacheTtlMs) });
  // ip|ad|window → the visitor hashes counted so far (at most viewVisitorsPerIp).
  const visitorsPerIp = new LRUCache<string, Set<string>>({ max: 200_000, ttl: c.viewDedupWindowMs });
  // Requests whose body is still arriving: cut at close so a slow client cannot hold shutdown.
  const receiving = new Set<IncomingMessage>();

  const app = Fastify({
    bodyLimit: c.gatewayBodyLimit,
    trustProxy: c.trustedProxies.length > 0 ? c.trustedProxies : false,
    // Our own 503 while closing (below), in the JSON shape with Retry-After; fastify's is not.
    return503OnClosing: false,
    // Whole request (headers + body) within GATEWAY_REQUEST_TIMEOUT, checked 4× per timeout (Node checks every 30 s by default).
    requestTimeout: c.gatewayRequestTimeoutMs,
    connectionTimeout: c.gatewayIdleTimeoutMs,
    keepAliveTimeout: c.gatewayKeepAliveTimeoutMs,
    http: { headersTimeout: c.gatewayRequestTimeoutMs, connectionsCheckingInterval: Math.max(50, Math.min(1_000, Math.floor(c.gatewayRequestTimeoutMs / 4))) },
    forceCloseConnections: 'idle',
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false, useDefaults: true, allErrors: false } },
    // Errors fastify raises before routing (bad URL encoding, too long a parameter) in our shape.
    frameworkErrors: (err, req, reply) => {
      sendError(err, req, reply);
    },
    clientErrorHandler: (err, socket) => {
      const r = writeClientError(err, socket);
      if (r) {
        refused.inc({ code: r.code });
        log.debug(
          { code: r.code, status: r.status, remote: socket.remoteAddress },
          'connection refused before routing (counted in ads_gateway_client_errors_total)',
        );
      }
    },
  });

  app.server.on('request', (req: IncomingMessage, res) => {
    if (req.complete) return;
    receiving.add(req);
    const done = (): void => void receiving.delete(req);
    req.once('end', done);
    res.once('close', done);
  });
  let closing = false;
  app.addHook('onRequest', () =>
    closing ? Promise.reject(new AppError('UNAVAILABLE', 'the gateway is shutting down; retry (another instance will answer)')) : Promise.resolve(),
  );
  // Answers finished while closing end their connection, so a kept-alive client does not hold close() for GATEWAY_KEEPALIVE_TIMEOUT.
  app.addHook('onSend', async (_req, reply) => {
    if (closing) void reply.header('connection', 'close');
  });
  app.addHook('preClose', (done) => {
    closing = true;
    for (const req of receiving) if (!req.complete) req.socket.destroy();
    receiving.clear();
    done();
  });

  // Beacons (navigator.sendBeacon) arrive as text/plain: parse them as JSON too.
  app.addContentTypeParser('text/plain', { parseAs: 'string' }, app.getDefaultJsonParser('error', 'error'));

  await app.register(rateLimit, {
    max: c.rateLimitMax,
    timeWindow: c.rateLimitWindowMs,
    keyGenerator: (req) => req.ip,
    errorResponseBuilder: (_req, ctx) => ({
      statusCode: 429,
      code: 'RATE_LIMITED',
      message: `rate limit of ${ctx.max} requests per ${Math.round(c.rateLimitWindowMs / 1000)} s exceeded; retry in ${ctx.after}`,
    }),
  });

  /** The one error path: status, stable code, our message; 503s say when to retry; 5xx logged with ids and codes only. */
  function sendError(err: unknown, req: FastifyRequest, reply: FastifyReply): FastifyReply {
    const r = classifyHttpError(err);
    if (r.status >= 500) {
      const params = (req.params ?? {}) as Record<string, unknown>;
      log[r.status === 500 ? 'error' : 'warn'](
        { reqId: req.id, method: req.method, route: req.routeOptions.url, id: params.id, status: r.status, code: r.code, err: errorFields(err) },
        'gateway request failed',
      );
    }
    if (r.status === 401) void reply.header('www-authenticate', 'Bearer');
    if (r.status === 503) void reply.header('retry-after', String(c.gatewayRetryAfterS));
    return reply.code(r.status).send({ code: r.code, message: r.message });
  }
  app.setErrorHandler((err, req, reply) => {
    sendError(err, req, reply);
  });
  app.setNotFoundHandler((req, reply) => {
    void reply.code(404).send({ code: 'NOT_FOUND', message: `no route ${req.method} ${req.url.split('?')[0]!.slice(0, 200)}; see docs/ads.md` });
  });
  // A POST without a body (a bare beacon, a bump) validates as `{}`.
  app.addHook('preValidation', (req) => {
    if (req.body === undefined && req.method === 'POST') req.body = {};
    return Promise.resolve();
  });
  app.addHook('onResponse', (req, reply, done) => {
    const route = req.routeOptions.url ?? 'unmatched';
    requests.inc({ route, status: String(reply.statusCode) });
    latency.observe({ route }, reply.elapsedTime / 1000);
    done();
  });

  /** Bearer token check before the body is read; digests of equal length compared in constant time. */
  const requireToken = (req: FastifyRequest): Promise<void> => {
    if (!tokenDigest) return Promise.reject(new InputError('UNAUTHORIZED', 'this endpoint is disabled: ADS_API_TOKEN is not set on the gateway'));
    const m = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? '');
    if (!m) return Promise.reject(new InputError('UNAUTHORIZED', 'missing "Authorization: Bearer <token>" header'));
    if (!timingSafeEqual(sha256(m[1]!), tokenDigest)) return Promise.reject(new InputError('UNAUTHORIZED', 'wrong bearer token'));
    return Promise.resolve();
  };

  /** A database call whose failure is a 503, never its text. */
  const fromDb = async <T>(f: () => Promise<T>): Promise<T> => {
    try {
      return await f();
    } catch (e) {
      throw databaseUnavailable(e);
    }
  };

  const adExists = async (id: number): Promise<boolean> => {
    const cached = known.get(id);
    if (cached !== undefined) return cached;
    const exists = await fromDb(() => repo.adExists(id));
    known.set(id, exists, exists ? {} : { ttl: Math.min(5_000, Math.max(1, c.adCacheTtlMs)) });
    return exists;
  };

  /**
   * A NATS request whose reply is validated like any input: `{ ok: false, error }` becomes
   * upstream(); an ok reply must match `schema`; anything else is UNAVAILABLE (logged with codes).
   */
  const request = async <S extends TSchema>(subject: string, payload: unknown, what: string, schema: S, unavailable: string): Promise<Static<S>> => {
    let m: Msg;
    try {
      m = await nc.request(subject, encodeJson(payload), { timeout: c.requestTimeoutMs });
    } catch (e) {
      const code = (e as { code?: string }).code;
      if (code === '503') throw new AppError('UNAVAILABLE', `no ${what} is running; retry later`, undefined, { cause: e });
      if (code === 'TIMEOUT') throw new AppError('UNAVAILABLE', `${what} did not answer within ${c.requestTimeoutMs} ms; retry later`, undefined, { cause: e });
      throw new AppError('UNAVAILABLE', `${what} is unreachable; retry later`, undefined, { cause: e });
    }
    let body: unknown;
    try {
      body = m.json<unknown>();
    } catch (e) {
      throw new AppError('UNAVAILABLE', `${what} answered something unreadable; retry later`, undefined, { cause: e });
    }
    if (typeof body === 'object' && body !== null && (body as { ok?: unknown }).ok === false)
      throw upstream((body as { error?: { code?: unknown; message?: unknown } }).error, unavailable);
    try {
      return replyValidator(schema)(body);
    } catch (e) {
      throw new AppError('UNAVAILABLE', `${what} answered something unreadable; retry later`, undefined, { cause: e });
    }
  };

  app.get('/healthz', { config: { rateLimit: false } }, () => Promise.resolve({ ok: true }));

  /** Names the failing dependency and a code; never the driver's text. */
  app.get('/readyz', { config: { rateLimit: false } }, async (_req, reply) => {
    const [dbs, nats] = await Promise.all([
      withTimeout(repo.ping(), c.requestTimeoutMs).then(
        () => 'ok',
        (e: unknown) => (log.warn({ dependency: 'db', err: errorFields(e) }, 'readiness check failed'), 'UNAVAILABLE'),
      ),
      (nc.isClosed() ? Promise.reject(new AppError('UNAVAILABLE', 'connection closed')) : withTimeout(nc.flush(), c.requestTimeoutMs)).then(
        () => 'ok',
        (e: unknown) => (log.warn({ dependency: 'nats', err: errorFields(e) }, 'readiness check failed'), 'UNAVAILABLE'),
      ),
    ]);
    if (dbs === 'ok' && nats === 'ok') return { ok: true, db: dbs, nats };
    const failing = [dbs !== 'ok' && 'db', nats !== 'ok' && 'nats'].filter(Boolean).join(', ');
    void reply.header('retry-after', String(c.gatewayRetryAfterS));
    return reply.code(503).send({ code: 'UNAVAILABLE', message: `not ready: ${failing} unavailable`, db: dbs, nats });
  });

  // Metrics belong on METRICS_PORT (src/metrics.ts). Here only behind the API token, for setups with one port.
  if (tokenDigest) {
    app.get('/metrics', { onRequest: requireToken, config: { rateLimit: false } }, async (_req, reply) => {
      return reply.header('content-type', metrics.registry.contentType).send(await metrics.text());
    });
  }

  app.post<{ Params: IdParams; Body: ViewBody | undefined }>('/ads/:id/views', { schema: { params: IdParams, body: ViewBody } }, async (req, reply) => {
    const adId = parseDecimalId(req.params.id, 'params/id');
    // A missing ad is refused here and never published.
    if (!(await adExists(adId))) throw new InputError('NOT_FOUND', `ad ${adId} does not exist`);
    const now = Date.now();
    const visitor = visitorHash(c.viewHashSalt, req.ip, req.body?.visitor_id);
    const key = `${req.ip}|${adId}|${windowOf(now, c.viewDedupWindowMs)}`;
    let seen = visitorsPerIp.get(key);
    if (!seen) visitorsPerIp.set(key, (seen = new Set()));
    if (!seen.has(visitor)) {
      if (seen.size >= c.viewVisitorsPerIp) {
        // One IP inventing visitor_ids: accepted (a beacon cannot act on an error) but not counted.
        capped.inc();
        return reply.code(202).send({ accepted: true, counted: false });
      }
      seen.add(visitor);
    }
    await batcher.add({ ad_id: adId, visitor, ts: now });
    return reply.code(202).send({ accepted: true });
  });

  app.get<{ Params: IdParams }>('/ads/:id/views', { schema: { params: IdParams } }, async (req) => {
    const adId = parseDecimalId(req.params.id, 'params/id');
    const persisted = await fromDb(() => repo.viewsCount(adId));
    if (persisted === undefined) throw new InputError('NOT_FOUND', `ad ${adId} does not exist`);
    const pending = await pendingViews(nc, c, adId, log);
    return { ad_id: adId, views: persisted + pending, persisted, pending };
  });

  app.get<{ Params: IdParams }>('/users/:id/unread', { schema: { params: IdParams } }, async (req) => {
    const userId = parseDecimalId(req.params.id, 'params/id');
    const r = await request(
      Subjects.adsUnreadGet(c.subjectPrefix),
      { user_id: userId },
      'unread cache',
      UnreadOk,
      'the unread cache could not answer; retry later',
    );
    return { user_id: userId, unread: r.unread };
  });

  app.post<{ Body: EnqueueRequest }>('/notifications', { onRequest: requireToken, schema: { body: EnqueueRequest } }, async (req, reply) => {
    const r = await request(c.enqueueSubject, req.body, 'notification pipeline', EnqueueOk, 'the notification was not stored; retry later');
    return reply.code(202).send({ id: r.id, duplicate: r.duplicate });
  });

  app.post('/ads/bump', { onRequest: requireToken, schema: { body: Empty } }, async () => {
    const r = await request(Subjects.adsBumpRun(c.subjectPrefix), {}, 'bump actor', BumpOk, 'the bump run failed; retry later');
    return { run_id: r.run_id, bumped: r.bumped };
  });

  /**
   * A component's `{ ok: false }` answer: the caller's mistakes keep their code and our
   * validation text; anything else becomes UNAVAILABLE with a fixed message (its text may
   * be a database error), logged with the code only.
   */
  function upstream(error: { code?: unknown; message?: unknown } | undefined, unavailable: string): Error {
    const code = typeof error?.code === 'string' ? error.code : 'INTERNAL';
    const message = typeof error?.message === 'string' ? error.message.slice(0, 500) : '';
    if (code === 'BAD_PAYLOAD' || code === 'BAD_JSON') return new UpstreamError('BAD_PAYLOAD', message || 'invalid request');
    if (code === 'PAYLOAD_TOO_LARGE') return new UpstreamError('PAYLOAD_TOO_LARGE', message || 'payload too large');
    if (code === 'IDEMPOTENCY_CONFLICT') return new UpstreamError('IDEMPOTENCY_CONFLICT', message || 'this idempotency key was used for another notification');
    if (code === 'NOT_FOUND') return new UpstreamError('NOT_FOUND', message || 'not found');
    return new AppError('UNAVAILABLE', unavailable, { upstreamCode: code });
  }

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
    const it = await nc.requestMany(Subjects.adsPending(c.subjectPrefix), encodeJson({ ad_id: adId }), {
      strategy: RequestStrategy.JitterTimer,
      jitter: 25,
      maxWait: 250,
    });
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
    if ((e as { code?: string }).code !== '503') log.warn({ adId, err: errorFields(e) }, 'pending views request failed');
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
