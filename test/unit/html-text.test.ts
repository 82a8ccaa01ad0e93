import assert from 'node:assert/strict';
import { htmlToPlain, tokenizeTelegramHtml } from '../../src/outbox/html-text';
import { splitMessage } from '../../src/outbox/split';
import { textParts } from '../../src/outbox/plan';
import { formatText } from '../../sandbox/html';

describe('outbox/html-text: the plain-text fallback keeps every visible character', () => {
  const cases: Array<[string, string]> = [
    ['if a<b and c>d then', 'if a<b and c>d then'],
    ['x < y > z & w', 'x < y > z & w'],
    ['<b>bold</b> and <i>it</i>', 'bold and it'],
    ['<b>5 &lt; 6 &amp;&amp; 7 &gt; 2</b> &quot;q&quot; &#65;&#x42;', '5 < 6 && 7 > 2 "q" AB'],
    ['a <div>b</div> c', 'a <div>b</div> c'],
    ['AT&T &nbsp; &amp &lt', 'AT&T &nbsp; &amp &lt'],
    ['<b>bold &amp; unclosed', 'bold & unclosed'],
    ['<i am here> and <b class="x">real</b>', '<i am here> and real'],
    ['<a href="https://x.test/?a=1&amp;b=2">link</a>', 'link'],
    ['<span class="tg-spoiler">s</span> <span class="x">t</span>', 's <span class="x">t'],
    ['<b>x</>y', 'xy'],
    ['<b><i>x</b></i>', 'x'],
    ['a </ b> c </div>', 'a </ b> c </div>'],
    ['1 <3 you <33', '1 <3 you <33'],
    ['emoji 😀 <b>ok</b>', 'emoji 😀 ok'],
    ['<pre><code class="language-ts">a<b</code></pre>', 'a<b'],
    ['<blockquote expandable>q</blockquote>', 'q'],
  ];
  for (const [html, plain] of cases) {
    it(`${JSON.stringify(html)} → ${JSON.stringify(plain)}`, () => assert.equal(htmlToPlain(html, 'HTML'), plain));
  }

  it('leaves non-HTML texts untouched', () => {
    assert.equal(htmlToPlain('<b>x</b> &amp;', null), '<b>x</b> &amp;');
    assert.equal(htmlToPlain('<b>x</b>', 'MarkdownV2'), '<b>x</b>');
  });

  it("agrees with Telegram's parser on valid HTML (the sandbox follows TDLib)", () => {
    for (const html of ['<b>bold</b> &lt;x&gt;', '<a href="u">l</a> &#128512; <code>c&amp;d</code>', '<tg-spoiler>s</tg-spoiler> <u>u</u> <s>s</s>']) {
      const r = formatText(html, 'HTML');
      assert.ok(r.ok);
      assert.equal(htmlToPlain(html, 'HTML'), r.value.text);
    }
  });

  it('the fallback of a text Telegram refuses keeps its characters (the sandbox refuses it in HTML mode)', () => {
    const t = 'if a<b and c>d then';
    assert.equal(formatText(t, 'HTML').ok, false);
    const parts = textParts({ text: t, parseMode: 'HTML', plainText: true });
    assert.deepEqual(parts, [{ method: 'sendMessage', text: t, parseMode: null }]);
  });

  it('the splitter does not close or reopen tags that are not real', () => {
    const t = `if a<b and c>d then ${'w '.repeat(3000)}`;
    const parts = splitMessage(t, 'HTML');
    assert.ok(parts.length >= 2);
    assert.ok(!parts.join('').includes('</b>'), 'no synthesized </b> for a stray <b');
    // Plain fallback of the parts, joined, still holds the original characters.
    assert.ok(htmlToPlain(parts[0]!, 'HTML').startsWith('if a<b and c>d then'));
  });

  it('tokens reproduce the input exactly', () => {
    for (const [html] of cases)
      assert.equal(
        tokenizeTelegramHtml(html)
          .map((t) => t.raw)
          .join(''),
        html,
      );
  });
});

describe('outbox/html-text: linear time on hostile input', () => {
  // Every '<' starts a tag scan: scans are bounded so that no 64 KiB text costs more than linear time.
  const hostile: Array<[string, string]> = [
    ['many <', '<'.repeat(65_536)],
    ['many < then >', `${'<'.repeat(65_535)}>`],
    ['names', '<bbbbbbbbbbbbbbbbbbbb'.repeat(3_000)],
    ['attribute names', `${'<b a'.repeat(16_000)}=1>`],
    ['open quotes', '<a x="'.repeat(10_900)],
    ['mixed quotes', `<a x="${"<a x='".repeat(10_900)}`],
    ['end tags', '</'.repeat(32_768)],
    ['end tags with spaces', '</ '.repeat(21_845)],
    ['entities', '&#1'.repeat(21_845)],
  ];
  for (const [name, text] of hostile) {
    it(`${name} (${text.length} chars) in well under a second; characters kept`, () => {
      const t0 = process.hrtime.bigint();
      const plain = htmlToPlain(text, 'HTML');
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      assert.ok(ms < 250, `${ms} ms`);
      assert.ok(plain.length > 0);
    });
  }

  it('a name longer than any tag of the subset is not one (no truncation to "blockquote")', () => {
    assert.equal(htmlToPlain('<blockquotex>q</blockquotex>', 'HTML'), '<blockquotex>q</blockquotex>');
    assert.equal(htmlToPlain('<blockquote>q</blockquote>', 'HTML'), 'q');
    assert.equal(htmlToPlain('<tg-spoilers>q</tg-spoilers>', 'HTML'), '<tg-spoilers>q</tg-spoilers>');
  });
});
