import { textParts, type Part } from './plan';
import { splitMessage } from './split';

/** The parts from `done` on as plain text (after a parse error); photo parts are unaffected. */
export function asPlainText(parts: readonly Part[], done: number): Part[] {
  const rest = parts.slice(done);
  if (rest.length > 0 && rest.every((p) => p.method === 'sendMessage')) {
    const first = rest[0] as Extract<Part, { method: 'sendMessage' }>;
    const plain = textParts({ text: rest.map((p) => (p as { text: string }).text).join('\n'), parseMode: first.parseMode, plainText: true });
    return [...parts.slice(0, done), ...plain];
  }
  return parts.map((p, i) => (i >= done && p.method === 'sendMessage' ? textParts({ text: p.text, parseMode: p.parseMode, plainText: true })[0]! : p));
}

/** The text part at `done` cut in two (Telegram counted it as too long); other parts unchanged. */
export function splitPart(parts: readonly Part[], done: number): Part[] {
  const part = parts[done];
  if (part?.method !== 'sendMessage') return [...parts];
  const halves = splitMessage(part.text, part.parseMode, Math.ceil(part.text.length / 2)).map((t): Part => ({
    method: 'sendMessage',
    text: t,
    parseMode: part.parseMode,
  }));
  return [...parts.slice(0, done), ...halves, ...parts.slice(done + 1)];
}
