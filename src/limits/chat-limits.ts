import { aimdOptions, aimdStart, aimdThrottled, aimdTick, type AimdOptions, type AimdState } from './aimd';
import { nearLimit } from './flood';
import { SlidingWindow, windowAt, type WindowLimit } from './window';

export { windowAt };

/**
 * What a new owner of a shard knows about its chats' windows.
 * - `exact`: the previous owner handed over the answer times of its recent sends per chat
 *   (a graceful handoff); chats not listed are free when `complete`.
 * - `blind`: the previous owner died (kill -9): every chat is assumed to have used its
 *   whole window at `at`, so its first send waits one full window of its scope.
 * - `free`: nobody sent for this shard recently.
 */
export type WindowSeed = { kind: 'exact'; at: number; chats: Record<string, number[]>; complete: boolean } | { kind: 'blind'; at: number } | { kind: 'free' };

export interface ChatLimitSettings {
  chatLimit: WindowLimit;
  groupLimit: WindowLimit;
}

interface Entry {
  window: SlidingWindow;
  ceiling: WindowLimit;
  aimd: AimdState | undefined;
  /** Answer times of recent accepted sends (for `nearLimit` and the handoff). */
  recent: number[];
}

/** The window a chat is held to: groups per minute, private chats per second. */
export function ceilingOf(s: ChatLimitSettings, chatId: number): WindowLimit {
  // Negative ids are groups (outbox/shard.ts isGroupChat; not imported: limits stay below outbox).
  return chatId < 0 ? s.groupLimit : s.chatLimit;
}

const perSecond = (l: WindowLimit) => (l.count / l.windowMs) * 1000;

/**
 * Per-chat windows and adaptive rates of one sender (one shard). A window outlives the
 * chat's queue: a chat whose queue emptied and refilled within its window still sees the
 * sends it made (the group that got 20 messages and then a 21st inside the minute).
 * A 429 in a chat's scope lowers that chat's rate (AIMD); clean intervals raise it back
 * towards the configured ceiling. Entries are dropped once their window is empty and
 * their rate is back at the ceiling.
 */
export class ChatLimiter {
  private readonly entries = new Map<number, Entry>();

  constructor(
    private readonly settings: ChatLimitSettings,
    private readonly seed: WindowSeed = { kind: 'free' },
    /** Process-wide view of lowered chats (chat id → rate per second), for metrics. */
    private readonly board: Map<number, number> = new Map(),
  ) {}

  private options(ceiling: WindowLimit): AimdOptions {
    // A chat's limit is stable and each of its 429s costs up to a whole window (a minute for a group):
    // settle exactly at what the server was seen to accept, and remember the rejected rate for 10 intervals.
    const cleanMs = Math.max(10_000, ceiling.windowMs);
    return aimdOptions(perSecond(ceiling), {
      cleanMs,
      holdMs: ceiling.windowMs,
      decrease: 0.8,
      fastStep: 0.1,
      settle: 1,
      forgetMs: Math.max(60_000, 10 * cleanMs),
    });
  }

  private entry(chatId: number): Entry {
    let e = this.entries.get(chatId);
    if (!e) {
      const ceiling = ceilingOf(this.settings, chatId);
      e = { window: new SlidingWindow(ceiling), ceiling, aimd: undefined, recent: [] };
      const seed = this.seed;
      if (seed.kind === 'blind') e.window.seed(seed.at, ceiling.count);
      else if (seed.kind === 'exact') {
        const times = seed.chats[String(chatId)];
        if (times) for (const t of times) e.window.seed(t);
        else if (!seed.complete) e.window.seed(seed.at, ceiling.count);
      }
      this.entries.set(chatId, e);
    }
    return e;
  }

  window(chatId: number): SlidingWindow {
    return this.entry(chatId).window;
  }

  /** An accepted (or rejected: the server counted it too) send was answered at `at`. */
  answered(chatId: number, at: number): void {
    const e = this.entry(chatId);
    e.recent.push(at);
    const keep = e.ceiling.count + 1;
    if (e.recent.length > keep) e.recent.splice(0, e.recent.length - keep);
  }

  /** Whether the chat had (nearly) used its own window when a send went out at `sentAt`. */
  nearLimit(chatId: number, sentAt: number): boolean {
    const e = this.entries.get(chatId);
    return e ? nearLimit(e.recent, sentAt, e.window.current) : false;
  }

  /** A 429 in this chat's scope: lower its rate (to just under what it was seen to accept, if lower). */
  throttled(chatId: number, now: number): number {
    const e = this.entry(chatId);
    const o = this.options(e.ceiling);
    const cur = e.aimd ?? aimdStart(o, now);
    const inWindow = e.recent.filter((t) => t > now - e.ceiling.windowMs && t <= now).length;
    const observed = inWindow > 0 ? (inWindow / e.ceiling.windowMs) * 1000 : undefined;
    e.aimd = aimdThrottled(cur, o, now, observed);
    e.window.setLimit(windowAt(e.aimd.rate, e.ceiling));
    this.board.set(chatId, e.aimd.rate);
    return e.aimd.rate;
  }

  /** Periodic: raise lowered rates after clean intervals; forget idle chats at their ceiling. */
  tick(now: number): void {
    for (const [id, e] of this.entries) {
      if (e.aimd) {
        const o = this.options(e.ceiling);
        const busy = e.recent.some((t) => t > now - o.cleanMs);
        e.aimd = aimdTick(e.aimd, o, now, busy);
        if (e.aimd.rate >= o.ceiling) {
          e.aimd = undefined;
          e.window.setLimit(e.ceiling);
          this.board.delete(id);
        } else {
          e.window.setLimit(windowAt(e.aimd.rate, e.ceiling));
          this.board.set(id, e.aimd.rate);
        }
      }
      if (!e.aimd && e.window.occupied(now) === 0 && !e.recent.some((t) => t > now - e.ceiling.windowMs * 1.5)) this.entries.delete(id);
    }
  }

  /** Answer times of sends still inside their chat's window: what a new owner must respect. */
  handoff(now: number): Record<string, number[]> {
    const out: Record<string, number[]> = {};
    for (const [id, e] of this.entries) {
      const times = e.recent.filter((t) => t > now - e.window.current.windowMs - 5);
      if (e.window.occupied(now) > times.length) {
        // Seeded slots (from an earlier handoff) without our own answers: keep them as held now.
        const extra = e.window.occupied(now) - times.length;
        for (let i = 0; i < extra; i++) times.push(now);
      }
      if (times.length) out[String(id)] = times;
    }
    return out;
  }

  /** Forget this limiter's chats on the process-wide board (the shard left this process). */
  close(): void {
    for (const id of this.entries.keys()) this.board.delete(id);
  }

  /** Chats whose rate is below its ceiling now (per second). */
  lowered(): Array<{ chatId: number; rate: number; ceiling: number }> {
    const out: Array<{ chatId: number; rate: number; ceiling: number }> = [];
    for (const [chatId, e] of this.entries) if (e.aimd) out.push({ chatId, rate: e.aimd.rate, ceiling: perSecond(e.ceiling) });
    return out;
  }
}
