/**
 * Telegram's text formatting as the Bot API applies it before sending: parse_mode handling, the HTML parser and
 * the whitespace trimming that decides the visible text whose length Telegram limits.
 *
 * The HTML parser follows TDLib's `parse_html` (td/telegram/MessageEntity.cpp) byte for byte, so error messages
 * and UTF-8 byte offsets match what Telegram answers. Known simplifications: `<a>` links are not normalised
 * or checked (TDLib drops invalid ones, turns tg://user links into mentions), and entities are sorted by offset
 * and length only.
 */
import type { MessageEntity } from './types';

/** Text as Telegram stores it: tags removed, entities decoded, trimmed. Offsets and lengths in UTF-16 units. */
export interface FormattedText {
  text: string;
  entities: MessageEntity[];
}

/**
 * Success, or TDLib's error message (capitalised, without the "Bad Request: " prefix the Bot API adds).
 * Callers add context: "can't parse entities: …" for sendMessage, "can't parse InputMedia: …" for album items.
 */
export type FormatResult = { ok: true; value: FormattedText } | { ok: false; message: string };

/** The Bot API refuses raw text longer than this many UTF-8 bytes before parsing it. */
const MAX_RAW_TEXT_BYTES = 1 << 15;

/**
 * Applies `parse_mode` (case-insensitive; empty or "none" = plain text) and Telegram's trimming.
 * Markdown and MarkdownV2 are accepted but not parsed: their markup stays in the text, which only makes the
 * length checks stricter than Telegram's.
 */
export function formatText(raw: string, parseMode: string | undefined): FormatResult {
  if (Buffer.byteLength(raw, 'utf8') > MAX_RAW_TEXT_BYTES) return { ok: false, message: 'Text is too long' };
  const mode = (parseMode ?? '').toLowerCase();
  if (raw === '' || mode === '' || mode === 'none' || mode === 'markdown' || mode === 'markdownv2') {
    return { ok: true, value: trimFormatted({ text: raw, entities: [] }) };
  }
  if (mode !== 'html') return { ok: false, message: 'Unsupported parse_mode' };
  const parsed = parseHtml(raw);
  if (!parsed.ok) return { ok: false, message: `Can't parse entities: ${parsed.message}` };
  return { ok: true, value: trimFormatted(parsed.value) };
}

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

const AMP = 0x26;
const LT = 0x3c;
const GT = 0x3e;
const SLASH = 0x2f;
const EQ = 0x3d;
const DQUOTE = 0x22;
const SQUOTE = 0x27;
const DOT = 0x2e;
const DASH = 0x2d;
const SEMICOLON = 0x3b;
const HASH = 0x23;
const LOWER_X = 0x78;
const NAMED_ENTITIES = new Map([
  ['lt', 0x3c],
  ['gt', 0x3e],
  ['amp', 0x26],
  ['quot', 0x22],
]);

/** TDLib's is_space: NUL counts, because TDLib reads past the end of its C string as NUL. */
const isSpace = (c: number): boolean => c === 0x20 || c === 0x09 || c === 0x0d || c === 0x0a || c === 0 || c === 0x0b;
const isAlpha = (c: number): boolean => (c | 0x20) >= 0x61 && (c | 0x20) <= 0x7a;
const isDigit = (c: number): boolean => c >= 0x30 && c <= 0x39;
const isAlnum = (c: number): boolean => isAlpha(c) || isDigit(c);
const isHexDigit = (c: number): boolean => isDigit(c) || ((c | 0x20) >= 0x61 && (c | 0x20) <= 0x66);
const lowerAscii = (s: string): string => s.replace(/[A-Z]+/g, (m) => m.toLowerCase());

interface OpenTag {
  name: string;
  argument: string;
  /** `<tg-time unix="…">`: the Unix time, 0 if absent. */
  unixTime: number;
  /** UTF-16 offset of the tag's content in the result. */
  offset: number;
  /** Byte offset of the tag's content in the result, to read an `<a>`'s text as its URL. */
  resultPos: number;
}

/** Parses Telegram HTML into text and entities, or returns TDLib's error message. */
export function parseHtml(html: string): FormatResult {
  const src = Buffer.from(html, 'utf8');
  const at = (i: number): number => src[i] ?? 0;
  const out = Buffer.allocUnsafe(src.length); // decoding never lengthens the text
  let outLen = 0;
  let utf16 = 0;
  let decodedSurrogate = false;
  const open: OpenTag[] = [];
  const entities: MessageEntity[] = [];
  const fail = (message: string): FormatResult => ({ ok: false, message });

  for (let i = 0; i < src.length; i++) {
    const c = at(i);
    if (c === AMP) {
      const decoded = decodeEntity(src, i);
      if (decoded !== undefined) {
        i = decoded.end - 1;
        utf16 += decoded.code > 0xffff ? 2 : 1;
        decodedSurrogate ||= decoded.code >= 0xd800 && decoded.code <= 0xdfff;
        outLen += writeCodePoint(out, outLen, decoded.code);
        continue;
      }
    }
    if (c !== LT) {
      if ((c & 0xc0) !== 0x80) utf16 += c >= 0xf0 ? 2 : 1;
      out[outLen++] = c;
      continue;
    }

    const begin = i++;
    if (at(i) !== SLASH) {
      while (!isSpace(at(i)) && at(i) !== GT) i++;
      if (at(i) === 0) return fail(`Unclosed start tag at byte offset ${begin}`);
      const tag = lowerAscii(src.toString('utf8', begin + 1, i));
      if (!SUPPORTED_TAGS.has(tag)) return fail(`Unsupported start tag "${tag}" at byte offset ${begin}`);

      let argument = '';
      let unixTime = 0;
      while (at(i) !== GT) {
        while (at(i) !== 0 && isSpace(at(i))) i++;
        if (at(i) === GT) break;
        const nameBegin = i;
        while (!isSpace(at(i)) && ![EQ, GT, SLASH, DQUOTE, SQUOTE].includes(at(i))) i++;
        const name = src.toString('utf8', nameBegin, i);
        if (name === '') return fail(`Empty attribute name in the tag "${tag}" at byte offset ${begin}`);
        while (at(i) !== 0 && isSpace(at(i))) i++;
        if (at(i) !== EQ) {
          if (at(i) === 0) return fail(`Unclosed start tag "${tag}" at byte offset ${begin}`);
          if (tag === 'blockquote' && name === 'expandable') argument = '1';
          continue;
        }
        i++;
        while (at(i) !== 0 && isSpace(at(i))) i++;
        if (at(i) === 0) return fail(`Unclosed start tag "${tag}" at byte offset ${begin}`);

        let value: string;
        if (at(i) !== SQUOTE && at(i) !== DQUOTE) {
          // An unquoted name token: letters, digits, periods, hyphens; case-insensitive.
          const tokenBegin = i;
          while (isAlnum(at(i)) || at(i) === DOT || at(i) === DASH) i++;
          value = lowerAscii(src.toString('utf8', tokenBegin, i));
          if (!isSpace(at(i)) && at(i) !== GT) return fail(`Unexpected end of name token at byte offset ${tokenBegin}`);
        } else {
          const quote = at(i++);
          const bytes: number[] = [];
          while (at(i) !== quote && at(i) !== 0) {
            const decoded = at(i) === AMP ? decodeEntity(src, i) : undefined;
            if (decoded !== undefined) {
              const buf = Buffer.allocUnsafe(4);
              bytes.push(...buf.subarray(0, writeCodePoint(buf, 0, decoded.code)));
              i = decoded.end;
              continue;
            }
            bytes.push(at(i++));
          }
          if (at(i) === quote) i++;
          value = Buffer.from(bytes).toString('utf8');
        }
        if (at(i) === 0) return fail(`Unclosed start tag at byte offset ${begin}`);

        if (tag === 'a' && name === 'href') argument = value;
        else if (tag === 'code' && name === 'class' && value.startsWith('language-')) argument = value.slice(9);
        else if (tag === 'span' && name === 'class' && value.startsWith('tg-')) argument = value.slice(3);
        else if (tag === 'tg-emoji' && name === 'emoji-id') argument = value;
        else if (tag === 'blockquote' && name === 'expandable') argument = '1';
        else if (tag === 'tg-time' && name === 'unix') unixTime = toInt32(value);
        else if (tag === 'tg-time' && name === 'format') argument = value;
      }
      if (tag === 'span' && argument !== 'spoiler') {
        return fail(`Tag "span" must have class "tg-spoiler" at byte offset ${begin}`);
      }
      open.push({ name: tag, argument, unixTime, offset: utf16, resultPos: outLen });
      continue;
    }

    // An end tag; `</>` closes whatever is open.
    const top = open[open.length - 1];
    if (top === undefined) return fail(`Unexpected end tag at byte offset ${begin}`);
    while (!isSpace(at(i)) && at(i) !== GT) i++;
    const endName = lowerAscii(src.toString('utf8', begin + 2, i));
    while (isSpace(at(i)) && at(i) !== 0) i++;
    if (at(i) !== GT) return fail(`Unclosed end tag at byte offset ${begin}`);
    if (endName !== '' && endName !== top.name) {
      return fail(`Unmatched end tag at byte offset ${begin}, expected "</${top.name}>", found "</${endName}>"`);
    }
    if (utf16 > top.offset) {
      const error = closeEntity(entities, top, utf16 - top.offset, out.toString('utf8', top.resultPos, outLen));
      if (error !== undefined) return fail(error);
    }
    open.pop();
  }

  const unclosed = open[open.length - 1];
  if (unclosed !== undefined) return fail(`Can't find end tag corresponding to start tag "${unclosed.name}"`);
  if (decodedSurrogate) {
    return fail('Text contains invalid Unicode characters after decoding HTML entities, check for unmatched surrogate code units');
  }
  for (const entity of entities) {
    if (entity.type === 'code') delete entity.language; // a language counts only on <pre><code>
  }
  entities.sort((a, b) => a.offset - b.offset || b.length - a.length);
  return { ok: true, value: { text: out.toString('utf8', 0, outLen), entities } };
}

/** Adds the entity for a closed, non-empty tag; returns TDLib's message for a bad emoji id or date format. */
function closeEntity(entities: MessageEntity[], tag: OpenTag, length: number, content: string): string | undefined {
  const { offset } = tag;
  const last = entities[entities.length - 1];
  const sameSpan = last !== undefined && last.offset === offset && last.length === length ? last : undefined;
  switch (tag.name) {
    case 'b':
    case 'strong':
      entities.push({ type: 'bold', offset, length });
      return undefined;
    case 'i':
    case 'em':
      entities.push({ type: 'italic', offset, length });
      return undefined;
    case 'u':
    case 'ins':
      entities.push({ type: 'underline', offset, length });
      return undefined;
    case 's':
    case 'strike':
    case 'del':
      entities.push({ type: 'strikethrough', offset, length });
      return undefined;
    case 'tg-spoiler':
    case 'span':
      entities.push({ type: 'spoiler', offset, length });
      return undefined;
    case 'tg-emoji':
      if (!isNonZeroInt64(tag.argument)) return 'Invalid custom emoji identifier specified';
      entities.push({ type: 'custom_emoji', offset, length, custom_emoji_id: tag.argument });
      return undefined;
    case 'tg-time': {
      const format = dateTimeFormat(tag.argument);
      if (format === undefined) return 'Invalid date format used';
      if (tag.unixTime > 0) {
        entities.push({ type: 'date_time', offset, length, unix_time: tag.unixTime, date_time_format: format });
      }
      return undefined;
    }
    case 'a': {
      const url = tag.argument !== '' ? tag.argument : content;
      if (url !== '') entities.push({ type: 'text_link', offset, length, url });
      return undefined;
    }
    case 'pre':
      if (sameSpan?.type === 'code' && sameSpan.language !== undefined) sameSpan.type = 'pre';
      else entities.push({ type: 'pre', offset, length });
      return undefined;
    case 'code':
      if (sameSpan?.type === 'pre' && tag.argument !== '') sameSpan.language = tag.argument;
      else if (tag.argument !== '') entities.push({ type: 'code', offset, length, language: tag.argument });
      else entities.push({ type: 'code', offset, length });
      return undefined;
    case 'blockquote':
      entities.push({ type: tag.argument !== '' ? 'expandable_blockquote' : 'blockquote', offset, length });
      return undefined;
    default:
      return undefined;
  }
}

/** TDLib's to_integer<int32>: an optional '-' and leading digits; anything unreadable or out of range is 0. */
function toInt32(s: string): number {
  const n = Number(/^-?\d*/.exec(s)?.[0] ?? '');
  return Number.isInteger(n) && n >= -(2 ** 31) && n < 2 ** 31 ? n : 0;
}

/**
 * TDLib's date format check ("r" alone, or any of t T d D w W), answered as the Bot API spells the format back:
 * "r", or w, then d/D, then t/T.
 */
function dateTimeFormat(format: string): string | undefined {
  if (format === 'r' || format === 'R') return 'r';
  if (!/^[tTdDwW]*$/.test(format)) return undefined;
  const date = format.includes('D') ? 'D' : format.includes('d') ? 'd' : '';
  const time = format.includes('T') ? 'T' : format.includes('t') ? 't' : '';
  return `${/[wW]/.test(format) ? 'w' : ''}${date}${time}`;
}

/** TDLib's to_integer_safe<int64> round trip: canonical decimal, in range, and not 0. */
function isNonZeroInt64(s: string): boolean {
  if (!/^-?[1-9][0-9]*$/.test(s)) return false;
  const n = BigInt(s);
  return n >= -(1n << 63n) && n < 1n << 63n;
}

/**
 * TDLib's decode_html_entity: &lt; &gt; &amp; &quot; and decimal/hex numeric references, each with or without the
 * trailing ';'. Anything else (&nbsp;, a bare &) is not an error: it stays in the text literally.
 */
function decodeEntity(src: Buffer, pos: number): { code: number; end: number } | undefined {
  const at = (i: number): number => src[i] ?? 0;
  let end = pos + 1;
  let code = 0;
  if (at(pos + 1) === HASH) {
    end++;
    if (at(pos + 2) === LOWER_X) {
      end++;
      while (isHexDigit(at(end))) code = code * 16 + parseInt(String.fromCharCode(at(end++)), 16);
    } else {
      while (isDigit(at(end))) code = code * 10 + (at(end++) - 0x30);
    }
    if (code === 0 || code >= 0x10ffff || end - pos >= 10) return undefined;
  } else {
    while (isAlpha(at(end))) end++;
    code = NAMED_ENTITIES.get(src.toString('latin1', pos + 1, end)) ?? 0;
    if (code === 0) return undefined;
  }
  return { code, end: at(end) === SEMICOLON ? end + 1 : end };
}

/** Writes a code point as UTF-8 (surrogates too, like TDLib, which then rejects the text); returns bytes written. */
function writeCodePoint(buf: Buffer, pos: number, code: number): number {
  if (code < 0x80) {
    buf[pos] = code;
    return 1;
  }
  if (code < 0x800) {
    buf[pos] = 0xc0 | (code >> 6);
    buf[pos + 1] = 0x80 | (code & 0x3f);
    return 2;
  }
  if (code < 0x10000) {
    buf[pos] = 0xe0 | (code >> 12);
    buf[pos + 1] = 0x80 | ((code >> 6) & 0x3f);
    buf[pos + 2] = 0x80 | (code & 0x3f);
    return 3;
  }
  buf[pos] = 0xf0 | (code >> 18);
  buf[pos + 1] = 0x80 | ((code >> 12) & 0x3f);
  buf[pos + 2] = 0x80 | ((code >> 6) & 0x3f);
  buf[pos + 3] = 0x80 | (code & 0x3f);
  return 4;
}

/**
 * TDLib's fix_formatted_text trimming: trailing spaces and newlines go, entities are cut to the new end; leading
 * spaces and newlines go up to the first entity. Only ' ' and '\n' count as whitespace here, as in TDLib.
 */
export function trimFormatted({ text, entities }: FormattedText): FormattedText {
  let end = text.length;
  while (end > 0 && (text[end - 1] === ' ' || text[end - 1] === '\n')) end--;
  const kept = entities.filter((e) => e.offset < end).map((e) => (e.offset + e.length > end ? { ...e, length: end - e.offset } : e));
  const firstEntity = kept[0]?.offset ?? end;
  let start = 0;
  while (start < firstEntity && (text[start] === ' ' || text[start] === '\n')) start++;
  return {
    text: text.slice(start, end),
    entities: start === 0 ? kept : kept.map((e) => ({ ...e, offset: e.offset - start })),
  };
}
