import type { SlidingWindow } from '../limits/window';
import { describeError } from '../errors';
import type { TelegramClient } from '../telegram/client';
import { TelegramApiError, TelegramTransient } from '../telegram/errors';
import type { PolicyJob } from '../telegram/policy';
import type { Job } from './chat-queues';
import { partCost, type Part } from './plan';

/**
 * The arithmetic of moving one chat forward, without the actor: what its head job needs
 * next, when the chat's window and pause let it go, and what it bids for. Pure: the
 * caller passes the clock reading and carries the step out.
 */
export type SendStep =
  /** Not planned yet (or re-planned away): plan it first. */
  | { kind: 'plan' }
  /** Every part was accepted before (progress recorded, outcome lost): it is sent. */
  | { kind: 'complete' }
  /** A send of this chat is still settling; its answer moves the chat again. */
  | { kind: 'settling' }
  /** The chat's window or pause holds the next part back until `at` (ms epoch). */
  | { kind: 'wait'; at: number }
  /** Ready now: ask the global gate for `cost` slots. */
  | { kind: 'bid'; cost: number };

/** Longest delay a Node timer takes (about 24.8 days); a longer wait is re-checked when it fires. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * What the head job of a chat needs at `now`, given the chat's window and the instant it is
 * paused until. `windowOf` is called only when a part is to be sent (it may create the
 * chat's window). An album costs its items, but never more than the whole window (or it would never go).
 */
export function nextStep(job: Job, windowOf: () => SlidingWindow, pausedUntil: number, now: number): SendStep {
  if (!job.parts) return { kind: 'plan' };
  const part = job.parts[job.done];
  if (!part) return { kind: 'complete' };
  const window = windowOf();
  const cost = chatCost(part, window.current.count);
  const at = Math.max(pausedUntil, window.availableAt(now, cost));
  if (at === Infinity) return { kind: 'settling' };
  if (at > now) return { kind: 'wait', at };
  return { kind: 'bid', cost };
}

/** The timer delay for a wait until `at`, within what setTimeout accepts. */
export function timerDelay(at: number, now: number): number {
  return Math.min(at - now, MAX_TIMER_MS);
}

/** Slots one send of `part` takes in a chat window of `windowCount` (as nextStep bid for it). */
export function chatCost(part: Part, windowCount: number): number {
  return Math.min(partCost(part), windowCount);
}

/** The Telegram calls a part is sent with. */
export type PartSender = Pick<TelegramClient, 'sendMessage' | 'sendPhoto' | 'sendMediaGroup'>;

/** Sends one part to `target`; a synchronous throw from the client becomes a rejection like any other. */
export function sendPart(client: PartSender, target: number, part: Part): Promise<unknown> {
  return new Promise<unknown>((resolve) => {
    resolve(
      part.method === 'sendMessage'
        ? client.sendMessage(target, part.text, part.parseMode)
        : part.method === 'sendPhoto'
          ? client.sendPhoto(target, part.item)
          : client.sendMediaGroup(target, part.items),
    );
  });
}

/** What a failed call is to the policy: Telegram's answer as classified, anything else a network failure (transient). */
export function asCallError(method: string, e: unknown): TelegramApiError {
  return e instanceof TelegramApiError ? e : new TelegramTransient(method, 0, describeError(e), 'network');
}

/** The job as the policy sees it when the call for its current part failed. */
export function policyJob(chatId: number, job: Job): PolicyJob {
  const part = job.parts![job.done]!;
  return {
    chatId,
    part: { method: part.method, textLength: part.method === 'sendMessage' ? part.text.length : undefined },
    plain: job.plain,
    attempts: job.attempts,
  };
}
