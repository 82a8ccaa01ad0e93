/**
 * TelegramSandbox: a local, strict stand-in for the Bot API (getMe, sendMessage, sendPhoto, sendMediaGroup) that
 * enforces Telegram's rate limits as sliding windows, answers with Telegram's exact shapes and wording, can play
 * chat states and injected faults, and records what was delivered. Plain node:http, so that bodies and timing
 * are exactly ours. See docs/sandbox.md.
 */
import { EventEmitter } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { performance } from 'node:perf_hooks';
import busboy from 'busboy';
import { formatText, type FormattedText } from './html';
import { demoImage } from './demo-images';
import type {
  ApiError,
  ApiSuccess,
  ChatSetting,
  ChatState,
  DeliveredEntry,
  DeliveredMedia,
  InjectedFailure,
  LatencySetting,
  RateLimits,
  RateScope,
  SandboxOptions,
  SandboxStats,
  SendMethod,
  TgChat,
  TgMessage,
  TgPhotoSize,
  TgUser,
} from './types';
import { KeyedWindows, WindowCounter, groupWindowLimit, retryAfterSeconds, windowLimit, type WindowLimit } from './window';

const HOST = '127.0.0.1';
const DEFAULT_LIMITS: RateLimits = { globalRate: 30, chatRate: 1, groupRatePerMin: 20, groupWindowMs: 60_000 };
/** api.telegram.org refuses larger requests with 413. */
/** Newest delivered entries kept by default (see SandboxOptions.maxDelivered). */
const DEFAULT_MAX_DELIVERED = 100_000;
const MAX_BODY_BYTES = 50 * 1024 * 1024;
const MAX_TEXT_LENGTH = 4096;
const MAX_CAPTION_LENGTH = 1024;
const MIN_ALBUM = 2;
const MAX_ALBUM = 10;
/** Supergroup and channel ids are -100… (13+ digits); other negative ids are basic groups. */
const SUPERGROUP_IDS_BELOW = -1_000_000_000_000;
/** Uploads are not decoded: every photo reports these dimensions. */
const PHOTO_WIDTH = 1280;
const PHOTO_HEIGHT = 720;
const CHAT_STATES: readonly ChatState[] = ['ok', 'blocked', 'deactivated', 'kicked', 'unknown', 'migrated'];
/** Telegram's router is case-insensitive: lower-cased name → canonical name. */
const METHODS = new Map(['getMe', 'sendMessage', 'sendPhoto', 'sendMediaGroup'].map((m) => [m.toLowerCase(), m]));
const BOT_ROUTE = /^\/bot([^/]*)\/([^/]+)$/;

/** Thrown by the embedded API for invalid settings; control endpoints answer it as 400. */
export class SandboxInputError extends Error {
  override name = 'SandboxInputError';
}

// ---------------------------------------------------------------------------------------------------------------
// Answers: every error the sandbox gives, worded as Telegram words it (tdlib/telegram-bot-api Client.cpp).
// ---------------------------------------------------------------------------------------------------------------

function apiError(code: number, description: string, parameters?: ApiError['parameters']): ApiError {
  return parameters === undefined ? { ok: false, error_code: code, description } : { ok: false, error_code: code, description, parameters };
}

/** The Bot API lower-cases the first letter of TDLib's messages, unless it starts an UPPER_CASE code. */
function lowerFirst(message: string): string {
  const second = message[1] ?? '';
  if (second === '_' || (second >= 'A' && second <= 'Z')) return message;
  return message.charAt(0).toLowerCase() + message.slice(1);
}

const Errors = {
  unauthorized: () => apiError(401, 'Unauthorized'),
  notFound: () => apiError(404, 'Not Found'),
  methodNotFound: () => apiError(404, 'Not Found: method not found'),
  tooLarge: () => apiError(413, 'Request Entity Too Large'),
  /** A TDLib-style message as the Bot API relays it. */
  badRequest: (message: string) => apiError(400, `Bad Request: ${lowerFirst(message)}`),
  chatIdEmpty: () => apiError(400, 'Bad Request: chat_id is empty'),
  chatNotFound: () => apiError(400, 'Bad Request: chat not found'),
  migrated: (to: number) => apiError(400, 'Bad Request: group chat was upgraded to a supergroup chat', { migrate_to_chat_id: to }),
  textEmpty: () => apiError(400, 'Bad Request: message text is empty'),
  textTooLong: () => apiError(400, 'Bad Request: message is too long'),
  captionTooLong: () => apiError(400, 'Bad Request: message caption is too long'),
  noPhoto: () => apiError(400, 'Bad Request: there is no photo in the request'),
  wrongFile: () => apiError(400, 'Bad Request: wrong file identifier/HTTP URL specified'),
  emptyFile: () => apiError(400, 'Bad Request: file must be non-empty'),
  noMessages: () => apiError(400, 'Bad Request: there are no messages to send'),
  tooManyMessages: () => apiError(400, 'Bad Request: too many messages to send as an album'),
  /** The sandbox's own wording: Telegram would send a lone item as a plain message; the Bot API docs say 2-10. */
  albumTooSmall: () => apiError(400, 'Bad Request: media group must contain 2-10 items'),
  blocked: () => apiError(403, 'Forbidden: bot was blocked by the user'),
  deactivated: () => apiError(403, 'Forbidden: user is deactivated'),
  kicked: (type: TgChat['type']) => apiError(403, `Forbidden: bot was kicked from the ${type} chat`),
  tooManyRequests: (retryAfter: number) => apiError(429, `Too Many Requests: retry after ${retryAfter}`, { retry_after: retryAfter }),
  injected: (status: 500 | 502 | 503) => apiError(status, { 500: 'Internal Server Error', 502: 'Bad Gateway', 503: 'Service Unavailable' }[status]),
} as const;

const isApiError = (value: object): value is ApiError => (value as { ok?: unknown }).ok === false;

/** A request the sandbox swallows: no answer until stop(). */
const HANG = Symbol('hang');
type Reply = ApiSuccess<unknown> | ApiError;
type Outcome = Reply | typeof HANG;

// ---------------------------------------------------------------------------------------------------------------
// Reading requests: query string, JSON, urlencoded and multipart all become string parameters, as in the Bot API.
// ---------------------------------------------------------------------------------------------------------------

interface BotCall {
  params: Map<string, string>;
  /** Uploaded parts by field name, as their size in bytes (contents are not kept). */
  files: Map<string, number>;
}

/** A request that cannot be read; answered with `reply`. */
class RequestError extends Error {
  constructor(readonly reply: ApiError) {
    super(reply.description);
  }
}

async function readBotCall(req: IncomingMessage, url: URL): Promise<BotCall> {
  const call: BotCall = { params: new Map(url.searchParams), files: new Map() };
  const type = (req.headers['content-type'] ?? '').split(';')[0]?.trim().toLowerCase();
  if (type === 'multipart/form-data') {
    await readMultipart(req, call);
    return call;
  }
  const body = await readBody(req);
  if (body.length === 0) return call;
  if (type === 'application/json') {
    for (const [key, value] of parseJsonParams(body)) call.params.set(key, value);
  } else if (type === 'application/x-www-form-urlencoded') {
    for (const [key, value] of new URLSearchParams(body.toString('utf8'))) call.params.set(key, value);
  }
  return call;
}

/** Reads the whole body; past the size limit it keeps draining (so that 413 can still be answered). */
async function readBody(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size <= MAX_BODY_BYTES) chunks.push(chunk);
  }
  if (size > MAX_BODY_BYTES) throw new RequestError(Errors.tooLarge());
  return Buffer.concat(chunks);
}

/** JSON bodies: string values as they are, any other value as its JSON text (what the Bot API's reader does). */
function parseJsonParams(body: Buffer): Map<string, string> {
  let value: unknown;
  try {
    value = JSON.parse(body.toString('utf8'));
  } catch {
    throw new RequestError(Errors.badRequest('JSON object expected'));
  }
  if (!isRecord(value)) throw new RequestError(Errors.badRequest('JSON object expected'));
  return new Map(Object.entries(value).map(([k, v]) => [k, typeof v === 'string' ? v : JSON.stringify(v)]));
}

function readMultipart(req: IncomingMessage, call: BotCall): Promise<void> {
  return new Promise((resolve, reject) => {
    let parser: busboy.Busboy;
    try {
      parser = busboy({ headers: req.headers, limits: { fileSize: MAX_BODY_BYTES, fieldSize: MAX_BODY_BYTES } });
    } catch {
      req.resume();
      reject(new RequestError(Errors.badRequest('boundary not found')));
      return;
    }
    let tooLarge = false;
    parser.on('field', (name, value, info) => {
      tooLarge ||= info.valueTruncated;
      call.params.set(name, value);
    });
    parser.on('file', (name, stream) => {
      call.files.set(name, 0);
      stream.on('data', (chunk: Buffer) => call.files.set(name, (call.files.get(name) ?? 0) + chunk.length));
      stream.on('limit', () => (tooLarge = true));
    });
    parser.on('close', () => (tooLarge ? reject(new RequestError(Errors.tooLarge())) : resolve()));
    parser.on('error', (error: Error) => {
      req.unpipe(parser);
      req.resume();
      reject(new RequestError(Errors.badRequest(`can't parse form data: ${error.message}`)));
    });
    req.on('error', reject);
    req.pipe(parser);
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Drafts: a send request parsed and formatted, before the chat, the limits and the log are consulted.
// ---------------------------------------------------------------------------------------------------------------

type PhotoInput = { source: 'upload'; bytes: number } | { source: 'url'; url: string } | { source: 'file_id'; fileId: string };

interface DraftItem {
  text?: FormattedText;
  caption?: FormattedText;
  rawCaption?: string;
  photo?: PhotoInput;
}

interface Draft {
  method: SendMethod;
  items: DraftItem[];
  /** What the log records beyond ids and times. */
  entry: Pick<DeliveredEntry, 'text' | 'caption' | 'parseMode' | 'media'>;
}

/**
 * The Bot API's get_input_file: a non-empty value is a remote file (URL or file_id) unless it is attach://<part>;
 * an empty value falls back to an uploaded part named `field`.
 */
function photoInput(value: string | undefined, field: string | undefined, files: Map<string, number>): PhotoInput | undefined {
  let part = field;
  if (value !== undefined && value !== '') {
    if (!value.startsWith('attach://')) {
      return /^https?:\/\//i.test(value) ? { source: 'url', url: value } : { source: 'file_id', fileId: value };
    }
    part = value.slice('attach://'.length);
  }
  const bytes = part === undefined ? undefined : files.get(part);
  return bytes === undefined ? undefined : { source: 'upload', bytes };
}

function deliveredMedia(item: DraftItem): DeliveredMedia {
  const photo = item.photo;
  return withoutUndefined({
    type: 'photo' as const,
    caption: item.rawCaption,
    source: photo?.source ?? 'upload',
    bytes: photo?.source === 'upload' ? photo.bytes : undefined,
  });
}

function checkReplyMarkup(params: Map<string, string>): ApiError | undefined {
  const raw = params.get('reply_markup');
  if (raw === undefined || raw === '') return undefined;
  try {
    if (isRecord(JSON.parse(raw))) return undefined;
  } catch {
    // answered below
  }
  return Errors.badRequest("Can't parse reply keyboard markup JSON object");
}

function draftMessage(params: Map<string, string>): Draft | ApiError {
  const raw = params.get('text') ?? '';
  if (raw === '') return Errors.textEmpty();
  const parseMode = params.get('parse_mode');
  const formatted = formatText(raw, parseMode);
  if (!formatted.ok) return Errors.badRequest(formatted.message);
  if (formatted.value.text === '') return Errors.badRequest('Text must be non-empty');
  const markup = checkReplyMarkup(params);
  if (markup !== undefined) return markup;
  return {
    method: 'sendMessage',
    items: [{ text: formatted.value }],
    entry: withoutUndefined({ text: raw, parseMode }),
  };
}

function draftPhoto(call: BotCall): Draft | ApiError {
  const { params } = call;
  const photo = photoInput(params.get('photo'), 'photo', call.files);
  if (photo === undefined) return Errors.noPhoto();
  const rawCaption = params.get('caption');
  const parseMode = params.get('parse_mode');
  const caption = formatText(rawCaption ?? '', parseMode);
  if (!caption.ok) return Errors.badRequest(caption.message);
  const markup = checkReplyMarkup(params);
  if (markup !== undefined) return markup;
  const item: DraftItem = withoutUndefined({ photo, caption: caption.value, rawCaption });
  return {
    method: 'sendPhoto',
    items: [item],
    entry: withoutUndefined({ caption: rawCaption, parseMode, media: [deliveredMedia(item)] }),
  };
}

function draftMediaGroup(call: BotCall): Draft | ApiError {
  const raw = call.params.get('media');
  if (raw === undefined || raw === '') return Errors.badRequest('parameter "media" is required');
  let media: unknown;
  try {
    media = JSON.parse(raw);
  } catch {
    return Errors.badRequest("Can't parse media JSON object");
  }
  if (!Array.isArray(media)) return Errors.badRequest('Expected an Array of InputMedia');
  const items: DraftItem[] = [];
  for (const input of media) {
    const item = draftAlbumItem(input, call.files);
    if (typeof item === 'string') return Errors.badRequest(`Can't parse InputMedia: ${item}`);
    items.push(item);
  }
  return { method: 'sendMediaGroup', items, entry: { media: items.map(deliveredMedia) } };
}

/** One InputMedia of an album, checked in the Bot API's order; a string is the reason it cannot be read. */
function draftAlbumItem(input: unknown, files: Map<string, number>): DraftItem | string {
  if (!isRecord(input)) return 'expected an Object';
  const { caption: rawCaption, parse_mode: parseMode, type, media } = input;
  for (const [name, value] of Object.entries({ caption: rawCaption, parse_mode: parseMode, media })) {
    if (value !== undefined && typeof value !== 'string') return `Field "${name}" must be of type String`;
  }
  const caption = formatText((rawCaption as string | undefined) ?? '', parseMode as string | undefined);
  if (!caption.ok) return caption.message;
  if (type === undefined) return 'Can\'t find field "type"';
  if (typeof type !== 'string') return 'Field "type" must be of type String';
  const photo = photoInput(media as string | undefined, undefined, files);
  if (photo === undefined) return 'media not found';
  if (type !== 'photo') return `type "${type}" is unsupported`;
  return withoutUndefined({ photo, caption: caption.value, rawCaption: rawCaption as string | undefined });
}

// ---------------------------------------------------------------------------------------------------------------
// Settings: validated once, for the embedded API and the control endpoints alike.
// ---------------------------------------------------------------------------------------------------------------

interface PendingFailure {
  chatId: number | undefined;
  /** Lower-cased. */
  method: string | undefined;
  remaining: number;
  answer: ApiError | typeof HANG;
}

function chatType(id: number): TgChat['type'] {
  if (id > 0) return 'private';
  return id < SUPERGROUP_IDS_BELOW ? 'supergroup' : 'group';
}

function validateChat(setting: ChatSetting): ChatSetting {
  const { chatId, state, migrateToChatId } = setting;
  if (!Number.isSafeInteger(chatId) || chatId === 0) {
    throw new SandboxInputError(`chat id must be a non-zero integer, got ${chatId}`);
  }
  const type = chatType(chatId);
  switch (state) {
    case 'ok':
    case 'unknown':
      return { chatId, state };
    case 'blocked':
    case 'deactivated':
      if (type !== 'private') {
        throw new SandboxInputError(`state "${state}" is for private chats (id > 0); ${chatId} is a ${type}`);
      }
      return { chatId, state };
    case 'kicked':
      if (type === 'private') {
        throw new SandboxInputError(`state "kicked" is for groups (id < 0); use "blocked" for ${chatId}`);
      }
      return { chatId, state };
    case 'migrated': {
      if (type !== 'group') {
        throw new SandboxInputError(`state "migrated" is for basic groups (-999999999999…-1); ${chatId} is a ${type}`);
      }
      const target = migrateToChatId ?? 0;
      if (!Number.isSafeInteger(target) || chatType(target) !== 'supergroup') {
        const got = String(migrateToChatId);
        throw new SandboxInputError(`state "migrated" needs a supergroup id (-100…) to migrate to, got ${got}`);
      }
      return { chatId, state, migrateToChatId: target };
    }
    default:
      throw new SandboxInputError(`state must be one of ${CHAT_STATES.join(', ')}; got ${String(state)}`);
  }
}

function validateFailure(failure: InjectedFailure): PendingFailure {
  const { chatId, method, count = 1 } = failure;
  if (chatId !== undefined && !Number.isSafeInteger(chatId)) {
    throw new SandboxInputError(`failure chat id must be an integer, got ${chatId}`);
  }
  if (method !== undefined && typeof method !== 'string') {
    throw new SandboxInputError('failure method must be a string');
  }
  if (!Number.isSafeInteger(count) || count < 1) {
    throw new SandboxInputError(`failure count must be a positive integer, got ${count}`);
  }
  let answer: ApiError | typeof HANG;
  if ('hang' in failure) {
    answer = HANG;
  } else if (failure.status === 429) {
    const retryAfter = failure.retryAfter ?? 1;
    if (!Number.isSafeInteger(retryAfter) || retryAfter < 1) {
      throw new SandboxInputError(`retryAfter must be a positive integer, got ${retryAfter}`);
    }
    answer = Errors.tooManyRequests(retryAfter);
  } else if (failure.status === 500 || failure.status === 502 || failure.status === 503) {
    answer = Errors.injected(failure.status);
  } else {
    const status = String((failure as { status: unknown }).status);
    throw new SandboxInputError(`failure status must be 429, 500, 502 or 503 (or hang: true); got ${status}`);
  }
  return { chatId, method: method?.toLowerCase(), remaining: count, answer };
}

function validateLatency(latency: LatencySetting): Required<LatencySetting> {
  const { minMs, maxMs = minMs } = latency;
  if (!Number.isFinite(minMs) || minMs < 0 || !Number.isFinite(maxMs) || maxMs < minMs) {
    throw new SandboxInputError(`latency needs 0 ≤ minMs ≤ maxMs, got ${minMs}–${maxMs}`);
  }
  return { minMs, maxMs };
}

function validateLimits(limits: RateLimits): RateLimits {
  for (const [name, value] of Object.entries(limits)) {
    if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
      throw new SandboxInputError(`${name} must be a positive number, got ${String(value)}`);
    }
  }
  return { ...limits };
}

// ---------------------------------------------------------------------------------------------------------------
// The sandbox.
// ---------------------------------------------------------------------------------------------------------------

interface Counters {
  requests: number;
  methods: Record<string, number>;
  acceptedRequests: number;
  acceptedMessages: number;
  rejected: Record<string, number>;
  rateLimited: Record<RateScope, number>;
  injected: number;
  peakGlobalWindow: number;
  connections: number;
}

const freshCounters = (): Counters => ({
  requests: 0,
  methods: {},
  acceptedRequests: 0,
  acceptedMessages: 0,
  rejected: {},
  rateLimited: { global: 0, chat: 0, group: 0 },
  injected: 0,
  peakGlobalWindow: 0,
  connections: 0,
});

export class TelegramSandbox {
  private readonly options: SandboxOptions;
  private readonly initialLimits: RateLimits;
  private readonly initialChats: ChatSetting[];
  private readonly initialFailures: PendingFailure[];
  private readonly initialLatency: Required<LatencySetting>;
  private readonly events = new EventEmitter();

  private server: Server | undefined;
  private boundPort: number | undefined;
  private starting: Promise<{ apiRoot: string; port: number }> | undefined;
  private stopping: Promise<void> | undefined;
  private readonly hanging = new Set<ServerResponse>();
  private readonly timers = new Set<NodeJS.Timeout>();

  // State that reset() restores.
  private limits: RateLimits;
  private globalLimit: WindowLimit;
  private readonly globalWindow = new WindowCounter();
  private readonly chatWindows: KeyedWindows;
  private readonly groupWindows: KeyedWindows;
  private chats = new Map<number, ChatSetting>();
  private failures: PendingFailure[] = [];
  private latency: Required<LatencySetting>;
  private log: DeliveredEntry[] = [];
  /** Entries ever delivered (the log keeps only the newest maxDelivered). */
  private deliveredTotal = 0;
  private counters = freshCounters();
  private readonly messageIds = new Map<number, number>();
  /** file_id → size in bytes if known: the files this bot could send again by file_id. */
  private readonly files = new Map<string, number | undefined>();
  private fileSeq = 0;
  private albumSeq = 0;

  /** Validates every option now, so that bad configuration fails here and not at the first request. */
  constructor(options: SandboxOptions = {}) {
    const { port = 0 } = options;
    if (!Number.isInteger(port) || port < 0 || port > 65_535) {
      throw new SandboxInputError(`port must be an integer 0–65535, got ${port}`);
    }
    this.options = options;
    this.initialLimits = validateLimits({
      globalRate: options.globalRate ?? DEFAULT_LIMITS.globalRate,
      chatRate: options.chatRate ?? DEFAULT_LIMITS.chatRate,
      groupRatePerMin: options.groupRatePerMin ?? DEFAULT_LIMITS.groupRatePerMin,
      groupWindowMs: options.groupWindowMs ?? DEFAULT_LIMITS.groupWindowMs,
    });
    this.initialChats = (options.chats ?? []).map(validateChat);
    this.initialFailures = (options.failures ?? []).map(validateFailure);
    this.initialLatency = validateLatency(options.latency ?? { minMs: 0 });
    this.limits = this.initialLimits;
    this.globalLimit = windowLimit(this.limits.globalRate);
    this.chatWindows = new KeyedWindows(windowLimit(this.limits.chatRate));
    this.groupWindows = new KeyedWindows(groupWindowLimit(this.limits.groupRatePerMin, this.limits.groupWindowMs));
    this.latency = this.initialLatency;
    this.reset();
  }

  /** Listens on 127.0.0.1. Idempotent; a stopped sandbox cannot start again (create a new one). */
  start(): Promise<{ apiRoot: string; port: number }> {
    if (this.stopping !== undefined) {
      return Promise.reject(new Error('TelegramSandbox was stopped; create a new instance to start again'));
    }
    this.starting ??= this.listen();
    return this.starting;
  }

  /**
   * Closes the server, every keep-alive socket and every hanging request. Idempotent: later calls return the
   * same promise.
   */
  stop(): Promise<void> {
    this.stopping ??= this.shutdown();
    return this.stopping;
  }

  /** `http://127.0.0.1:<port>/`, with the trailing slash telegraf needs to resolve `bot<token>/<method>`. */
  get apiRoot(): string {
    return `http://${HOST}:${this.port}/`;
  }

  get port(): number {
    if (this.boundPort === undefined) throw new Error('TelegramSandbox is not listening: await start() first');
    return this.boundPort;
  }

  /** Accepted sends in order, all chats or one. Entries are frozen (shallowly): treat them as read-only. */
  delivered(chatId?: number): DeliveredEntry[] {
    return chatId === undefined ? [...this.log] : this.log.filter((entry) => entry.chatId === chatId);
  }

  stats(): SandboxStats {
    const now = performance.now();
    const c = this.counters;
    return {
      requests: c.requests,
      methods: { ...c.methods },
      accepted: { requests: c.acceptedRequests, messages: c.acceptedMessages },
      rejected: { ...c.rejected },
      rateLimited: { ...c.rateLimited },
      injected: c.injected,
      hanging: this.hanging.size,
      connections: c.connections,
      peakGlobalWindow: c.peakGlobalWindow,
      windows: {
        global: { used: this.globalWindow.occupancy(now, this.globalLimit), ...this.globalLimit },
        activeChats: this.chatWindows.activeKeys(now),
        activeGroups: this.groupWindows.activeKeys(now),
      },
      limits: { ...this.limits },
    };
  }

  /**
   * Back to the state right after construction: empty log, counters, windows, message ids and known file_ids;
   * chat states, failures, latency and limits as the options set them. Hanging requests stay hanging.
   */
  reset(): void {
    this.log = [];
    this.deliveredTotal = 0;
    this.counters = freshCounters();
    this.chats = new Map(this.initialChats.map((setting) => [setting.chatId, setting]));
    this.failures = this.initialFailures.map((failure) => ({ ...failure }));
    this.latency = this.initialLatency;
    this.applyLimits(this.initialLimits);
    this.globalWindow.clear();
    this.chatWindows.clear();
    this.groupWindows.clear();
    this.messageIds.clear();
    this.files.clear();
    this.fileSeq = 0;
    this.albumSeq = 0;
  }

  /** Sets what sending to a chat yields; state "ok" makes it reachable again. */
  setChat(setting: ChatSetting): void {
    const valid = validateChat(setting);
    this.chats.set(valid.chatId, valid);
  }

  /** Queues failures; each applies to the next `count` matching requests, in the order queued. */
  injectFailure(...failures: InjectedFailure[]): void {
    this.failures.push(...failures.map(validateFailure));
  }

  /** Delay before every Bot API answer; {minMs: 0} disables it. */
  setLatency(latency: LatencySetting): void {
    this.latency = validateLatency(latency);
  }

  /** Changes rates at run time. Messages already in the windows keep counting. */
  setLimits(limits: Partial<RateLimits>): void {
    this.applyLimits(validateLimits({ ...this.limits, ...limits }));
  }

  /** Called synchronously for every accepted send, before its answer is written. Listeners must not throw. */
  on(event: 'delivered', listener: (entry: DeliveredEntry) => void): this {
    this.events.on(event, listener);
    return this;
  }

  off(event: 'delivered', listener: (entry: DeliveredEntry) => void): this {
    this.events.off(event, listener);
    return this;
  }

  /** Resolves with the log once it holds at least `count` entries; rejects after `timeoutMs` (default 5000). */
  waitForDelivered(count: number, timeoutMs = 5_000): Promise<DeliveredEntry[]> {
    if (this.deliveredTotal >= count) return Promise.resolve(this.delivered());
    return new Promise((resolve, reject) => {
      const onDelivered = (): void => {
        if (this.deliveredTotal < count) return;
        clearTimeout(timer);
        this.off('delivered', onDelivered);
        resolve(this.delivered());
      };
      const timer = setTimeout(() => {
        this.off('delivered', onDelivered);
        reject(new Error(`waitForDelivered: ${this.deliveredTotal} of ${count} entries after ${timeoutMs} ms`));
      }, timeoutMs);
      this.on('delivered', onDelivered);
    });
  }

  // ---- lifecycle ----

  private async listen(): Promise<{ apiRoot: string; port: number }> {
    const server = createServer((req, res) => {
      this.handle(req, res).catch((error: unknown) => answerInternalError(res, error));
    });
    server.on('connection', () => {
      this.counters.connections++;
    });
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.options.port ?? 0, HOST, () => {
        server.off('error', reject);
        resolve();
      });
    });
    this.boundPort = (server.address() as AddressInfo).port;
    return { apiRoot: this.apiRoot, port: this.boundPort };
  }

  private async shutdown(): Promise<void> {
    await this.starting?.catch(() => undefined);
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
    const server = this.server;
    if (server === undefined) return;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    server.closeAllConnections(); // keep-alive sockets and hanging requests alike
    await closed;
    this.hanging.clear();
  }

  // ---- HTTP ----

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://sandbox.invalid');
    if (req.method === 'GET' && url.pathname.startsWith('/sandbox/images/')) {
      const png = demoImage(url.pathname);
      req.resume();
      if (!png) {
        writeJson(res, Errors.notFound());
        return;
      }
      res.writeHead(200, { 'content-type': 'image/png', 'content-length': png.length }).end(png);
      return;
    }
    if (url.pathname.startsWith('/sandbox/')) return this.handleControl(req, res, url);
    const route = BOT_ROUTE.exec(url.pathname);
    if (route === null) {
      req.resume();
      writeJson(res, Errors.notFound());
      return;
    }
    const [, token = '', method = ''] = route;
    let outcome: Outcome;
    try {
      const call = await readBotCall(req, url);
      outcome = this.process(token, method, call, performance.now(), Date.now());
    } catch (error) {
      if (!(error instanceof RequestError)) throw error;
      outcome = this.count(method, error.reply);
    }
    if (outcome === HANG) {
      this.hanging.add(res);
      res.on('close', () => this.hanging.delete(res));
      return;
    }
    await this.delay();
    writeJson(res, outcome);
  }

  private delay(): Promise<void> {
    const { minMs, maxMs } = this.latency;
    const ms = minMs + Math.random() * (maxMs - minMs);
    if (ms <= 0) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.timers.delete(timer);
        resolve();
      }, ms);
      this.timers.add(timer);
    });
  }

  private async handleControl(req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
    try {
      const body = parseControlBody(await readBody(req));
      writeJson(res, { ok: true, result: this.control(`${req.method ?? 'GET'} ${url.pathname}`, url, body) });
    } catch (error) {
      if (error instanceof SandboxInputError) {
        writeJson(res, apiError(400, `Bad Request: ${error.message}`));
        return;
      }
      if (error instanceof RequestError) {
        writeJson(res, error.reply);
        return;
      }
      throw error;
    }
  }

  private control(route: string, url: URL, body: unknown): unknown {
    switch (route) {
      case 'GET /sandbox/delivered': {
        const chatId = url.searchParams.get('chat_id');
        if (chatId !== null && !/^-?\d+$/.test(chatId)) throw new SandboxInputError('chat_id must be an integer');
        return this.delivered(chatId === null ? undefined : Number(chatId));
      }
      case 'GET /sandbox/stats':
        return this.stats();
      case 'POST /sandbox/reset':
        this.reset();
        return true;
      case 'POST /sandbox/chats': {
        // All or nothing: every setting is validated before any applies.
        const settings = (Array.isArray(body) ? body : [body]).map(readChatSetting).map(validateChat);
        settings.forEach((setting) => this.chats.set(setting.chatId, setting));
        return settings;
      }
      case 'POST /sandbox/failures':
        this.injectFailure(...(Array.isArray(body) ? body : [body]).map(readFailure));
        return { pending: this.failures.reduce((sum, failure) => sum + failure.remaining, 0) };
      case 'POST /sandbox/latency': {
        const fields = asRecord(body);
        this.setLatency({
          minMs: required(fields, 'min_ms', isNumber, 'a number of ms'),
          maxMs: optional(fields, 'max_ms', isNumber, 'a number of ms'),
        });
        return { min_ms: this.latency.minMs, max_ms: this.latency.maxMs };
      }
      case 'POST /sandbox/limits': {
        const fields = asRecord(body);
        this.setLimits(
          withoutUndefined({
            globalRate: optional(fields, 'global_rate', isNumber, 'a number of messages per second'),
            chatRate: optional(fields, 'chat_rate', isNumber, 'a number of messages per second'),
            groupRatePerMin: optional(fields, 'group_rate_per_min', isNumber, 'a number of messages per minute'),
            groupWindowMs: optional(fields, 'group_window_ms', isNumber, 'a number of ms'),
          }),
        );
        return { ...this.limits };
      }
      default:
        throw new RequestError(apiError(404, `Not Found: no control endpoint ${route}; see docs/sandbox.md`));
    }
  }

  // ---- Bot API ----

  private process(token: string, method: string, call: BotCall, now: number, at: number): Outcome {
    const name = method.toLowerCase();
    const failure = this.takeFailure(name, call.params.get('chat_id'));
    if (failure !== undefined) {
      this.counters.injected++;
      return this.count(method, failure);
    }
    return this.count(method, this.answer(token, name, call, now, at));
  }

  /** Counts a request and its outcome under the method's canonical name. */
  private count(method: string, outcome: Outcome): Outcome {
    const c = this.counters;
    const name = METHODS.get(method.toLowerCase()) ?? method;
    c.requests++;
    c.methods[name] = (c.methods[name] ?? 0) + 1;
    if (outcome !== HANG && !outcome.ok) c.rejected[outcome.error_code] = (c.rejected[outcome.error_code] ?? 0) + 1;
    return outcome;
  }

  private takeFailure(method: string, rawChatId: string | undefined): ApiError | typeof HANG | undefined {
    const chatId = rawChatId !== undefined && /^-?\d+$/.test(rawChatId) ? Number(rawChatId) : undefined;
    const index = this.failures.findIndex((f) => (f.method === undefined || f.method === method) && (f.chatId === undefined || f.chatId === chatId));
    const failure = this.failures[index];
    if (failure === undefined) return undefined;
    if (--failure.remaining === 0) this.failures.splice(index, 1);
    return failure.answer;
  }

  private answer(token: string, method: string, call: BotCall, now: number, at: number): Reply {
    if (this.options.token !== undefined && token !== this.options.token) return Errors.unauthorized();
    const bot = botUser(token);
    switch (METHODS.get(method)) {
      case 'getMe':
        return {
          ok: true,
          result: { ...bot, can_join_groups: true, can_read_all_group_messages: false, supports_inline_queries: false },
        };
      case 'sendMessage':
        return this.send(draftMessage(call.params), call.params, bot, now, at);
      case 'sendPhoto':
        return this.send(draftPhoto(call), call.params, bot, now, at);
      case 'sendMediaGroup':
        return this.send(draftMediaGroup(call), call.params, bot, now, at);
      default:
        return Errors.methodNotFound();
    }
  }

  /**
   * Telegram's order: the request's own content, then the chat (existence, migration, membership), then what
   * TDLib checks on sending (album size, files, lengths), then the user's side (blocked, deactivated), then the
   * flood limits. Only a request that passes everything occupies the windows.
   */
  private send(draft: Draft | ApiError, params: Map<string, string>, bot: TgUser, now: number, at: number): Reply {
    if (isApiError(draft)) return draft;
    const chat = this.resolveChat(params.get('chat_id'));
    if (isApiError(chat)) return chat;
    const rejection = this.checkContent(draft) ?? this.checkRecipient(chat.id) ?? this.admit(chat.id, draft.items.length, now);
    if (rejection !== undefined) return rejection;
    return this.deliver(draft, chat, bot, at);
  }

  private stateOf(chatId: number): ChatSetting {
    return this.chats.get(chatId) ?? { chatId, state: this.options.chatUnknownByDefault === true ? 'unknown' : 'ok' };
  }

  private resolveChat(raw: string | undefined): TgChat | ApiError {
    if (raw === undefined || raw === '') return Errors.chatIdEmpty();
    if (!/^-?\d{1,16}$/.test(raw) || Number(raw) === 0) return Errors.chatNotFound();
    const id = Number(raw);
    const setting = this.stateOf(id);
    const type = chatType(id);
    switch (setting.state) {
      case 'unknown':
        return Errors.chatNotFound();
      case 'migrated':
        return Errors.migrated(setting.migrateToChatId ?? 0);
      case 'kicked':
        return Errors.kicked(type);
      default:
        return type === 'private' ? { id, first_name: `User ${id}`, type } : { id, title: `Group ${id}`, type };
    }
  }

  private checkContent(draft: Draft): ApiError | undefined {
    if (draft.method === 'sendMediaGroup') {
      const n = draft.items.length;
      if (n === 0) return Errors.noMessages();
      if (n > MAX_ALBUM) return Errors.tooManyMessages();
      if (n < MIN_ALBUM) return Errors.albumTooSmall();
    }
    for (const item of draft.items) {
      const photo = item.photo;
      if (photo?.source === 'upload' && photo.bytes === 0) return Errors.emptyFile();
      if (photo?.source === 'file_id' && !this.files.has(photo.fileId)) return Errors.wrongFile();
      if (photo?.source === 'url' && !isHttpUrl(photo.url)) return Errors.wrongFile();
      if ((item.text?.text.length ?? 0) > MAX_TEXT_LENGTH) return Errors.textTooLong();
      if ((item.caption?.text.length ?? 0) > MAX_CAPTION_LENGTH) return Errors.captionTooLong();
    }
    return undefined;
  }

  private checkRecipient(chatId: number): ApiError | undefined {
    const { state } = this.stateOf(chatId);
    if (state === 'blocked') return Errors.blocked();
    if (state === 'deactivated') return Errors.deactivated();
    return undefined;
  }

  /** Checks the global and the chat's window at the receive time; records n messages in both only if both fit. */
  private admit(chatId: number, n: number, now: number): ApiError | undefined {
    const isPrivate = chatId > 0;
    const windows = isPrivate ? this.chatWindows : this.groupWindows;
    const globalWait = this.globalWindow.waitMs(n, now, this.globalLimit);
    const chatWait = windows.waitMs(chatId, n, now);
    if (globalWait > 0 || chatWait > 0) {
      const scope: RateScope = chatWait >= globalWait ? (isPrivate ? 'chat' : 'group') : 'global';
      this.counters.rateLimited[scope]++;
      return Errors.tooManyRequests(retryAfterSeconds(Math.max(globalWait, chatWait)));
    }
    this.globalWindow.add(n, now);
    windows.add(chatId, n, now);
    const inWindow = this.globalWindow.occupancy(now, this.globalLimit);
    this.counters.peakGlobalWindow = Math.max(this.counters.peakGlobalWindow, inWindow);
    return undefined;
  }

  private deliver(draft: Draft, chat: TgChat, bot: TgUser, at: number): ApiSuccess<unknown> {
    const n = draft.items.length;
    const firstId = (this.messageIds.get(chat.id) ?? 0) + 1;
    this.messageIds.set(chat.id, firstId + n - 1);
    const date = Math.floor(at / 1000);
    // Telegram's media_group_id is a 64-bit number as a string.
    const mediaGroupId = draft.method === 'sendMediaGroup' ? String(13_000_000_000_000_000n + BigInt(++this.albumSeq)) : undefined;
    const messages = draft.items.map((item, k): TgMessage =>
      withoutUndefined({
        message_id: firstId + k,
        from: bot,
        chat,
        date,
        media_group_id: mediaGroupId,
        text: item.text?.text,
        entities: nonEmpty(item.text?.entities),
        photo: item.photo === undefined ? undefined : this.photoSizes(item.photo),
        caption: item.caption?.text === '' ? undefined : item.caption?.text,
        caption_entities: nonEmpty(item.caption?.entities),
      }),
    );
    const entry: DeliveredEntry = Object.freeze({
      seq: this.deliveredTotal + 1,
      messageId: firstId,
      chatId: chat.id,
      method: draft.method,
      ...draft.entry,
      mediaCount: n,
      at,
    });
    this.log.push(entry);
    this.deliveredTotal++;
    // Bounded: a long-running sandbox (development, demos) must not grow without end. Trim in chunks, not per entry.
    const max = this.options.maxDelivered ?? DEFAULT_MAX_DELIVERED;
    if (this.log.length > max + Math.max(1, Math.floor(max / 10))) this.log.splice(0, this.log.length - max);
    this.counters.acceptedRequests++;
    this.counters.acceptedMessages += n;
    this.events.emit('delivered', entry);
    return { ok: true, result: draft.method === 'sendMediaGroup' ? messages : messages[0] };
  }

  /** One size per photo. Uploads and URLs get a new file_id the bot may send again; a file_id stays itself. */
  private photoSizes(photo: PhotoInput): TgPhotoSize[] {
    let fileId: string;
    if (photo.source === 'file_id') {
      fileId = photo.fileId;
    } else {
      fileId = `AgACsandbox${++this.fileSeq}`;
      this.files.set(fileId, photo.source === 'upload' ? photo.bytes : undefined);
    }
    const size = this.files.get(fileId);
    const uniqueId = `AQADsandbox${fileId.slice('AgACsandbox'.length)}`;
    return [
      withoutUndefined({
        file_id: fileId,
        file_unique_id: uniqueId,
        file_size: size,
        width: PHOTO_WIDTH,
        height: PHOTO_HEIGHT,
      }),
    ];
  }

  private applyLimits(limits: RateLimits): void {
    this.limits = limits;
    this.globalLimit = windowLimit(limits.globalRate);
    this.chatWindows.limit = windowLimit(limits.chatRate);
    this.groupWindows.limit = groupWindowLimit(limits.groupRatePerMin, limits.groupWindowMs);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Small helpers.
// ---------------------------------------------------------------------------------------------------------------

/** The bot's own user: its id is the token's numeric prefix, as in Telegram; nothing else of the token is used. */
function botUser(token: string): TgUser {
  const id = /^(\d{1,15}):/.exec(token)?.[1];
  return { id: id === undefined ? 1 : Number(id), is_bot: true, first_name: 'Sandbox Bot', username: 'sandbox_bot' };
}

function writeJson(res: ServerResponse, body: Reply): void {
  const payload = JSON.stringify(body);
  res.writeHead(body.ok ? 200 : body.error_code, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(payload),
  });
  res.end(payload);
}

/** A bug in the sandbox becomes a visible 500, never a silently dropped request. */
function answerInternalError(res: ServerResponse, error: unknown): void {
  if (res.headersSent || res.destroyed) return;
  const message = error instanceof Error ? error.message : String(error);
  writeJson(res, apiError(500, `Internal Server Error: sandbox failure: ${message}`));
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isHttpUrl(value: string): boolean {
  try {
    const url = new URL(value);
    return (url.protocol === 'http:' || url.protocol === 'https:') && url.hostname !== '';
  } catch {
    return false;
  }
}

function nonEmpty<T>(items: T[] | undefined): T[] | undefined {
  return items === undefined || items.length === 0 ? undefined : items;
}

/** Drops undefined-valued keys so that answers and log entries carry only the fields that apply. */
function withoutUndefined<T extends object>(value: T): T {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as T;
}

// Control endpoint bodies (snake_case JSON) → embedded API arguments.

const isNumber = (value: unknown): value is number => typeof value === 'number' && Number.isFinite(value);
const isString = (value: unknown): value is string => typeof value === 'string';

function parseControlBody(body: Buffer): unknown {
  if (body.length === 0) return {};
  try {
    return JSON.parse(body.toString('utf8'));
  } catch {
    throw new SandboxInputError('the body must be JSON');
  }
}

function asRecord(body: unknown): Record<string, unknown> {
  if (!isRecord(body)) throw new SandboxInputError('the body must be a JSON object');
  return body;
}

type Check<T> = (value: unknown) => value is T;

function optional<T>(fields: Record<string, unknown>, key: string, check: Check<T>, what: string): T | undefined {
  const value = fields[key];
  if (value === undefined) return undefined;
  if (!check(value)) throw new SandboxInputError(`"${key}" must be ${what}`);
  return value;
}

function required<T>(fields: Record<string, unknown>, key: string, check: Check<T>, what: string): T {
  const value = optional(fields, key, check, what);
  if (value === undefined) throw new SandboxInputError(`"${key}" is required (${what})`);
  return value;
}

function readChatSetting(body: unknown): ChatSetting {
  const fields = asRecord(body);
  const state = required(fields, 'state', isString, `one of ${CHAT_STATES.join(', ')}`);
  return withoutUndefined({
    chatId: required(fields, 'chat_id', isNumber, 'an integer'),
    state: state as ChatState, // validateChat rejects anything else
    migrateToChatId: optional(fields, 'migrate_to_chat_id', isNumber, 'an integer'),
  });
}

function readFailure(body: unknown): InjectedFailure {
  const fields = asRecord(body);
  const match = withoutUndefined({
    chatId: optional(fields, 'chat_id', isNumber, 'an integer'),
    method: optional(fields, 'method', isString, 'a method name'),
    count: optional(fields, 'count', isNumber, 'a positive integer'),
  });
  if (fields['hang'] === true) return { ...match, hang: true };
  const status = required(fields, 'status', isNumber, '429, 500, 502 or 503, unless "hang": true');
  if (status === 429) {
    const retryAfter = optional(fields, 'retry_after', isNumber, 'whole seconds');
    return withoutUndefined({ ...match, status, retryAfter });
  }
  return { ...match, status: status as 500 | 502 | 503 }; // validateFailure rejects other statuses
}
