import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import { Telegraf, Input } from 'telegraf';
import { describeError } from '../errors';
import { classifyThrown } from './classify';
import { TelegramApiError } from './errors';
import { HttpPool, isTimeout, type HttpAnswer } from './http-pool';

/** Where a photo comes from: bytes we downloaded (re-sendable) or a public URL. */
export type PhotoSource = { kind: 'bytes'; data: Buffer; filename: string } | { kind: 'url'; url: string };

export interface SentMessage {
  message_id: number;
  chat: { id: number };
}

export interface PhotoItem {
  photo: PhotoSource;
  caption?: string;
  parseMode?: string;
}

/**
 * What the sender needs from Telegram. Every method resolves with Telegram's result or
 * rejects with a classified TelegramApiError (see errors.ts); nothing else escapes.
 */
export interface TelegramClient {
  getMe(): Promise<{ id: number; username?: string }>;
  sendMessage(chatId: number, text: string, parseMode?: string | null): Promise<SentMessage>;
  sendPhoto(chatId: number, item: PhotoItem): Promise<SentMessage>;
  /** 2–10 items; Telegram rejects other counts. */
  sendMediaGroup(chatId: number, items: PhotoItem[]): Promise<SentMessage[]>;
}

export interface TelegrafClientOptions {
  token: string;
  /** Must end with '/' when it has a path (telegraf resolves './bot<token>/<method>' against it). */
  apiRoot: string;
  /** Per call, waiting for a free connection included; telegraf's own timeout is fixed at 500 s. */
  timeoutMs: number;
  /** Connections open at once to the Bot API for JSON calls (default 256, see HttpPoolOptions). */
  maxConnections?: number;
  /** The HTTP(S) agent for uploads (telegraf); default: a keep-alive agent of this client's own. */
  agent?: HttpAgent;
}

/**
 * A keep-alive agent for the apiRoot's protocol. telegraf keeps its https default agent alive
 * but drops any agent for an http:// apiRoot (a new TCP connection per call: the sandbox, a
 * local Bot API server); it reads `options.agent` at every call, so we set it after construction.
 */
export function keepAliveAgent(apiRoot: string): HttpAgent {
  const o = { keepAlive: true, keepAliveMsecs: 10_000, maxFreeSockets: 1024 };
  return apiRoot.startsWith('https:') ? new HttpsAgent(o) : new HttpAgent(o);
}

/**
 * The TelegramClient, with a per-request timeout and classified errors. Calls whose payload
 * is plain JSON (texts, photos by URL) are one POST on undici's keep-alive pool (http-pool.ts):
 * at thousands of calls a second telegraf's path (node-fetch, a URL and an AbortSignal per
 * call) and then Node's http.request (about 70 µs of CPU per call on this machine, against
 * 30-40 µs for undici) cost more CPU than the rest of the pipeline. Uploads go through
 * telegraf (multipart). `close()` when done: it closes the pool's connections.
 */
export class TelegrafClient implements TelegramClient {
  private readonly bot: Telegraf;
  private readonly agent: HttpAgent;
  /** JSON calls: one pool for the Bot API's origin. */
  private readonly pool: HttpPool;
  /** The path of every method but its name: '<apiRoot path>bot<token>/'. */
  private readonly path: string;

  constructor(private readonly opts: TelegrafClientOptions) {
    // Never call bot.launch(): that starts polling getUpdates, which a sender must not do.
    this.bot = new Telegraf(opts.token, { telegram: { apiRoot: opts.apiRoot } });
    this.agent = opts.agent ?? keepAliveAgent(opts.apiRoot);
    this.bot.telegram.options.agent = this.agent;
    // As telegraf resolves it: './bot<token>/<method>' against the apiRoot.
    const base = new URL(`./bot${opts.token}/`, opts.apiRoot);
    this.path = base.pathname;
    this.pool = new HttpPool(base.origin, {
      timeoutMs: opts.timeoutMs,
      ...(opts.maxConnections !== undefined ? { connections: opts.maxConnections } : {}),
    });
  }

  /** Waits for the JSON calls in flight, then closes the Bot API connections (the upload agent's too). */
  async close(): Promise<void> {
    await this.pool.close();
    if (!this.opts.agent) this.agent.destroy();
  }

  getMe(): Promise<{ id: number; username?: string }> {
    return this.call('getMe', {});
  }

  sendMessage(chatId: number, text: string, parseMode?: string | null): Promise<SentMessage> {
    const payload: Record<string, unknown> = { chat_id: chatId, text };
    if (parseMode) payload.parse_mode = parseMode;
    return this.call('sendMessage', payload);
  }

  sendPhoto(chatId: number, item: PhotoItem): Promise<SentMessage> {
    // A fresh payload per attempt: telegraf stringifies media fields in place.
    const payload: Record<string, unknown> = { chat_id: chatId, photo: toInput(item.photo) };
    if (item.caption !== undefined) payload.caption = item.caption;
    if (item.parseMode) payload.parse_mode = item.parseMode;
    return this.call('sendPhoto', payload);
  }

  sendMediaGroup(chatId: number, items: PhotoItem[]): Promise<SentMessage[]> {
    const media = items.map((it) => {
      const m: Record<string, unknown> = { type: 'photo', media: toInput(it.photo) };
      if (it.caption !== undefined) m.caption = it.caption;
      if (it.parseMode) m.parse_mode = it.parseMode;
      return m;
    });
    return this.call('sendMediaGroup', { chat_id: chatId, media });
  }

  private call<T>(method: string, payload: Record<string, unknown>): Promise<T> {
    return hasUpload(payload) ? this.callTelegraf(method, payload) : this.postJson(method, payload);
  }

  /** One JSON POST, answered as telegraf would: >= 500 by its status, else by Telegram's `ok`. */
  private async postJson<T>(method: string, payload: Record<string, unknown>): Promise<T> {
    let answer: HttpAnswer;
    try {
      answer = await this.pool.post(this.path + method, JSON.stringify(payload));
    } catch (e) {
      throw classifyThrown(method, e, isTimeout(e));
    }
    if (answer.status >= 500) throw classifyThrown(method, { response: { error_code: answer.status, description: answer.statusText } }, false);
    let data: { ok?: boolean; result?: T };
    try {
      data = JSON.parse(answer.body.toString('utf8')) as typeof data;
    } catch (e) {
      throw classifyThrown(method, { type: 'invalid-json', message: `invalid json response body: ${describeError(e)}` }, false);
    }
    if (!data.ok) throw classifyThrown(method, { response: data }, false);
    return data.result as T;
  }

  private async callTelegraf<T>(method: string, payload: Record<string, unknown>): Promise<T> {
    const controller = new AbortController();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      controller.abort();
    }, this.opts.timeoutMs);
    try {
      // callApi's typings are per-method; payloads here are built and checked above.
      const callApi = this.bot.telegram.callApi.bind(this.bot.telegram) as unknown as (
        m: string,
        p: Record<string, unknown>,
        o: { signal: AbortSignal },
      ) => Promise<T>;
      return await callApi(method, payload, { signal: controller.signal });
    } catch (e) {
      throw classifyThrown(method, e, timedOut);
    } finally {
      clearTimeout(timer);
    }
  }
}

/** Whether a payload carries bytes to upload (telegraf's InputFile): those go as multipart through telegraf. */
function hasUpload(payload: Record<string, unknown>): boolean {
  const media = payload.media;
  if (Array.isArray(media)) return media.some((m) => typeof (m as { media?: unknown }).media === 'object');
  return typeof payload.photo === 'object';
}

function toInput(p: PhotoSource): unknown {
  return p.kind === 'bytes' ? Input.fromBuffer(p.data, p.filename) : p.url;
}

export { TelegramApiError };
