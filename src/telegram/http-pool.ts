import { Pool, type Dispatcher } from 'undici';

/** What the server answered to one POST. */
export interface HttpAnswer {
  status: number;
  statusText: string;
  body: Buffer;
}

/** Our per-call timeout fired: the answer did not come in time (waiting for a connection included). */
export class RequestTimedOut extends Error {
  constructor() {
    super('request timed out');
    this.name = 'RequestTimedOut';
  }
}

/**
 * undici's own timeouts (connect, headers, body). They run on the socket only, after our per-call
 * timer has started, so they are a backstop: when one fires it is a timeout all the same.
 */
const UNDICI_TIMEOUTS = new Set(['UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT']);

/** Whether a rejection of `post` is a timeout (ours or undici's), not a network failure. */
export function isTimeout(e: unknown): boolean {
  return e instanceof RequestTimedOut || UNDICI_TIMEOUTS.has((e as { code?: unknown } | null)?.code as string);
}

export interface HttpPoolOptions {
  /** Per call, from the call to the last byte of the answer, waiting for a free connection included. */
  timeoutMs: number;
  /**
   * Connections open at once (default 256); further calls queue for a free one. Uncapped, a burst
   * of 5,000 ready chats opened 3,585 connections to the sandbox in one run, each costing both ends
   * more than the call it carried. By Little's law 256 carry 12,800 calls/s at 20 ms answers (the
   * sandbox in bench:delivery) and 1,000/s (Telegram's paid-broadcast ceiling) at 250 ms.
   */
  connections?: number;
}

const JSON_HEADERS = { 'content-type': 'application/json' };

/**
 * JSON POSTs to one origin (http:// or https://) over undici's keep-alive Pool: HTTP/1.1 parsing,
 * Connection: close, chunked and close-delimited answers and TLS are undici's. Each call goes
 * through `dispatch`, the API undici's own `request` is built on, for two reasons measured or
 * read in its source: `request` with an AbortSignal cost about 20 µs more CPU per call on this
 * machine (an AbortController and a body stream per call), and a signal aborted while the request
 * waits in the pool's queue only takes effect once a connection picks it up, so the caller would
 * wait past its timeout. Here the timer rejects at once, and a request still queued is dropped,
 * unsent, when a connection reaches it.
 */
export class HttpPool {
  private readonly pool: Pool;

  constructor(
    origin: string,
    private readonly opts: HttpPoolOptions,
  ) {
    this.pool = new Pool(origin, {
      connections: opts.connections ?? 256,
      connectTimeout: opts.timeoutMs,
      headersTimeout: opts.timeoutMs,
      bodyTimeout: opts.timeoutMs,
    });
  }

  /** POSTs `body` (JSON) to `path`; rejects with undici's or the socket's error, or RequestTimedOut. */
  post(path: string, body: string): Promise<HttpAnswer> {
    return new Promise<HttpAnswer>((resolve, reject) => {
      const call = new PostCall(resolve, reject, this.opts.timeoutMs);
      try {
        this.pool.dispatch({ path, method: 'POST', headers: JSON_HEADERS, body }, call);
      } catch (e) {
        call.onResponseError(undefined, e as Error);
      }
    });
  }

  /** Waits for the calls in flight, then closes every connection; later calls fail. */
  close(): Promise<void> {
    return this.pool.close();
  }
}

/** One call's undici handler: collects the answer, owns the timer. */
class PostCall implements Dispatcher.DispatchHandler {
  private controller: Dispatcher.DispatchController | undefined;
  private settled = false;
  private status = 0;
  private statusText = '';
  private chunks: Buffer[] = [];
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly resolve: (a: HttpAnswer) => void,
    private readonly reject: (e: Error) => void,
    timeoutMs: number,
  ) {
    this.timer = setTimeout(() => this.timeOut(), timeoutMs);
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    // Timed out while it waited for a connection: never send it.
    if (this.settled) {
      controller.abort(new RequestTimedOut());
      return;
    }
    this.controller = controller;
    this.chunks = [];
  }

  onResponseStart(_c: Dispatcher.DispatchController, status: number, _h: unknown, statusMessage?: string): void {
    this.status = status;
    this.statusText = statusMessage ?? '';
  }

  onResponseData(_c: Dispatcher.DispatchController, chunk: Buffer): void {
    this.chunks.push(chunk);
  }

  onResponseEnd(): void {
    if (this.settled) return;
    this.settled = true;
    clearTimeout(this.timer);
    const body = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks);
    this.resolve({ status: this.status, statusText: this.statusText, body });
  }

  onResponseError(_c: Dispatcher.DispatchController | undefined, e: Error): void {
    if (this.settled) return;
    this.settled = true;
    clearTimeout(this.timer);
    this.reject(e);
  }

  private timeOut(): void {
    if (this.settled) return;
    const e = new RequestTimedOut();
    this.settled = true;
    this.reject(e);
    // In flight: undici closes its socket. Still queued: onRequestStart drops it.
    this.controller?.abort(e);
  }
}
