/**
 * Splits a message longer than Telegram's limit (4096 characters after entity parsing)
 * into ordered parts, cutting at a line break if one is in the second half of the part,
 * else at a space, else anywhere (never inside a surrogate pair, an HTML tag or entity).
 * For HTML (only real, paired tags count as tags: see html-text.ts), tags open at a cut are closed at the end of the part and reopened at the
 * start of the next, so every part parses on its own.
 */
import { tokenizeTelegramHtml } from './html-text';

export const TELEGRAM_TEXT_LIMIT = 4096;

interface Token {
  /** Raw source text of the token. */
  raw: string;
  /** Characters it adds to the visible text (tags 0, entities 1). */
  visible: number;
  kind: 'text' | 'open' | 'close' | 'entity' | 'selfclose';
  tag?: string;
}

export function splitMessage(text: string, parseMode: string | null | undefined, limit = TELEGRAM_TEXT_LIMIT): string[] {
  const html = (parseMode ?? '').toLowerCase() === 'html';
  const tokens = html ? tokenizeHtml(text) : tokenizePlain(text);
  const total = tokens.reduce((s, t) => s + t.visible, 0);
  if (total <= limit) return [text];

  const parts: string[] = [];
  let i = 0;
  let reopen: Token[] = [];
  while (i < tokens.length) {
    const stack: Token[] = [...reopen];
    let visible = 0;
    let lastNewline = -1;
    let lastSpace = -1;
    let newlineStack: Token[] = [];
    let spaceStack: Token[] = [];
    let j = i;
    for (; j < tokens.length; j++) {
      const t = tokens[j]!;
      if (visible + t.visible > limit) break;
      visible += t.visible;
      if (t.kind === 'open') stack.push(t);
      else if (t.kind === 'close') popTag(stack, t.tag);
      else if (t.kind === 'text' && t.raw === '\n') {
        lastNewline = j;
        newlineStack = [...stack];
      } else if (t.kind === 'text' && /\s/.test(t.raw)) {
        lastSpace = j;
        spaceStack = [...stack];
      }
    }
    let cut = j;
    // The whitespace at a cut separates the parts; it is not sent.
    let skip = 0;
    let openAtCut = stack;
    if (j < tokens.length) {
      if (lastNewline > i && visible - visibleBetween(tokens, i, lastNewline) < limit / 2) {
        cut = lastNewline;
        skip = 1;
        openAtCut = newlineStack;
      } else if (lastSpace > i) {
        cut = lastSpace;
        skip = 1;
        openAtCut = spaceStack;
      }
    }
    if (cut === i) cut = i + 1; // a single token longer than the limit cannot happen (tokens are ≤ 2 chars)
    const body =
      reopen.map((t) => t.raw).join('') +
      tokens
        .slice(i, cut)
        .map((t) => t.raw)
        .join('');
    const closers = [...openAtCut]
      .reverse()
      .map((t) => `</${t.tag}>`)
      .join('');
    const part = body + closers;
    if (part.trim().length > 0) parts.push(part);
    reopen = openAtCut;
    i = cut + skip;
  }
  return parts;
}

function visibleBetween(tokens: Token[], from: number, to: number): number {
  let v = 0;
  for (let k = from; k < to; k++) v += tokens[k]!.visible;
  return v;
}

function popTag(stack: Token[], tag: string | undefined): void {
  for (let k = stack.length - 1; k >= 0; k--) {
    if (stack[k]!.tag === tag) {
      stack.splice(k, 1);
      return;
    }
  }
}

function tokenizePlain(text: string): Token[] {
  const out: Token[] = [];
  for (const ch of text) out.push({ raw: ch, visible: ch.length, kind: 'text' });
  return out;
}

/** Real, paired tags of Telegram's subset and its entities (see html-text.ts); everything else is text. */
function tokenizeHtml(text: string): Token[] {
  return tokenizeTelegramHtml(text).map((t): Token => {
    switch (t.kind) {
      case 'text':
        return { raw: t.raw, visible: t.raw.length, kind: 'text' };
      case 'entity':
        // Lengths are UTF-16 units: a numeric entity above U+FFFF decodes to a surrogate pair.
        return { raw: t.raw, visible: t.value.length, kind: 'entity' };
      default:
        return { raw: t.raw, visible: 0, kind: t.kind, tag: t.tag };
    }
  });
}
