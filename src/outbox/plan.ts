import type { PhotoItem } from '../telegram/client';
import { splitMessage } from './split';
import { htmlToPlain } from './html-text';
import type { OutboxRow } from './types';

/** One Telegram call of a notification's delivery plan. */
export type Part =
  | { method: 'sendMessage'; text: string; parseMode: string | null }
  | { method: 'sendPhoto'; item: PhotoItem }
  | { method: 'sendMediaGroup'; items: PhotoItem[] };

/** Slots a part takes in the chat and global windows: an album of n counts n. */
export function partCost(p: Part): number {
  return p.method === 'sendMediaGroup' ? p.items.length : 1;
}

/**
 * Turns a row into its ordered parts. Plain rows: the text, split at 4096 characters.
 * New-order rows get their product photos from the order planner (see orders/).
 */
export interface Planner {
  plan(row: OutboxRow): Promise<Part[]>;
}

export class TextPlanner implements Planner {
  plan(row: OutboxRow): Promise<Part[]> {
    // A throw still becomes a rejection, as from an async method.
    return new Promise((resolve) => {
      resolve(textParts(row));
    });
  }
}

export function textParts(row: Pick<OutboxRow, 'text' | 'parseMode' | 'plainText'>): Part[] {
  const text = row.plainText ? htmlToPlain(row.text, row.parseMode) : row.text;
  const mode = row.plainText ? null : row.parseMode;
  return splitMessage(text, mode).map((t) => ({ method: 'sendMessage', text: t, parseMode: mode }));
}

export { htmlToPlain } from './html-text';
