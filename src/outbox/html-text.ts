/**
 * Telegram HTML, read the way the plain-text fallback and the splitter need it: which
 * `<…>` are real tags, which `&…;` are entities, and what is just text.
 *
 * A tag is real only when Telegram's parser would take it as a tag of its subset
 * (`b strong i em u ins s strike del span(class="tg-spoiler") tg-spoiler a tg-emoji
 * tg-time code pre blockquote`) written the way people write tags: attributes as
 * `name="value"` (or `name=value`), the only bare attribute being blockquote's
 * `expandable`. So `<b>`, `</b>`, `</>` and `<a href="…">` are tags, while in
 * `if a<b and c>d then` the `<b and c>` is text — Telegram would read it as a bold tag
 * with two empty attributes, which no author means. Everything else — `a<b`, `c>d`,
 * `<div>`, a bare `&` — is text and stays as typed. Entities are the ones Telegram
 * decodes (`&lt; &gt; &amp; &quot;`, `&#NNN;`, `&#xHH;`), with their `;`.
 */

const SUPPORTED_TAGS = new Set([
  'a',
  'b',
  'strong',
  'i',
  'em',
  's',
  'strike',
  'del',
  'u',
  'ins',
  'tg-spoiler',
  'tg-emoji',
  'tg-time',
  'span',
  'pre',
  'code',
  'blockquote',
]);
const NAMED: Record<string, string> = { lt: '<', gt: '>', amp: '&', quot: '"' };

export type HtmlToken =
  /** Visible text, as typed (one code point, or a run of ordinary characters). */
  | { kind: 'text'; raw: string }
  /** An entity; `value` is what it shows. */
  | { kind: 'entity'; raw: string; value: string }
  /** A real tag; `tag` is its lower-case name ('' for `</>`). */
  | { kind: 'open' | 'close'; raw: string; tag: string };

/** Longest tag name of the subset (`blockquote`, `tg-spoiler`). */
const MAX_TAG_NAME = 10;

const isSpace = (c: string | undefined): boolean => c === ' ' || c === '\t' || c === '\r' || c === '\n' || c === '\v';
const isNameTokenChar = (c: string | undefined): boolean => c !== undefined && /[A-Za-z0-9.-]/.test(c);

/** The start tag at `i` in Telegram's syntax, or undefined when Telegram would not read one there. */
function readStartTag(s: string, i: number): { end: number; tag: string } | undefined {
  let j = i + 1;
  // Scans stay short so that no text costs more than linear time (every '<' starts one).
  while (j < s.length && j - i <= MAX_TAG_NAME + 1 && !isSpace(s[j]) && s[j] !== '>') j++;
  if (j >= s.length) return undefined;
  const tag = s.slice(i + 1, j).toLowerCase();
  if (!SUPPORTED_TAGS.has(tag)) return undefined;
  let spanClass = '';
  while (s[j] !== '>') {
    while (j < s.length && isSpace(s[j])) j++;
    if (j >= s.length) return undefined;
    if (s[j] === '>') break;
    const nameBegin = j;
    while (j < s.length && !isSpace(s[j]) && !'=>/"\'<'.includes(s[j]!)) j++;
    if (j === nameBegin || s[j] === '<') return undefined;
    const name = s.slice(nameBegin, j);
    while (j < s.length && isSpace(s[j])) j++;
    if (j >= s.length) return undefined;
    if (s[j] !== '=') {
      // A bare attribute: `<b and c>` is prose, not a tag.
      if (tag === 'blockquote' && name.toLowerCase() === 'expandable') continue;
      return undefined;
    }
    j++;
    while (j < s.length && isSpace(s[j])) j++;
    if (j >= s.length) return undefined;
    let value: string;
    if (s[j] !== '"' && s[j] !== "'") {
      const b = j;
      while (isNameTokenChar(s[j])) j++;
      if (j >= s.length || (!isSpace(s[j]) && s[j] !== '>')) return undefined;
      value = s.slice(b, j).toLowerCase();
    } else {
      const quote = s[j]!;
      const close = s.indexOf(quote, j + 1);
      if (close < 0) return undefined;
      value = s.slice(j + 1, close);
      j = close + 1;
      if (j >= s.length) return undefined;
    }
    if (tag === 'span' && name === 'class') spanClass = value;
  }
  if (tag === 'span' && spanClass !== 'tg-spoiler') return undefined;
  return { end: j + 1, tag };
}

/** The end tag at `i` (`</name>` with optional spaces before `>`, or `</>`), or undefined. */
function readEndTag(s: string, i: number): { end: number; tag: string } | undefined {
  let j = i + 2;
  while (j < s.length && j - i <= MAX_TAG_NAME + 2 && !isSpace(s[j]) && s[j] !== '>') j++;
  const tag = s.slice(i + 2, j).toLowerCase();
  while (j < s.length && isSpace(s[j])) j++;
  if (s[j] !== '>') return undefined;
  if (tag !== '' && !SUPPORTED_TAGS.has(tag)) return undefined;
  return { end: j + 1, tag };
}

/** The entity at `i` (with its `;`), or undefined. */
function readEntity(s: string, i: number): { end: number; value: string } | undefined {
  const m = /^&(?:([a-z]+)|#([0-9]{1,7})|#x([0-9a-fA-F]{1,6}));/.exec(s.slice(i, i + 12));
  if (!m) return undefined;
  if (m[1] !== undefined) {
    const v = NAMED[m[1]];
    return v === undefined ? undefined : { end: i + m[0].length, value: v };
  }
  const code = m[2] !== undefined ? Number(m[2]) : parseInt(m[3]!, 16);
  if (code === 0 || code >= 0x10ffff || (code >= 0xd800 && code <= 0xdfff)) return undefined;
  return { end: i + m[0].length, value: String.fromCodePoint(code) };
}

/** Tokens of `s` as Telegram HTML: real tags (see the module comment) and entities; every other character is text, one code point per token. */
export function tokenizeTelegramHtml(s: string): HtmlToken[] {
  const out: HtmlToken[] = [];
  let i = 0;
  while (i < s.length) {
    const c = s[i]!;
    if (c === '<') {
      const isEnd = s[i + 1] === '/';
      const t = isEnd ? readEndTag(s, i) : readStartTag(s, i);
      if (t) {
        out.push({ kind: isEnd ? 'close' : 'open', raw: s.slice(i, t.end), tag: t.tag });
        i = t.end;
        continue;
      }
    } else if (c === '&') {
      const e = readEntity(s, i);
      if (e) {
        out.push({ kind: 'entity', raw: s.slice(i, e.end), value: e.value });
        i = e.end;
        continue;
      }
    }
    const cp = s.codePointAt(i)!;
    const ch = String.fromCodePoint(cp);
    out.push({ kind: 'text', raw: ch });
    i += ch.length;
  }
  return out;
}

/**
 * The readable text of a message for the plain-text fallback after a parse error: real
 * tags removed, entities decoded, every other character kept (`if a<b and c>d then`
 * stays exactly so). Texts not in HTML mode are returned unchanged.
 */
export function htmlToPlain(text: string, parseMode: string | null): string {
  if ((parseMode ?? '').toLowerCase() !== 'html') return text;
  let out = '';
  for (const t of tokenizeTelegramHtml(text)) {
    if (t.kind === 'text') out += t.raw;
    else if (t.kind === 'entity') out += t.value;
  }
  return out;
}
