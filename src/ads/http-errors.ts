/**
 * Every error the ads gateway answers, as `{ code, message }` JSON with a stable code and an
 * HTTP status — including what fastify and Node raise before a route runs (bad URL, too long
 * a parameter, 408, 431). Messages are ours: no database, driver or library text ever
 * reaches a client (that goes to the log as codes, see errorFields below).
 */
import type { Socket } from 'node:net';
import type { FastifyError } from 'fastify';
import { AppError, isAppError } from '../errors';

/** Gateway-only codes (transport level) next to the project's ErrorCodes. */
export type HttpOnlyCode = 'BAD_REQUEST' | 'REQUEST_TIMEOUT' | 'URI_TOO_LONG' | 'HEADERS_TOO_LARGE';

export interface HttpErrorBody {
  status: number;
  code: string;
  message: string;
}

/** Status per code; a code not listed is a 500. */
export const HTTP_STATUS: Readonly<Record<string, number>> = {
  BAD_REQUEST: 400,
  BAD_JSON: 400,
  BAD_PAYLOAD: 400,
  UNAUTHORIZED: 401,
  NOT_FOUND: 404,
  REQUEST_TIMEOUT: 408,
  IDEMPOTENCY_CONFLICT: 409,
  PAYLOAD_TOO_LARGE: 413,
  URI_TOO_LONG: 414,
  UNSUPPORTED_MEDIA_TYPE: 415,
  RATE_LIMITED: 429,
  HEADERS_TOO_LARGE: 431,
  INTERNAL: 500,
  UNAVAILABLE: 503,
  QUERY_TIMEOUT: 504,
};

/** An answer from another component that the gateway passes on with its own code (e.g. a 409 from enqueue). */
export class UpstreamError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'UpstreamError';
  }
}

const INTERNAL: HttpErrorBody = { status: 500, code: 'INTERNAL', message: 'internal error; the details are in the gateway log' };

/** Maps anything thrown in a route (or by fastify around it) to a status, a stable code and our own message. */
export function classifyHttpError(err: unknown): HttpErrorBody {
  if (isAppError(err)) return { status: HTTP_STATUS[err.code] ?? 500, code: err.code, message: err.message };
  if (err instanceof UpstreamError) return { status: HTTP_STATUS[err.code] ?? 503, code: err.code, message: err.message };
  const e = err as Partial<FastifyError> & { validation?: unknown; validationContext?: string };
  // Schema validation: fastify's text names the field ("body/visitor_id must match pattern …"), built from our schema.
  if (e.validation) return { status: 400, code: 'BAD_PAYLOAD', message: e.message ?? 'invalid request' };
  switch (e.code) {
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return { status: 400, code: 'BAD_JSON', message: 'body is not valid JSON' };
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return { status: 413, code: 'PAYLOAD_TOO_LARGE', message: 'body too large (GATEWAY_BODY_LIMIT)' };
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return e.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE'
        ? { status: 415, code: 'UNSUPPORTED_MEDIA_TYPE', message: 'unsupported content type; send application/json' }
        : { status: 400, code: 'BAD_REQUEST', message: 'content-length does not match the body' };
    case 'FST_ERR_BAD_URL':
      return { status: 400, code: 'BAD_REQUEST', message: 'the URL is not valid (bad percent-encoding)' };
    case 'FST_ERR_MAX_PARAM_LENGTH':
      return { status: 414, code: 'URI_TOO_LONG', message: 'a path parameter is too long' };
    case 'FST_ERR_ASYNC_CONSTRAINT':
      return { status: 400, code: 'BAD_REQUEST', message: 'the request matches no route constraint' };
    case 'RATE_LIMITED':
      return { status: 429, code: 'RATE_LIMITED', message: e.message ?? 'too many requests' };
  }
  if (e.statusCode === 429) return { status: 429, code: 'RATE_LIMITED', message: 'too many requests' };
  if (e instanceof SyntaxError) return { status: 400, code: 'BAD_JSON', message: 'body is not valid JSON' };
  if (typeof e.statusCode === 'number' && e.statusCode >= 400 && e.statusCode < 500) {
    const code =
      e.statusCode === 413 ? 'PAYLOAD_TOO_LARGE' : e.statusCode === 415 ? 'UNSUPPORTED_MEDIA_TYPE' : e.statusCode === 404 ? 'NOT_FOUND' : 'BAD_REQUEST';
    return {
      status: e.statusCode === 404 || e.statusCode === 413 || e.statusCode === 415 ? e.statusCode : 400,
      code,
      message: 'the request was refused before it reached a route',
    };
  }
  return INTERNAL;
}

/** A database failure seen by a route: never its text (SQL with values), always a 503 the caller may retry. */
export function databaseUnavailable(cause: unknown): AppError {
  return new AppError('UNAVAILABLE', 'the database is unavailable; retry later', undefined, { cause });
}

/**
 * Node's `clientError` (before fastify sees a request): answers in our JSON shape when the
 * socket can still be written, then closes it. Timeouts (408), headers or URL too large (431),
 * unparsable requests (400).
 */
export function writeClientError(err: NodeJS.ErrnoException & { bytesParsed?: number }, socket: Socket): { code: string; status: number } | undefined {
  if (err.code === 'ECONNRESET' || socket.destroyed) return undefined;
  const r =
    err.code === 'ERR_HTTP_REQUEST_TIMEOUT' || err.code === 'ERR_HTTP_HEADERS_TIMEOUT'
      ? { status: 408, code: 'REQUEST_TIMEOUT', message: 'the request (headers and body) did not arrive within GATEWAY_REQUEST_TIMEOUT' }
      : err.code === 'HPE_HEADER_OVERFLOW'
        ? { status: 431, code: 'HEADERS_TOO_LARGE', message: 'request line or headers too large' }
        : { status: 400, code: 'BAD_REQUEST', message: 'malformed HTTP request' };
  const body = JSON.stringify({ code: r.code, message: r.message });
  const reason = { 400: 'Bad Request', 408: 'Request Timeout', 431: 'Request Header Fields Too Large' }[r.status] ?? 'Error';
  if (socket.writable)
    socket.end(
      `HTTP/1.1 ${r.status} ${reason}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
      () => socket.destroy(),
    );
  else socket.destroy();
  return { code: r.code, status: r.status };
}

/**
 * What a log line may say about a failure: its class and codes, never its message when the
 * message is not ours. Driver errors carry the SQL with its values (message texts, chat ids,
 * keys) and library errors echo their input; an AppError's message is written by us.
 */
export function errorFields(e: unknown): Record<string, unknown> {
  if (isAppError(e)) {
    const cause = (e as { cause?: unknown }).cause;
    return { name: e.name, code: e.code, message: e.message, ...(cause !== undefined ? { cause: errorFields(cause) } : {}) };
  }
  if (typeof e !== 'object' || e === null) return { name: typeof e };
  const x = e as { name?: unknown; code?: unknown; errno?: unknown; sqlState?: unknown; api_error?: { err_code?: unknown } };
  const out: Record<string, unknown> = { name: typeof x.name === 'string' ? x.name : 'Error' };
  if (typeof x.code === 'string' || typeof x.code === 'number') out.code = x.code;
  if (typeof x.errno === 'number') out.errno = x.errno;
  if (typeof x.sqlState === 'string') out.sqlState = x.sqlState;
  if (x.api_error && typeof x.api_error.err_code === 'number') out.apiErrCode = x.api_error.err_code;
  return out;
}
