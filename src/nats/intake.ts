/**
 * The one NATS edge: every subscription the project makes goes through here, so every
 * payload is decoded and validated the same way, every rejection is counted in one
 * metric and answered with one error shape, and every subscription drains on stop.
 * Replies and KV values read from others are validated the same way (`requestValidated`,
 * `decodeKvValue`): a peer is input too.
 */
import type { KvEntry, Msg, NatsConnection, Service, ServiceConfig, Subscription } from 'nats';
import type { Logger } from '../log';
import type { Metrics } from '../metrics';
import { AppError, InputError, describeError, isAppError, type ErrorCode } from '../errors';
import { encodeJson, type Decoder } from './codec';

/** The error body every request-reply endpoint answers with. */
export interface ErrorReply {
  ok: false;
  error: { code: ErrorCode; message: string };
}

export interface IntakeOptions {
  nc: NatsConnection;
  log: Logger;
  metrics: Metrics;
}

export interface EndpointOptions {
  /** A queue group: one member answers each message (load-balanced endpoints). */
  queue?: string;
  /**
   * The metric label for this subscription; default the subject. Per-instance subjects
   * pass their pattern here so the label's cardinality stays bounded.
   */
  label?: string;
  /**
   * Fields added to every error reply of this endpoint, e.g. the instance on a subject
   * every process answers, so the caller can tell who refused.
   */
  errorFields?: Record<string, unknown>;
}

/**
 * Subscribes and answers, decodes and counts. One per role; `drain()` stops every
 * subscription it made (idempotent).
 */
export class NatsIntake {
  private readonly subs: Subscription[] = [];
  private readonly services: Service[] = [];
  private readonly bad;
  private readonly failed;
  private draining: Promise<void> | undefined;
  /** Last warning per subject and code: a flood of bad payloads logs one line per 10 s, with a count. */
  private readonly warned = new Map<string, { at: number; suppressed: number }>();

  constructor(private readonly o: IntakeOptions) {
    this.bad = o.metrics.counter('nats_bad_payloads_total', 'NATS payloads rejected at the edge', ['subject', 'code']);
    this.failed = o.metrics.counter('nats_handler_errors_total', 'NATS messages whose handler failed (not the sender’s fault)', ['subject', 'code']);
  }

  /**
   * A request-reply endpoint. The handler's value is the reply; an `AppError` it throws
   * is answered with its code and message; anything else is logged and answered
   * `INTERNAL` without its text (no library or database message leaves the process).
   */
  serve<T, R>(subject: string, decode: Decoder<T>, handler: (payload: T, msg: Msg) => Promise<R> | R, opts: EndpointOptions = {}): Subscription {
    return this.endpoint(subject, decode, handler, opts, true);
  }

  /**
   * An event subscription (no reply expected). A bad payload is counted and logged, and
   * answered with the error if the publisher asked for a reply; the handler's failures
   * are counted and logged. Never throws into the NATS client.
   */
  listen<T>(subject: string, decode: Decoder<T>, handler: (payload: T, msg: Msg) => Promise<void> | void, opts: EndpointOptions = {}): Subscription {
    return this.endpoint(subject, decode, handler, opts, false);
  }

  /**
   * A NATS micro service (what `nats micro info` lists): its endpoints are added with
   * `serveEndpoint`, and `drain()` stops it. The metadata object is kept by reference,
   * so changing it later changes what discovery shows.
   */
  async addService(config: ServiceConfig): Promise<Service> {
    if (this.draining) throw new AppError('UNAVAILABLE', `intake is draining: cannot add the service ${config.name}`);
    const service = await this.o.nc.services.add(config);
    this.services.push(service);
    return service;
  }

  /** `serve` for an endpoint of a micro service (named in `nats micro info`): the same decoding, counting and answers. */
  serveEndpoint<T, R>(
    service: Service,
    name: string,
    subject: string,
    decode: Decoder<T>,
    handler: (payload: T, msg: Msg) => Promise<R> | R,
    opts: EndpointOptions & { metadata?: Record<string, string> } = {},
  ): void {
    const onMsg = this.handle(subject, decode, handler, opts, true);
    service.addEndpoint(name, {
      subject,
      ...(opts.metadata ? { metadata: opts.metadata } : {}),
      handler: this.callback(subject, 'service endpoint error', onMsg),
    });
  }

  private endpoint<T, R>(
    subject: string,
    decode: Decoder<T>,
    handler: (payload: T, msg: Msg) => Promise<R> | R,
    opts: EndpointOptions,
    replyValue: boolean,
  ): Subscription {
    return this.subscribe(subject, opts, this.handle(subject, decode, handler, opts, replyValue));
  }

  /** Decode, count and answer a bad payload; run the handler; reply with its value (`serve`) or only its error. */
  private handle<T, R>(
    subject: string,
    decode: Decoder<T>,
    handler: (payload: T, msg: Msg) => Promise<R> | R,
    opts: EndpointOptions,
    replyValue: boolean,
  ): (msg: Msg) => void {
    const label = opts.label ?? subject;
    const errorReply = (e: unknown): ErrorReply => ({ ...opts.errorFields, ...errorReplyOf(e) });
    return (msg) => {
      let payload: T;
      try {
        payload = decode(msg.data);
      } catch (e) {
        this.rejected(label, e);
        this.respond(msg, errorReply(e));
        return;
      }
      // A synchronous throw from the handler becomes a rejection, like an async handler's.
      new Promise<R>((resolve) => {
        resolve(handler(payload, msg));
      }).then(
        (value) => {
          if (replyValue) this.respond(msg, value);
        },
        (e: unknown) => {
          this.handlerFailed(label, e);
          this.respond(msg, errorReply(e));
        },
      );
    };
  }

  /** Stops every service and subscription, letting messages already received finish. Idempotent. */
  drain(): Promise<void> {
    this.draining ??= Promise.allSettled([
      // A service's stop drains its endpoints' subscriptions.
      ...this.services.map((s) => s.stop()),
      ...this.subs.map(async (s) => {
        if (s.isClosed()) return;
        try {
          await s.drain();
        } catch {
          // The connection is already closing or closed: the subscription is gone either way.
          s.unsubscribe();
        }
      }),
    ]).then(() => undefined);
    return this.draining;
  }

  private subscribe(subject: string, opts: EndpointOptions, onMsg: (msg: Msg) => void): Subscription {
    if (this.draining) throw new AppError('UNAVAILABLE', `intake is draining: cannot subscribe to ${subject}`);
    const sub = this.o.nc.subscribe(subject, {
      ...(opts.queue ? { queue: opts.queue } : {}),
      callback: this.callback(subject, 'subscription error', onMsg),
    });
    this.subs.push(sub);
    return sub;
  }

  /** What the NATS client calls: an error from the client itself is logged, a message handled. */
  private callback(subject: string, what: string, onMsg: (msg: Msg) => void): (err: Error | null, msg: Msg) => void {
    return (err, msg) => {
      if (err) {
        this.o.log.warn({ subject, err: describeError(err) }, what);
        return;
      }
      onMsg(msg);
    };
  }

  private respond(msg: Msg, body: unknown): void {
    if (!msg.reply) return;
    try {
      msg.respond(encodeJson(body));
    } catch (e) {
      this.o.log.warn({ subject: msg.subject, err: describeError(e) }, 'reply failed');
    }
  }

  private rejected(label: string, e: unknown): void {
    const code = isAppError(e) ? e.code : 'BAD_PAYLOAD';
    this.bad.inc({ subject: label, code });
    const key = `${label} ${code}`;
    const now = Date.now();
    const w = this.warned.get(key);
    if (w && now - w.at < WARN_EVERY_MS) {
      w.suppressed++;
      return;
    }
    this.warned.set(key, { at: now, suppressed: 0 });
    this.o.log.warn({ subject: label, code, err: describeError(e), ...(w?.suppressed ? { suppressed: w.suppressed } : {}) }, 'bad NATS payload rejected');
  }

  private handlerFailed(label: string, e: unknown): void {
    const code = isAppError(e) ? e.code : 'INTERNAL';
    this.failed.inc({ subject: label, code });
    const caller = e instanceof InputError;
    if (caller) this.o.log.debug({ subject: label, code, err: describeError(e) }, 'request refused');
    else this.o.log.warn({ subject: label, code, err: isAppError(e) ? e.message : describeError(e) }, 'handler failed');
  }
}

const WARN_EVERY_MS = 10_000;

/** The error reply for anything thrown: codes and messages of our own errors, nothing else. */
export function errorReplyOf(e: unknown): ErrorReply {
  if (isAppError(e)) return { ok: false, error: { code: e.code, message: e.message } };
  return { ok: false, error: { code: 'INTERNAL', message: 'internal error (see the service log)' } };
}

/** A decoder that also takes an empty payload, as `empty` (requests that need no body). */
export function orEmpty<T>(decode: Decoder<T>, empty: T): Decoder<T> {
  return Object.assign((data: Uint8Array): T => (data.byteLength === 0 ? empty : decode(data)), { schema: decode.schema });
}

/**
 * A request whose reply is validated like any input. An error reply from the other side
 * becomes an `AppError` with its code; a reply that matches neither is `BAD_PAYLOAD`.
 */
export async function requestValidated<T>(nc: NatsConnection, subject: string, body: unknown, decode: Decoder<T>, timeoutMs: number): Promise<T> {
  const msg = await nc.request(subject, encodeJson(body), { timeout: timeoutMs });
  const remote = remoteError(msg.data);
  if (remote) throw new AppError(remote.code, `${subject}: ${remote.message}`);
  try {
    return decode(msg.data);
  } catch (e) {
    throw new InputError('BAD_PAYLOAD', `reply on ${subject} is not valid: ${describeError(e)}`);
  }
}

/** A KV value validated like any input; `undefined` for a deleted or purged key. */
export function decodeKvValue<T>(entry: KvEntry | null, decode: Decoder<T>): T | undefined {
  if (!entry || entry.operation !== 'PUT' || entry.value.byteLength === 0) return undefined;
  try {
    return decode(entry.value);
  } catch (e) {
    throw new InputError('BAD_PAYLOAD', `KV ${entry.bucket}/${entry.key} holds an invalid value: ${describeError(e)}`);
  }
}

/** A code as the other side sent it, if it looks like one of ours (upper-case words). */
const CODE = /^[A-Z][A-Z0-9_]{1,63}$/;

function remoteError(data: Uint8Array): ErrorReply['error'] | undefined {
  let v: unknown;
  try {
    v = JSON.parse(new TextDecoder().decode(data));
  } catch {
    return undefined;
  }
  if (typeof v !== 'object' || v === null || (v as { ok?: unknown }).ok !== false) return undefined;
  const err = (v as { error?: { code?: unknown; message?: unknown } }).error;
  const code = typeof err?.code === 'string' && CODE.test(err.code) ? err.code : 'INTERNAL';
  const message = typeof err?.message === 'string' ? err.message : 'error reply without a message';
  return { code: code as ErrorCode, message };
}
