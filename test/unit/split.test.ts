import assert from 'node:assert/strict';
import { TELEGRAM_TEXT_LIMIT, splitMessage } from '../../src/outbox/split';
import { formatText } from '../../sandbox/html';

/** The text Telegram would show for a part (tags removed, entities decoded), or a failure. */
function visible(part: string, parseMode: string | null): string {
  const r = formatText(part, parseMode ?? undefined);
  assert.ok(r.ok, `part does not parse: ${r.ok ? '' : r.message}\n${part.slice(0, 200)}…`);
  return r.value.text;
}

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
const BROKEN_ENTITY = /&(?!(?:amp|lt|gt|quot|#\d+|#x[0-9a-fA-F]+);)/;
const noSpace = (s: string): string => s.replace(/\s+/g, '');

function lcg(seed: number): () => number {
  let x = seed >>> 0;
  return () => (x = (Math.imul(x, 1664525) + 1013904223) >>> 0) / 2 ** 32;
}

/** Words of random lengths, with a line break now and then. */
function prose(chars: number, seed: number, lineEvery = 12): string {
  const rnd = lcg(seed);
  const words: string[] = [];
  let n = 0;
  for (let i = 0; n < chars; i++) {
    const w = 'w'.repeat(1 + Math.floor(rnd() * 9)) + String(i);
    words.push(w);
    words.push(i % lineEvery === lineEvery - 1 ? '\n' : ' ');
    n += w.length + 1;
  }
  return words.join('').trim();
}

describe('outbox/split', () => {
  it('leaves a text within the limit unchanged', () => {
    for (const t of ['hi', 'x'.repeat(TELEGRAM_TEXT_LIMIT), '😀'.repeat(2048)]) {
      const parts = splitMessage(t, null);
      assert.equal(parts.length, 1);
      assert.equal(parts[0], t);
    }
  });

  it('counts the visible text for HTML, not the markup', () => {
    const t = '<b>x</b> '.repeat(1000); // 9000 raw characters, 2000 visible
    assert.deepEqual(splitMessage(t, 'HTML'), [t]);
    // The same text as plain text is too long and is split.
    assert.ok(splitMessage(t, null).length > 1);
  });

  it('splits long plain text at line breaks; joining with "\\n" gives the text back', () => {
    const lines = Array.from({ length: 200 }, (_, i) => `line ${i} ` + 'y'.repeat(40 + (i % 17)));
    const text = lines.join('\n');
    const parts = splitMessage(text, null);
    assert.ok(parts.length >= 3, `${parts.length} parts`);
    for (const p of parts) assert.ok(p.length <= TELEGRAM_TEXT_LIMIT, `part of ${p.length}`);
    assert.equal(parts.join('\n'), text);
    // Every cut was at a line end: no line was broken.
    for (const p of parts) for (const l of p.split('\n')) assert.ok(lines.includes(l), `broken line: ${l.slice(0, 40)}`);
  });

  it('splits at spaces when there are no line breaks', () => {
    const text = prose(10_000, 1, 1_000_000);
    assert.ok(!text.includes('\n'));
    const parts = splitMessage(text, null);
    assert.ok(parts.length >= 3);
    for (const p of parts) {
      assert.ok(p.length <= TELEGRAM_TEXT_LIMIT);
      assert.ok(!p.startsWith(' ') && !p.endsWith(' '), 'the separating space is dropped');
    }
    assert.equal(parts.join(' '), text);
  });

  it('prefers a line break in the second half of a part, else a space', () => {
    const limit = 100;
    // A line break early (position 10) and spaces later: cut at the last space that fits.
    const early = 'a'.repeat(10) + '\n' + Array.from({ length: 30 }, (_, i) => `w${i}`).join(' ');
    const [first] = splitMessage(early, null, limit);
    assert.ok(first!.length > 50, `cut too early: ${JSON.stringify(first)}`);
    assert.ok(!first!.endsWith(' '));
    // A line break at 70: cut there even though spaces come later.
    const late = 'b '.repeat(35) + '\n' + 'c '.repeat(40);
    const [p1, p2] = splitMessage(late, null, limit);
    assert.equal(p1, 'b '.repeat(35));
    assert.ok(p2!.startsWith('c '));
  });

  it('cuts anywhere, but never inside a surrogate pair, when there is no whitespace', () => {
    const text = 'x' + '😀'.repeat(3000); // odd offset: a naive cut at 4096 would split a pair
    const parts = splitMessage(text, null);
    assert.ok(parts.length >= 2);
    for (const p of parts) {
      assert.ok(p.length <= TELEGRAM_TEXT_LIMIT);
      assert.ok(!LONE_SURROGATE.test(p), 'lone surrogate in a part');
    }
    assert.equal(parts.join(''), text);
  });

  it('keeps every part within the limit for random prose at several limits', () => {
    for (const [limit, seed] of [
      [50, 2],
      [333, 3],
      [4096, 4],
    ] as const) {
      const text = prose(limit * 7, seed);
      const parts = splitMessage(text, null, limit);
      for (const p of parts) assert.ok(p.length <= limit && p.length > 0, `limit ${limit}: part of ${p.length}`);
      assert.equal(noSpace(parts.join('')), noSpace(text));
    }
  });

  describe('HTML', () => {
    it('closes tags open at a cut and reopens them (with attributes) in the next part', () => {
      const body = prose(9_000, 5);
      const text = `<b>Order</b> <i>summary:</i> <a href="https://shop.example/o/1"><b>${body}</b></a> done`;
      const parts = splitMessage(text, 'HTML');
      assert.ok(parts.length >= 3, `${parts.length} parts`);
      for (const [k, p] of parts.entries()) {
        const v = visible(p, 'HTML');
        assert.ok(v.length <= TELEGRAM_TEXT_LIMIT, `part ${k}: ${v.length} visible`);
        if (k > 0 && k < parts.length - 1) {
          assert.ok(p.startsWith('<a href="https://shop.example/o/1"><b>'), `part ${k} does not reopen: ${p.slice(0, 60)}`);
          assert.ok(p.endsWith('</b></a>'), `part ${k} does not close: ${p.slice(-30)}`);
        }
      }
      assert.ok(parts[0]!.endsWith('</b></a>'));
      assert.equal(noSpace(parts.map((p) => visible(p, 'HTML')).join('')), noSpace(visible(text, 'HTML')));
    });

    it('never cuts an entity', () => {
      const unit = 'a&amp;b &lt;c&gt; &quot;q&quot; &#169;&#x1F600; ';
      const text = `<i>${unit.repeat(400)}</i>`;
      for (const limit of [37, 101, 4096]) {
        const parts = splitMessage(text, 'HTML', limit);
        assert.ok(parts.length > 1);
        for (const p of parts) {
          assert.ok(!BROKEN_ENTITY.test(p), `cut entity in ${p.slice(0, 80)}`);
          assert.ok(visible(p, 'HTML').length <= limit);
        }
        assert.equal(noSpace(parts.map((p) => visible(p, 'HTML')).join('')), noSpace(visible(text, 'HTML')));
      }
    });

    it('counts astral numeric entities as two UTF-16 units', () => {
      const text = '&#128512;'.repeat(3000); // 6000 UTF-16 units once decoded
      const parts = splitMessage(text, 'HTML');
      assert.ok(parts.length >= 2);
      for (const p of parts) assert.ok(visible(p, 'HTML').length <= TELEGRAM_TEXT_LIMIT);
      assert.equal(parts.map((p) => visible(p, 'HTML')).join(''), visible(text, 'HTML'));
    });

    it('never cuts a surrogate pair inside markup', () => {
      const text = `<b>${'😀'.repeat(2500)}</b><i>${'x😀'.repeat(1000)}</i>`;
      const parts = splitMessage(text, 'HTML', 999);
      for (const p of parts) {
        assert.ok(!LONE_SURROGATE.test(p));
        assert.ok(visible(p, 'HTML').length <= 999);
      }
      assert.equal(parts.map((p) => visible(p, 'HTML')).join(''), visible(text, 'HTML'));
    });
  });
});
