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
 * `learned` (exact and blind): what the chats' controllers had learned when a record was last written for the
 * shard; after a crash the last record may be older than the dead owner's tenure, but a limit found is still
 * the best guess (it only lowers a rate, and is probed above once its memory lapses).
 */
export type WindowSeed =
  | { kind: 'exact'; at: number; chats: Record<string, number[]>; complete: boolean; learned?: Record<string, LearnedLimit> }
  | { kind: 'blind'; at: number; learned?: Record<string, LearnedLimit> }
  | { kind: 'free' };

/**
 * What a chat's controller learned from 429s, handed to a shard's next owner so that it does not pay another
 * 429 per stricter chat to learn it again (a group at 10/min told 20/min: one 429 with a `retry_after` of most
 * of a minute per handoff before). Rates per second, times ms epoch. A reader clamps every field to its own
 * configuration (`ChatLimiter`): a record is data from another process, possibly of another version.
 */
export interface LearnedLimit {
  /** The chat's current rate (per second), below its ceiling. */
  rate: number;
  /** The lowest rate refused lately (the remembered limit, CUBIC's W_max); absent when none is remembered. */
  refused?: number;
  /** When the last decrease happened: the remembered limit is kept until `decreasedAt + memoryMs`. */
  decreasedAt: number;
  /** How long a refused rate is remembered after a decrease (ms; doubles while probes find the same limit). */
  memoryMs: number;
  /** The limit the last 429 pointed at (per second), kept after the memory lapsed (is a probe's 429 the same limit?). */
  known?: number;
}

/** What a sender hands to a shard's next owner: its chats' windows and what their controllers learned. */
export interface ChatHandoff {
  /** chat id → answer times of sends still inside the chat's window (ms epoch). */
  chats: Record<string, number[]>;
  /** chat id → learned state, for chats whose rate a 429 lowered. */
  learned: Record<string, LearnedLimit>;
}

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
  /** How long a rejected rate is remembered before growth probes above it again (ms); doubles while probes find the same limit. */
  memoryMs: number;
  /** The limit the last 429 pointed at (per second), kept after the AIMD forgot it: was a probe's 429 at the same level? */
  known: number | undefined;
}

/** A probe's 429 within this factor of the known limit found the same limit (the server did not relax or tighten). */
const SAME_LIMIT = 1.25;
/** The memory of a rejected rate grows to at most this many times its base (16: a group at 10/min probes every 2.7 h). */
const MAX_MEMORY_FACTOR = 16;
/** A rejected rate the window does not explain: return to this fraction of it, not to it (it was refused). */
const BELOW_REJECTED = 0.9;

/** The window a chat is held to: groups per minute, private chats per second. */
export function ceilingOf(s: ChatLimitSettings, chatId: number): WindowLimit {
  // Negative ids are groups (outbox/shard.ts isGroupChat; not imported: limits stay below outbox).
  return chatId < 0 ? s.groupLimit : s.chatLimit;
}

const perSecond = (l: WindowLimit) => (l.count / l.windowMs) * 1000;

/** A clean interval of a chat's AIMD: at least 10 s, at least its window (ms). */
const cleanMsOf = (ceiling: WindowLimit) => Math.max(10_000, ceiling.windowMs);

/** How long a rejected rate is first remembered: 10 clean intervals, at least a minute (ms). */
const baseMemoryMs = (ceiling: WindowLimit) => Math.max(60_000, 10 * cleanMsOf(ceiling));

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
  ) {
    // Chats with a learned limit get their entry now, not at their first send: shown as lowered at once,
    // and handed on again if the shard moves before this owner sends to them.
    const learned = seed.kind === 'free' ? undefined : seed.learned;
    for (const id of Object.keys(learned ?? {})) {
      const chatId = Number(id);
      if (Number.isSafeInteger(chatId) && chatId !== 0) this.entry(chatId);
    }
  }

  /**
   * A chat's limit is stable and each of its 429s costs up to a whole window (a minute for a group): settle
   * exactly at what the server was seen to accept, and remember the rejected rate for `memoryMs` (at first
   * 10 clean intervals; see `throttled` for how it grows), like CUBIC's W_max: back to just below it quickly,
   * then only a slow probe above it until the memory lapses.
   */
  private options(e: Pick<Entry, 'ceiling' | 'memoryMs'>): AimdOptions {
    return aimdOptions(perSecond(e.ceiling), {
      cleanMs: cleanMsOf(e.ceiling),
      holdMs: e.ceiling.windowMs,
      decrease: 0.8,
      fastStep: 0.1,
      settle: 1,
      forgetMs: e.memoryMs,
    });
  }

  private entry(chatId: number): Entry {
    let e = this.entries.get(chatId);
    if (!e) {
      const ceiling = ceilingOf(this.settings, chatId);
      e = { window: new SlidingWindow(ceiling), ceiling, aimd: undefined, recent: [], memoryMs: baseMemoryMs(ceiling), known: undefined };
      const seed = this.seed;
      this.entries.set(chatId, e);
      // The learned rate first: a window it lengthens (a chat at 1 per 2 s) holds the handed-over sends longer.
      if (seed.kind !== 'free') {
        const l = seed.learned?.[String(chatId)];
        if (l) this.learn(chatId, e, l, seed.at);
      }
      if (seed.kind === 'blind') e.window.seed(seed.at, ceiling.count);
      else if (seed.kind === 'exact') {
        const times = seed.chats[String(chatId)];
        if (times) {
          for (const t of times) e.window.seed(t);
          // The server counted them: a 429 here reads what it accepted in the window from them too (else it
          // sees nothing, lowers by a step, and a group moved to a new owner paid three 429s instead of one).
          e.recent = [...times].sort((x, y) => x - y).slice(-(ceiling.count + 1));
        } else if (!seed.complete) e.window.seed(seed.at, ceiling.count);
      }
    }
    return e;
  }

  /**
   * Takes over what the previous owner learned about a chat, clamped to this process's configuration: the
   * rate to [floor, ceiling] (at the ceiling there is nothing to take over), the memory to the range this
   * controller uses, times to no later than the record (`at`). A new clean interval starts at `at`.
   */
  private learn(chatId: number, e: Entry, l: LearnedLimit, at: number): void {
    const o = this.options(e);
    const valid = (x: unknown): x is number => typeof x === 'number' && Number.isFinite(x) && x > 0;
    if (!valid(l.rate) || l.rate >= o.ceiling || !valid(l.memoryMs) || typeof l.decreasedAt !== 'number' || !Number.isFinite(l.decreasedAt)) return;
    e.memoryMs = Math.min(Math.max(l.memoryMs, baseMemoryMs(e.ceiling)), baseMemoryMs(e.ceiling) * MAX_MEMORY_FACTOR);
    e.known = valid(l.known) ? Math.min(l.known, o.ceiling) : undefined;
    const decreasedAt = Math.min(l.decreasedAt, at);
    e.aimd = {
      rate: Math.max(o.floor, l.rate),
      lastBad: valid(l.refused) ? Math.min(l.refused, o.ceiling) : Infinity,
      lastDecreaseAt: decreasedAt,
      cleanSince: at,
    };
    this.apply(chatId, e);
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

  /**
   * A 429 in this chat's scope: lower its rate to what the server was seen to accept in the chat's window,
   * when that explains the refusal (a group told 20/min that got 10 in its minute), else to just under the
   * rate that was refused (a server window longer than ours: 1 per 2 s for a chat told 1/s). A probe's 429
   * at the limit already known doubles how long it is remembered: probes grow rarer while the server's limit
   * stays put, and each one costs a 429.
   *
   * `sentAt`: when the refused request went out. The server counted the sends that reached it within a window
   * before the refused one did, and each of those was answered after it reached the server, so every one is
   * answered after `sentAt` − window. Counting back from `now` instead missed the oldest whenever the 429 was
   * processed late (a loaded process, a slow answer): a group whose 10 sends trickled out over the window while
   * the process waited for its first budget grant was lowered to 9 per window, 10 % under the server's rate.
   */
  throttled(chatId: number, now: number, sentAt = now): number {
    const e = this.entry(chatId);
    const cur = e.aimd ?? aimdStart(this.options(e), now);
    const inWindow = e.recent.filter((t) => t > Math.min(sentAt, now) - e.ceiling.windowMs && t <= now).length;
    const seen = inWindow > 0 ? (inWindow / e.ceiling.windowMs) * 1000 : Infinity;
    // What the server accepts: what it took in the window when that is below the refused rate, else a bit
    // under the refused rate (settle = 1 would otherwise lead growth straight back to a rate refused before).
    const accepted = Math.min(seen, cur.rate * BELOW_REJECTED);
    const hold = now - cur.lastDecreaseAt < e.ceiling.windowMs;
    if (!hold) {
      const probe = e.aimd !== undefined && now - cur.lastDecreaseAt >= e.memoryMs;
      if (probe && e.known !== undefined && accepted <= e.known * SAME_LIMIT && accepted >= e.known / SAME_LIMIT)
        e.memoryMs = Math.min(e.memoryMs * 2, baseMemoryMs(e.ceiling) * MAX_MEMORY_FACTOR);
      else if (probe) e.memoryMs = baseMemoryMs(e.ceiling);
    }
    e.aimd = aimdThrottled(cur, this.options(e), now, accepted);
    if (!hold) e.known = e.aimd.lastBad;
    this.apply(chatId, e);
    return e.aimd.rate;
  }

  /** Holds the chat to its current rate, and shows it on the board as the rate its window enforces. */
  private apply(chatId: number, e: Entry): void {
    const w = e.aimd ? windowAt(e.aimd.rate, e.ceiling) : e.ceiling;
    e.window.setLimit(w);
    if (e.aimd) this.board.set(chatId, perSecond(w));
    else this.board.delete(chatId);
  }

  /** Periodic: raise lowered rates after clean intervals; forget idle chats at their ceiling. */
  tick(now: number): void {
    for (const [id, e] of this.entries) {
      if (e.aimd) {
        const o = this.options(e);
        const busy = e.recent.some((t) => t > now - o.cleanMs);
        e.aimd = aimdTick(e.aimd, o, now, busy);
        if (e.aimd.rate >= o.ceiling) {
          // Back at the ceiling: the server relaxed. A later 429 starts learning afresh.
          e.aimd = undefined;
          e.memoryMs = baseMemoryMs(e.ceiling);
          e.known = undefined;
        }
        this.apply(id, e);
      }
      if (!e.aimd && e.window.occupied(now) === 0 && !e.recent.some((t) => t > now - e.ceiling.windowMs * 1.5)) this.entries.delete(id);
    }
  }

  /**
   * What a new owner must respect and may reuse: answer times of sends still inside their chat's window, and
   * the learned state of chats whose rate a 429 lowered.
   */
  handoff(now: number): ChatHandoff {
    const out: Record<string, number[]> = {};
    const learned: Record<string, LearnedLimit> = {};
    for (const [id, e] of this.entries) {
      if (e.aimd && Number.isFinite(e.aimd.lastDecreaseAt)) {
        const a = e.aimd;
        learned[String(id)] = {
          rate: a.rate,
          ...(Number.isFinite(a.lastBad) ? { refused: a.lastBad } : {}),
          decreasedAt: a.lastDecreaseAt,
          memoryMs: e.memoryMs,
          ...(e.known !== undefined && Number.isFinite(e.known) ? { known: e.known } : {}),
        };
      }
      const times = e.recent.filter((t) => t > now - e.window.current.windowMs - 5);
      if (e.window.occupied(now) > times.length) {
        // Seeded slots (from an earlier handoff) without our own answers: keep them as held now.
        const extra = e.window.occupied(now) - times.length;
        for (let i = 0; i < extra; i++) times.push(now);
      }
      if (times.length) out[String(id)] = times;
    }
    return { chats: out, learned };
  }

  /** Forget this limiter's chats on the process-wide board (the shard left this process). */
  close(): void {
    for (const id of this.entries.keys()) this.board.delete(id);
  }

  /** Chats whose rate is below its ceiling now (per second: the rate their window enforces). */
  lowered(): Array<{ chatId: number; rate: number; ceiling: number }> {
    const out: Array<{ chatId: number; rate: number; ceiling: number }> = [];
    for (const [chatId, e] of this.entries) if (e.aimd) out.push({ chatId, rate: perSecond(e.window.current), ceiling: perSecond(e.ceiling) });
    return out;
  }
}
