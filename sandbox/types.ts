/**
 * Contracts of the Telegram Bot API sandbox: its options and control inputs, what it records, and the subset of
 * Telegram's own JSON shapes it answers with. Field names of Telegram shapes are Telegram's (snake_case).
 */

/** Options of a TelegramSandbox. Every default is Telegram's real behaviour (Bots FAQ limits). */
export interface SandboxOptions {
  /** TCP port on 127.0.0.1. Default 0: a free port, read it from start() or `apiRoot`. */
  port?: number;
  /** If set, requests with any other bot token get 401 Unauthorized. Default unset: every token is accepted. */
  token?: string;
  /** Messages per second across all chats. Default 30. */
  globalRate?: number;
  /** Messages per second to one private chat (chat_id > 0). Default 1. */
  chatRate?: number;
  /** Messages per minute to one group or supergroup (chat_id < 0). Default 20. */
  groupRatePerMin?: number;
  /**
   * Length of a group's sliding window in ms. Default 60 000 (Telegram's minute). The rate stays per minute; a
   * shorter window only makes the burst smaller (200/min in 3 000 ms = 10 per 3 s), so a test of a stricter group
   * limit runs in seconds instead of minutes.
   */
  groupWindowMs?: number;
  /** If true, chats without a state set are unknown (400 chat not found) rather than reachable. Default false. */
  chatUnknownByDefault?: boolean;
  /** Chat states in force from the start (and again after reset()). Default none. */
  chats?: ChatSetting[];
  /** Delay before every Bot API answer. Default none. */
  latency?: LatencySetting;
  /** Failures queued from the start (and again after reset()). Default none. */
  failures?: InjectedFailure[];
  /** The delivered log keeps the newest this many entries (older ones are dropped; `seq` keeps counting). Default 100 000. */
  maxDelivered?: number;
}

/** Current rates; windows derive from them (see windowLimit in window.ts). */
export interface RateLimits {
  /** Messages per second across all chats. */
  globalRate: number;
  /** Messages per second per private chat. */
  chatRate: number;
  /** Messages per minute per group or supergroup. */
  groupRatePerMin: number;
  /** Length of a group's window, ms (60 000 unless set). */
  groupWindowMs: number;
}

/**
 * What sending to a chat yields. `ok`: delivered. `blocked` / `deactivated` (private chats): 403. `kicked`
 * (groups): 403. `unknown`: 400 chat not found. `migrated` (basic groups): 400 with `migrate_to_chat_id`.
 */
export type ChatState = 'ok' | 'blocked' | 'deactivated' | 'kicked' | 'unknown' | 'migrated';

export interface ChatSetting {
  chatId: number;
  state: ChatState;
  /** Required with `migrated`: the supergroup id (-100…) the group became. */
  migrateToChatId?: number;
}

/** Uniform random delay in [minMs, maxMs]; maxMs defaults to minMs (fixed delay). {minMs: 0} disables it. */
export interface LatencySetting {
  minMs: number;
  maxMs?: number;
}

/** Which requests an injected failure applies to; it is consumed by the first `count` (default 1) that match. */
export interface FailureMatch {
  /** Only requests whose chat_id is this. Default: any request, including ones without chat_id. */
  chatId?: number;
  /** Only this Bot API method (case-insensitive, like Telegram's router). Default: any. */
  method?: string;
  /** How many matching requests get the failure. Default 1. */
  count?: number;
}

/**
 * A failure answered instead of processing the request: a 5xx with Telegram's bare body, a 429 (as Telegram
 * answers while restarting), or no answer at all until stop(). Injected failures never occupy rate windows.
 */
export type InjectedFailure =
  | (FailureMatch & { status: 500 | 502 | 503 })
  | (FailureMatch & { status: 429; /** Seconds, default 1. */ retryAfter?: number })
  | (FailureMatch & { hang: true });

export type RateScope = 'global' | 'chat' | 'group';

export type SendMethod = 'sendMessage' | 'sendPhoto' | 'sendMediaGroup';

/** One item of a delivered photo or album. */
export interface DeliveredMedia {
  type: 'photo';
  caption?: string;
  source: 'upload' | 'url' | 'file_id';
  /** Size of an uploaded file. */
  bytes?: number;
}

/**
 * One accepted send request. An album is one entry with `mediaCount` n whose messages have ids
 * messageId … messageId + n - 1. The bot token is never recorded.
 */
export interface DeliveredEntry {
  /** Position in the whole log, from 1. */
  seq: number;
  messageId: number;
  chatId: number;
  method: SendMethod;
  /** The text as sent (markup included). */
  text?: string;
  /** sendPhoto's caption as sent. */
  caption?: string;
  parseMode?: string;
  /** Messages this request created: 1 for sendMessage/sendPhoto, n for an album. */
  mediaCount: number;
  media?: DeliveredMedia[];
  /** When the request was fully received, ms since the epoch. */
  at: number;
}

export interface WindowOccupancy {
  /** Messages inside the window ending now. */
  used: number;
  /** Messages the window admits. */
  count: number;
  windowMs: number;
}

/** Counters since start() or the last reset(). */
export interface SandboxStats {
  /** Bot API requests received (control endpoints excluded). */
  requests: number;
  /** Requests per Bot API method (canonical spelling for known methods). */
  methods: Record<string, number>;
  accepted: {
    requests: number;
    /** Messages created: albums count n. */
    messages: number;
  };
  /** Error answers by error_code, injected ones included. */
  rejected: Record<string, number>;
  /** 429s from the sandbox's own limits, by the window that was full (the longest wait when several were). */
  rateLimited: Record<RateScope, number>;
  /** Requests answered (or left hanging) by injected failures. */
  injected: number;
  /** Requests hanging now. */
  hanging: number;
  /** TCP connections opened by clients (a client with keep-alive opens few). */
  connections: number;
  /** Largest number of accepted messages seen inside any global window; never above its count but for albums. */
  peakGlobalWindow: number;
  windows: {
    global: WindowOccupancy;
    /** Private chats with messages inside their window now. */
    activeChats: number;
    /** Groups with messages inside their window now. */
    activeGroups: number;
  };
  limits: RateLimits;
}

// ---- Telegram's shapes (the subset the sandbox answers with) ----

export interface MessageEntity {
  type:
    | 'bold'
    | 'italic'
    | 'underline'
    | 'strikethrough'
    | 'spoiler'
    | 'code'
    | 'pre'
    | 'text_link'
    | 'blockquote'
    | 'expandable_blockquote'
    | 'custom_emoji'
    | 'date_time';
  /** UTF-16 code units. */
  offset: number;
  length: number;
  url?: string;
  language?: string;
  custom_emoji_id?: string;
  unix_time?: number;
  date_time_format?: string;
}

export interface TgUser {
  id: number;
  is_bot: boolean;
  first_name: string;
  username?: string;
  can_join_groups?: boolean;
  can_read_all_group_messages?: boolean;
  supports_inline_queries?: boolean;
}

export interface TgChat {
  id: number;
  type: 'private' | 'group' | 'supergroup';
  first_name?: string;
  title?: string;
}

export interface TgPhotoSize {
  file_id: string;
  file_unique_id: string;
  width: number;
  height: number;
  file_size?: number;
}

export interface TgMessage {
  message_id: number;
  from: TgUser;
  chat: TgChat;
  /** Unix time, seconds. */
  date: number;
  media_group_id?: string;
  text?: string;
  entities?: MessageEntity[];
  photo?: TgPhotoSize[];
  caption?: string;
  caption_entities?: MessageEntity[];
}

export interface ApiSuccess<T> {
  ok: true;
  result: T;
}

/** Telegram's error envelope; `parameters` only when it carries something. HTTP status = error_code. */
export interface ApiError {
  ok: false;
  error_code: number;
  description: string;
  parameters?: { retry_after?: number; migrate_to_chat_id?: number };
}
