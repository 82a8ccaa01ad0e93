/**
 * Whose limit did a 429 enforce? Telegram does not say. The evidence we have: was the
 * throttled chat near its own limit when we sent, and how many other chats were throttled
 * lately. A chat near its own limit is throttled for itself (its scope). Several chats
 * throttled within one window while none of them was near its own limit can only be the
 * bot-wide limit. One lone chat not near its limit is treated as that chat's scope: a
 * single chat's 429 never pauses the cluster.
 */
export type FloodScope = 'chat' | 'global';

export interface FloodOptions {
  /** How far back 429s of other chats count as the same flood (ms; default 2 000). */
  windowMs: number;
  /** Distinct chats, none near its own limit, that make a bot-wide flood (default 2). */
  chats: number;
}

export const DEFAULT_FLOOD_OPTIONS: FloodOptions = { windowMs: 2_000, chats: 2 };

export interface FloodState {
  /** 429s of chats that were not near their own limit, oldest first, one per chat. */
  readonly recent: ReadonlyArray<{ chatId: number; at: number }>;
}

export const EMPTY_FLOOD: FloodState = { recent: [] };

export interface Throttle {
  chatId: number;
  at: number;
  /** The chat had (nearly) used its own window when the rejected request went out. */
  nearLimit: boolean;
}

/** Pure: the scope of this 429 and the detector's next state. */
export function observeThrottle(state: FloodState, t: Throttle, o: FloodOptions = DEFAULT_FLOOD_OPTIONS): { state: FloodState; scope: FloodScope } {
  const recent = state.recent.filter((r) => r.at > t.at - o.windowMs && r.chatId !== t.chatId);
  if (t.nearLimit) return { state: { recent }, scope: 'chat' };
  recent.push({ chatId: t.chatId, at: t.at });
  return { state: { recent }, scope: recent.length >= o.chats ? 'global' : 'chat' };
}

/**
 * Was a chat near its own limit? `sends` are the instants of its accepted sends (answer
 * times) before the rejected one, `sentAt` when the rejected one went out. Near means the
 * window ending then, stretched by `slack` (the server's window may be a bit longer than
 * ours), already held a quarter of `count` sends (at least one): a server stricter than
 * configured for this chat's scope could be counting exactly this chat (a group told
 * 20/min that is allowed 10 has sent 10). A chat with little traffic is not near.
 */
export function nearLimit(sends: readonly number[], sentAt: number, limit: { count: number; windowMs: number }, slack = 1.5): boolean {
  const from = sentAt - limit.windowMs * slack;
  let n = 0;
  for (const s of sends) if (s > from && s <= sentAt) n++;
  return n >= Math.max(1, Math.ceil(limit.count * 0.25));
}

/** Process-wide holder of the detector state (shared by every sender of a process). */
export class FloodDetector {
  state: FloodState = EMPTY_FLOOD;
  constructor(private readonly options: FloodOptions = DEFAULT_FLOOD_OPTIONS) {}
  observe(t: Throttle): FloodScope {
    const r = observeThrottle(this.state, t, this.options);
    this.state = r.state;
    return r.scope;
  }
}
