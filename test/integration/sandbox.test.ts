import assert from 'node:assert/strict';
import { Input, Telegraf, TelegramError } from 'telegraf';
import { TelegramSandbox } from '../../sandbox/server';
import type { ApiError, SandboxOptions, TgMessage } from '../../sandbox/types';

const TOKEN = '123456:SECRET-sandbox-token-x9';
const PHOTO = Buffer.from('ffd8ffe000104a464946', 'hex'); // a JPEG's first bytes; the sandbox does not decode

/** sendMediaGroup's `media` for an album of n photos given by URL. */
const urlAlbum = (n: number): string => JSON.stringify(Array.from({ length: n }, (_, i) => ({ type: 'photo', media: `https://x.y/${i}.jpg` })));

interface Reply {
  status: number;
  body: { ok: boolean; result?: unknown; error_code?: number; description?: string; parameters?: unknown };
}

describe('TelegramSandbox (HTTP)', function () {
  this.timeout(10_000);
  let sandbox: TelegramSandbox;
  let apiRoot: string;

  async function setup(options: SandboxOptions = {}): Promise<void> {
    sandbox = new TelegramSandbox(options);
    ({ apiRoot } = await sandbox.start());
  }

  afterEach(async () => {
    await sandbox?.stop();
  });

  async function reply(response: Response): Promise<Reply> {
    return { status: response.status, body: (await response.json()) as Reply['body'] };
  }

  function call(method: string, params: Record<string, unknown>, token = TOKEN): Promise<Reply> {
    return fetch(`${apiRoot}bot${token}/${method}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(params),
    }).then(reply);
  }

  function multipart(method: string, fields: Record<string, string>, files: Record<string, Buffer>): Promise<Reply> {
    const form = new FormData();
    for (const [name, value] of Object.entries(fields)) form.set(name, value);
    for (const [name, bytes] of Object.entries(files)) form.set(name, new Blob([bytes]), `${name}.jpg`);
    return fetch(`${apiRoot}bot${TOKEN}/${method}`, { method: 'POST', body: form }).then(reply);
  }

  function control(path: string, body?: unknown): Promise<Reply> {
    const init: RequestInit = body === undefined ? {} : { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) };
    return fetch(`${apiRoot}sandbox/${path}`, init).then(reply);
  }

  function expectError(r: Reply, code: number, description: string, parameters?: ApiError['parameters']): void {
    const expected: ApiError = { ok: false, error_code: code, description };
    if (parameters !== undefined) expected.parameters = parameters;
    assert.equal(r.status, code);
    assert.deepEqual(r.body, expected);
  }

  const message = (r: Reply): TgMessage => {
    assert.equal(r.status, 200, JSON.stringify(r.body));
    return r.body.result as TgMessage;
  };

  describe('sending', () => {
    it('answers getMe with the bot whose id prefixes the token', async () => {
      await setup();
      const r = await fetch(`${apiRoot}bot${TOKEN}/getMe`).then(reply);
      assert.deepEqual(r.body, {
        ok: true,
        result: {
          id: 123456,
          is_bot: true,
          first_name: 'Sandbox Bot',
          username: 'sandbox_bot',
          can_join_groups: true,
          can_read_all_group_messages: false,
          supports_inline_queries: false,
        },
      });
    });

    it('accepts sendMessage as JSON, urlencoded, GET query and multipart', async () => {
      await setup({ chatRate: 100 });
      const url = `${apiRoot}bot${TOKEN}/sendMessage`;
      const replies = [
        await call('sendMessage', { chat_id: 42, text: 'json' }),
        await fetch(url, { method: 'POST', body: new URLSearchParams({ chat_id: '42', text: 'form' }) }).then(reply),
        await fetch(`${url}?chat_id=42&text=query`).then(reply),
        await multipart('sendMessage', { chat_id: '42', text: 'multipart' }, {}),
      ];
      const before = Math.floor(Date.now() / 1000);
      replies.forEach((r, i) => {
        const m = message(r);
        assert.ok(Math.abs(m.date - before) <= 1);
        assert.deepEqual(m, {
          message_id: i + 1,
          from: { id: 123456, is_bot: true, first_name: 'Sandbox Bot', username: 'sandbox_bot' },
          chat: { id: 42, first_name: 'User 42', type: 'private' },
          date: m.date,
          text: ['json', 'form', 'query', 'multipart'][i],
        });
      });
      assert.deepEqual(
        sandbox.delivered().map((e) => [e.seq, e.messageId, e.text]),
        [
          [1, 1, 'json'],
          [2, 2, 'form'],
          [3, 3, 'query'],
          [4, 4, 'multipart'],
        ],
      );
    });

    it('parses HTML into text and entities and types chats by id', async () => {
      await setup();
      const m = message(
        await call('sendMessage', { chat_id: -100_123_456_789, text: '  <b>Price</b> &lt; 5&#x20AC; <a href="https://x.y/">go</a>\n', parse_mode: 'html' }),
      );
      assert.deepEqual(m.chat, { id: -100_123_456_789, title: 'Group -100123456789', type: 'group' });
      assert.equal(m.text, 'Price < 5€ go');
      assert.deepEqual(m.entities, [
        { type: 'bold', offset: 0, length: 5 },
        { type: 'text_link', offset: 11, length: 2, url: 'https://x.y/' },
      ]);
      assert.equal(message(await call('sendMessage', { chat_id: -1_001_234_567_890, text: 'x' })).chat.type, 'supergroup');
    });

    it('sends a photo uploaded, by URL and again by the file_id it got', async () => {
      await setup({ chatRate: 100 });
      const uploaded = message(await multipart('sendPhoto', { chat_id: '7', caption: 'new' }, { photo: PHOTO }));
      assert.equal(uploaded.caption, 'new');
      const [size] = uploaded.photo ?? [];
      assert.ok(size !== undefined);
      assert.equal(size.file_size, PHOTO.length);
      const byUrl = message(await call('sendPhoto', { chat_id: 7, photo: 'https://example.com/a.jpg' }));
      assert.equal(byUrl.caption, undefined);
      message(await call('sendPhoto', { chat_id: 7, photo: size.file_id }));
      message(await multipart('sendPhoto', { chat_id: '7', photo: 'attach://pic' }, { pic: PHOTO }));
      assert.deepEqual(
        sandbox.delivered(7).map((e) => e.media),
        [
          [{ type: 'photo', caption: 'new', source: 'upload', bytes: PHOTO.length }],
          [{ type: 'photo', source: 'url' }],
          [{ type: 'photo', source: 'file_id' }],
          [{ type: 'photo', source: 'upload', bytes: PHOTO.length }],
        ],
      );
    });

    it('refuses photos Telegram would refuse', async () => {
      await setup({ chatRate: 100 });
      expectError(await call('sendPhoto', { chat_id: 7 }), 400, 'Bad Request: there is no photo in the request');
      expectError(
        await multipart('sendPhoto', { chat_id: '7', photo: 'attach://missing' }, { other: PHOTO }),
        400,
        'Bad Request: there is no photo in the request',
      );
      expectError(await call('sendPhoto', { chat_id: 7, photo: 'AgADunknown' }), 400, 'Bad Request: wrong file identifier/HTTP URL specified');
      expectError(await multipart('sendPhoto', { chat_id: '7' }, { photo: Buffer.alloc(0) }), 400, 'Bad Request: file must be non-empty');
      expectError(
        await call('sendPhoto', { chat_id: 7, photo: 'https://x.y/a.jpg', caption: 'c'.repeat(1025) }),
        400,
        'Bad Request: message caption is too long',
      );
      message(await call('sendPhoto', { chat_id: 7, photo: 'https://x.y/a.jpg', caption: `<b>${'c'.repeat(1024)}</b>`, parse_mode: 'HTML' }));
    });

    it('sends albums of 2 and 10 uploads referenced by attach://', async () => {
      await setup({ chatRate: 100 });
      for (const n of [2, 10]) {
        const names = Array.from({ length: n }, (_, i) => `p${i}`);
        const media = names.map((name, i) => ({ type: 'photo', media: `attach://${name}`, ...(i === 0 ? { caption: 'first' } : {}) }));
        const files = Object.fromEntries(names.map((name) => [name, PHOTO]));
        const r = await multipart('sendMediaGroup', { chat_id: '-55', media: JSON.stringify(media) }, files);
        assert.equal(r.status, 200, JSON.stringify(r.body));
        const messages = r.body.result as TgMessage[];
        assert.equal(messages.length, n);
        assert.equal(new Set(messages.map((m) => m.media_group_id)).size, 1);
        assert.equal(messages[0]?.caption, 'first');
        assert.equal(messages[1]?.caption, undefined);
      }
      assert.deepEqual(
        sandbox.delivered().map((e) => [e.messageId, e.mediaCount]),
        [
          [1, 2],
          [3, 10],
        ],
      );
      assert.equal(sandbox.stats().accepted.messages, 12);
    });

    it('refuses albums of 0, 1 and 11 items and missing attachments', async () => {
      await setup({ chatRate: 100 });
      expectError(await call('sendMediaGroup', { chat_id: 7, media: urlAlbum(0) }), 400, 'Bad Request: there are no messages to send');
      expectError(await call('sendMediaGroup', { chat_id: 7, media: urlAlbum(1) }), 400, 'Bad Request: media group must contain 2-10 items');
      expectError(await call('sendMediaGroup', { chat_id: 7, media: urlAlbum(11) }), 400, 'Bad Request: too many messages to send as an album');
      expectError(
        await multipart(
          'sendMediaGroup',
          {
            chat_id: '7',
            media: JSON.stringify([
              { type: 'photo', media: 'attach://a' },
              { type: 'photo', media: 'attach://b' },
            ]),
          },
          { a: PHOTO },
        ),
        400,
        "Bad Request: can't parse InputMedia: media not found",
      );
      expectError(await call('sendMediaGroup', { chat_id: 7 }), 400, 'Bad Request: parameter "media" is required');
      assert.equal(sandbox.delivered().length, 0);
    });
  });

  describe('with telegraf, the client our senders use', () => {
    it('serves text, uploads, albums and a 429 telegraf can read', async () => {
      await setup({ token: TOKEN });
      const { telegram } = new Telegraf(TOKEN, { telegram: { apiRoot } });
      assert.equal((await telegram.getMe()).id, 123456);
      assert.deepEqual((await telegram.sendMessage(1, '<b>hi</b>', { parse_mode: 'HTML' })).entities, [{ type: 'bold', offset: 0, length: 2 }]);
      const photo = await telegram.sendPhoto(2, Input.fromBuffer(PHOTO, 'p.jpg'), { caption: 'c' });
      const album = await telegram.sendMediaGroup(-3, [
        { type: 'photo', media: Input.fromBuffer(PHOTO, 'a.jpg'), caption: 'a' },
        { type: 'photo', media: photo.photo[0]?.file_id ?? '' },
      ]);
      assert.deepEqual(
        album.map((m) => m.message_id),
        [1, 2],
      );
      const error: unknown = await telegram.sendMessage(1, 'too soon').catch((e: unknown) => e);
      assert.ok(error instanceof TelegramError);
      assert.equal(error.code, 429);
      assert.deepEqual(error.parameters, { retry_after: 1 });
    });
  });

  describe('rate limits', () => {
    it('holds a private chat to its window, with an exact 429, then admits again', async () => {
      await setup({ chatRate: 5 });
      const replies = await Promise.all(Array.from({ length: 20 }, (_, i) => call('sendMessage', { chat_id: 9, text: `m${i}` })));
      assert.equal(replies.filter((r) => r.status === 200).length, 5);
      for (const r of replies.filter((r) => r.status !== 200)) {
        const retryAfter = (r.body.parameters as { retry_after: number }).retry_after;
        assert.ok(Number.isInteger(retryAfter) && retryAfter >= 1);
        expectError(r, 429, `Too Many Requests: retry after ${retryAfter}`, { retry_after: retryAfter });
      }
      const first = sandbox.delivered()[0]?.at ?? 0;
      let next: Reply;
      let polls = 0;
      do {
        await new Promise((resolve) => setTimeout(resolve, 50));
        next = await call('sendMessage', { chat_id: 9, text: 'later' });
        polls++;
      } while (next.status === 429);
      assert.equal(next.status, 200);
      assert.ok(Date.now() - first >= 990, 'admitted again only once the window passed');
      const times = sandbox.delivered().map((e) => e.at);
      for (const t of times) assert.ok(times.filter((e) => e > t - 1000 && e <= t).length <= 5);
      assert.deepEqual(sandbox.stats().rateLimited, { global: 0, chat: 15 + polls - 1, group: 0 });
    });

    it('holds a group to its per-minute window', async () => {
      await setup({ groupRatePerMin: 3 });
      const replies = [];
      for (let i = 0; i < 5; i++) replies.push(await call('sendMessage', { chat_id: -42, text: `g${i}` }));
      assert.deepEqual(
        replies.map((r) => r.status),
        [200, 200, 200, 429, 429],
      );
      const retryAfter = (replies[3]?.body.parameters as { retry_after: number }).retry_after;
      assert.ok(retryAfter >= 59 && retryAfter <= 60, `retry_after ${retryAfter}`);
      assert.deepEqual(sandbox.stats().rateLimited, { global: 0, chat: 0, group: 2 });
      assert.equal(message(await call('sendMessage', { chat_id: -43, text: 'other group' })).chat.id, -43);
    });

    it('holds a group to a shorter window when told (the rate stays per minute)', async () => {
      // 200/min over 3 s: 10 per 3 s, so a test of a stricter group limit runs in seconds.
      await setup({ groupRatePerMin: 200, groupWindowMs: 3_000 });
      assert.deepEqual(sandbox.stats().limits, { globalRate: 30, chatRate: 1, groupRatePerMin: 200, groupWindowMs: 3_000 });
      const replies = [];
      for (let i = 0; i < 11; i++) replies.push(await call('sendMessage', { chat_id: -42, text: `g${i}` }));
      assert.deepEqual(
        replies.map((r) => r.status),
        [...Array<number>(10).fill(200), 429],
      );
      assert.equal((replies[10]?.body.parameters as { retry_after: number }).retry_after, 3);
      assert.deepEqual(sandbox.stats().rateLimited, { global: 0, chat: 0, group: 1 });
      // Over HTTP too: a 6 s window at the same rate holds 20.
      assert.equal(((await control('limits', { group_window_ms: 6_000 })).body.result as { groupWindowMs: number }).groupWindowMs, 6_000);
      for (let i = 0; i < 10; i++) assert.equal((await call('sendMessage', { chat_id: -42, text: `h${i}` })).status, 200);
      assert.equal((await call('sendMessage', { chat_id: -42, text: 'full' })).status, 429);
      expectError(await control('limits', { group_window_ms: 0 }), 400, 'Bad Request: groupWindowMs must be a positive number, got 0');
    });

    it('holds all chats together to the global window', async () => {
      await setup({ globalRate: 5, chatRate: 100 });
      const replies = await Promise.all(Array.from({ length: 10 }, (_, i) => call('sendMessage', { chat_id: 1000 + i, text: 'x' })));
      assert.equal(replies.filter((r) => r.status === 200).length, 5);
      const stats = sandbox.stats();
      assert.equal(stats.rateLimited.global, 5);
      assert.equal(stats.peakGlobalWindow, 5);
      assert.deepEqual(stats.windows.global, { used: 5, count: 5, windowMs: 1000 });
    });

    it('counts an album as n messages in every window', async () => {
      await setup({ chatRate: 5 });
      const album = (n: number): Promise<Reply> => call('sendMediaGroup', { chat_id: 3, media: urlAlbum(n) });
      assert.equal((await album(3)).status, 200);
      assert.equal((await album(3)).status, 429, '3 + 3 > 5: the whole album is refused');
      assert.equal((await album(2)).status, 200);
      assert.equal((await call('sendMessage', { chat_id: 3, text: 'full' })).status, 429);
      assert.equal(sandbox.stats().windows.global.used, 5);
    });

    it('admits an album larger than the window only into an empty window', async () => {
      await setup(); // chatRate 1: one message per second
      assert.equal((await call('sendMessage', { chat_id: 4, text: 'x' })).status, 200);
      const media = urlAlbum(2);
      assert.equal((await call('sendMediaGroup', { chat_id: 4, media })).status, 429);
      assert.equal((await call('sendMediaGroup', { chat_id: 5, media })).status, 200);
      assert.equal((await call('sendMessage', { chat_id: 5, text: 'x' })).status, 429);
    });

    it('does not count rejected requests in any window', async () => {
      await setup({ chats: [{ chatId: 6, state: 'blocked' }] });
      expectError(
        await call('sendMessage', { chat_id: 8, text: '<b>', parse_mode: 'HTML' }),
        400,
        `Bad Request: can't parse entities: Can't find end tag corresponding to start tag "b"`,
      );
      expectError(await call('sendMessage', { chat_id: 8, text: 'x'.repeat(4097) }), 400, 'Bad Request: message is too long');
      expectError(await call('sendMessage', { chat_id: 6, text: 'x' }), 403, 'Forbidden: bot was blocked by the user');
      sandbox.injectFailure({ status: 502, chatId: 8 });
      assert.equal((await call('sendMessage', { chat_id: 8, text: 'x' })).status, 502);
      assert.equal((await call('sendMessage', { chat_id: 8, text: 'x' })).status, 200);
      assert.equal(sandbox.stats().windows.global.used, 1);
    });
  });

  describe('errors', () => {
    it('refuses other tokens with 401 when a token is set', async () => {
      await setup({ token: TOKEN });
      expectError(await call('sendMessage', { chat_id: 1, text: 'x' }, '1:wrong'), 401, 'Unauthorized');
      assert.equal((await call('sendMessage', { chat_id: 1, text: 'x' })).status, 200);
    });

    it('answers 403 for blocked, deactivated and kicked chats', async () => {
      await setup({
        chats: [
          { chatId: 11, state: 'blocked' },
          { chatId: 12, state: 'deactivated' },
          { chatId: -13, state: 'kicked' },
          { chatId: -1_000_000_000_014, state: 'kicked' },
        ],
      });
      expectError(await call('sendMessage', { chat_id: 11, text: 'x' }), 403, 'Forbidden: bot was blocked by the user');
      expectError(await call('sendMessage', { chat_id: 12, text: 'x' }), 403, 'Forbidden: user is deactivated');
      expectError(await call('sendMessage', { chat_id: -13, text: 'x' }), 403, 'Forbidden: bot was kicked from the group chat');
      expectError(await call('sendMessage', { chat_id: -1_000_000_000_014, text: 'x' }), 403, 'Forbidden: bot was kicked from the supergroup chat');
    });

    it('answers 400 for unknown, migrated and missing chats', async () => {
      await setup({
        chats: [
          { chatId: 21, state: 'unknown' },
          { chatId: -22, state: 'migrated', migrateToChatId: -1_000_000_000_022 },
        ],
      });
      expectError(await call('sendMessage', { chat_id: 21, text: 'x' }), 400, 'Bad Request: chat not found');
      expectError(await call('sendMessage', { chat_id: '@nobody', text: 'x' }), 400, 'Bad Request: chat not found');
      expectError(await call('sendMessage', { text: 'x' }), 400, 'Bad Request: chat_id is empty');
      expectError(await call('sendMessage', { chat_id: -22, text: 'x' }), 400, 'Bad Request: group chat was upgraded to a supergroup chat', {
        migrate_to_chat_id: -1_000_000_000_022,
      });
      await sandbox.stop();
      await setup({ chatUnknownByDefault: true, chats: [{ chatId: 23, state: 'ok' }] });
      expectError(await call('sendMessage', { chat_id: 24, text: 'x' }), 400, 'Bad Request: chat not found');
      assert.equal((await call('sendMessage', { chat_id: 23, text: 'x' })).status, 200);
    });

    it('checks text like Telegram: empty, whitespace, length after parsing', async () => {
      await setup({ chatRate: 100 });
      expectError(await call('sendMessage', { chat_id: 1 }), 400, 'Bad Request: message text is empty');
      expectError(await call('sendMessage', { chat_id: 1, text: '' }), 400, 'Bad Request: message text is empty');
      expectError(await call('sendMessage', { chat_id: 1, text: ' \n <b></b>', parse_mode: 'HTML' }), 400, 'Bad Request: text must be non-empty');
      expectError(await call('sendMessage', { chat_id: 1, text: '😀'.repeat(2049) }), 400, 'Bad Request: message is too long');
      message(await call('sendMessage', { chat_id: 1, text: '😀'.repeat(2048) })); // 4096 UTF-16 units
      message(await call('sendMessage', { chat_id: 1, text: `<i>${'&amp;'.repeat(4096)}</i>`, parse_mode: 'HTML' }));
      expectError(await call('sendMessage', { chat_id: 1, text: 'x', parse_mode: 'BBCode' }), 400, 'Bad Request: unsupported parse_mode');
      expectError(await call('sendMessage', { chat_id: 1, text: 'x', reply_markup: '{' }), 400, "Bad Request: can't parse reply keyboard markup JSON object");
    });

    it('reports HTML errors with Telegram wording and UTF-8 byte offsets', async () => {
      await setup({ chatRate: 100 });
      const cases: Array<[string, string]> = [
        ['Привет <foo>', 'Unsupported start tag "foo" at byte offset 13'],
        ['a < b', 'Unsupported start tag "" at byte offset 2'],
        ['x <b', 'Unclosed start tag at byte offset 2'],
        ['<b>x</i>', 'Unmatched end tag at byte offset 4, expected "</b>", found "</i>"'],
        ['x</b>', 'Unexpected end tag at byte offset 1'],
        ['<b>x</b', 'Unclosed end tag at byte offset 4'],
        ['<span>x</span>', 'Tag "span" must have class "tg-spoiler" at byte offset 0'],
        ['<tg-emoji emoji-id="x">y</tg-emoji>', 'Invalid custom emoji identifier specified'],
        ['<a href=x/>y</a>', 'Unexpected end of name token at byte offset 8'],
        ['&#xD800;', 'Text contains invalid Unicode characters after decoding HTML entities, check for unmatched surrogate code units'],
      ];
      for (const [text, error] of cases) {
        expectError(await call('sendMessage', { chat_id: 1, text, parse_mode: 'HTML' }), 400, `Bad Request: can't parse entities: ${error}`);
      }
      const ok = message(
        await call('sendMessage', {
          chat_id: 1,
          text:
            '<span class="tg-spoiler">s</span> <tg-spoiler>t</tg-spoiler> <blockquote expandable>q</blockquote> ' +
            '&nbsp; & <pre><code class="language-ts">c</code></pre> <tg-time unix="1700000000" format="wDT">d</tg-time>',
          parse_mode: 'HTML',
        }),
      );
      assert.equal(ok.text, 's t q &nbsp; & c d');
      assert.deepEqual(
        ok.entities?.map((e) => e.type),
        ['spoiler', 'spoiler', 'expandable_blockquote', 'pre', 'date_time'],
      );
      assert.equal(ok.entities?.[3]?.language, 'ts');
      assert.deepEqual(ok.entities?.[4], { type: 'date_time', offset: 17, length: 1, unix_time: 1_700_000_000, date_time_format: 'wDT' });
    });

    it('answers 404 for unknown methods and paths', async () => {
      await setup();
      expectError(await call('sendSticker', { chat_id: 1 }), 404, 'Not Found: method not found');
      expectError(await fetch(`${apiRoot}nothing`).then(reply), 404, 'Not Found');
      assert.equal((await call('SENDMESSAGE', { chat_id: 1, text: 'case-insensitive' })).status, 200);
    });
  });

  describe('fault injection', () => {
    it('answers injected 5xx and 429 to matching requests only', async () => {
      await setup({ chatRate: 100 });
      sandbox.injectFailure({ status: 502, method: 'sendMessage', count: 2 }, { status: 429, retryAfter: 7, chatId: 99 });
      assert.equal((await call('getMe', {})).status, 200, 'matches neither failure');
      expectError(await call('sendMessage', { chat_id: 1, text: 'x' }), 502, 'Bad Gateway');
      expectError(await call('sendMessage', { chat_id: 99, text: 'x' }), 502, 'Bad Gateway');
      assert.equal((await call('sendMessage', { chat_id: 1, text: 'x' })).status, 200);
      expectError(await call('sendMessage', { chat_id: 99, text: 'x' }), 429, 'Too Many Requests: retry after 7', { retry_after: 7 });
      assert.equal((await call('sendMessage', { chat_id: 99, text: 'x' })).status, 200);
      const stats = sandbox.stats();
      assert.equal(stats.injected, 3);
      assert.deepEqual(stats.rejected, { 429: 1, 502: 2 });
      assert.deepEqual(stats.rateLimited, { global: 0, chat: 0, group: 0 });
    });

    it('hangs until the client gives up, and stop() ends requests still hanging', async () => {
      await setup();
      sandbox.injectFailure({ hang: true, count: 2 });
      await assert.rejects(fetch(`${apiRoot}bot${TOKEN}/getMe`, { signal: AbortSignal.timeout(200) }), (error: Error) => error.name === 'TimeoutError');
      const hanging = fetch(`${apiRoot}bot${TOKEN}/getMe`);
      while (sandbox.stats().hanging === 0) await new Promise((resolve) => setTimeout(resolve, 10));
      const started = Date.now();
      await sandbox.stop();
      await assert.rejects(hanging);
      assert.ok(Date.now() - started < 1000);
    });

    it('delays answers by the injected latency', async () => {
      await setup({ latency: { minMs: 150 } });
      let started = Date.now();
      await call('getMe', {});
      assert.ok(Date.now() - started >= 145);
      sandbox.setLatency({ minMs: 0 });
      started = Date.now();
      await call('getMe', {});
      assert.ok(Date.now() - started < 100);
    });
  });

  describe('inspection and control', () => {
    it('serves the delivered log and stats, and applies control requests', async () => {
      await setup({ chatRate: 100 });
      await call('sendMessage', { chat_id: 1, text: 'a' });
      await call('sendMessage', { chat_id: 2, text: 'b' });
      await call('sendMessage', { chat_id: 1, text: 'c', parse_mode: 'HTML' });
      const all = await control('delivered');
      const entries = all.body.result as Array<{ seq: number; text: string }>;
      assert.deepEqual(
        entries.map((e) => [e.seq, e.text]),
        [
          [1, 'a'],
          [2, 'b'],
          [3, 'c'],
        ],
      );
      const one = await control('delivered?chat_id=1');
      assert.deepEqual(one.body.result, sandbox.delivered(1));
      assert.equal(sandbox.delivered(1)[1]?.parseMode, 'HTML');
      const stats = (await control('stats')).body.result as ReturnType<TelegramSandbox['stats']>;
      assert.equal(stats.requests, 3);
      assert.deepEqual(stats.methods, { sendMessage: 3 });
      assert.deepEqual(stats.accepted, { requests: 3, messages: 3 });

      assert.equal((await control('chats', { chat_id: 1, state: 'blocked' })).status, 200);
      expectError(await call('sendMessage', { chat_id: 1, text: 'x' }), 403, 'Forbidden: bot was blocked by the user');
      assert.equal((await control('failures', [{ status: 503, chat_id: 2 }])).status, 200);
      expectError(await call('sendMessage', { chat_id: 2, text: 'x' }), 503, 'Service Unavailable');
      assert.deepEqual((await control('limits', { chat_rate: 0.5 })).body.result, {
        globalRate: 30,
        chatRate: 0.5,
        groupRatePerMin: 20,
        groupWindowMs: 60_000,
      });
      assert.equal((await call('sendMessage', { chat_id: 3, text: 'x' })).status, 200);
      assert.equal((await call('sendMessage', { chat_id: 3, text: 'x' })).status, 429);
      assert.deepEqual((await control('latency', { min_ms: 0, max_ms: 5 })).body.result, { min_ms: 0, max_ms: 5 });

      assert.equal((await control('reset', {})).status, 200);
      assert.deepEqual(sandbox.delivered(), []);
      assert.equal(sandbox.stats().requests, 0);
      assert.equal(sandbox.stats().limits.chatRate, 100);
      assert.equal((await call('sendMessage', { chat_id: 1, text: 'unblocked' })).status, 200);
    });

    it('refuses invalid control requests with a reason', async () => {
      await setup();
      expectError(await control('chats', { chat_id: 5, state: 'kicked' }), 400, 'Bad Request: state "kicked" is for groups (id < 0); use "blocked" for 5');
      expectError(
        await control('chats', { chat_id: -5, state: 'migrated' }),
        400,
        'Bad Request: state "migrated" needs a supergroup id (-100…) to migrate to, got undefined',
      );
      expectError(await control('failures', { status: 418 }), 400, 'Bad Request: failure status must be 429, 500, 502 or 503 (or hang: true); got 418');
      expectError(await control('limits', { chat_rate: -1 }), 400, 'Bad Request: chatRate must be a positive number, got -1');
      expectError(await control('latency', {}), 400, 'Bad Request: "min_ms" is required (a number of ms)');
      assert.equal((await control('nothing')).status, 404);
    });

    it('lets tests await deliveries instead of sleeping', async () => {
      await setup({ chatRate: 100 });
      const seen: number[] = [];
      sandbox.on('delivered', (entry) => seen.push(entry.seq));
      const waiting = sandbox.waitForDelivered(3, 2000);
      await Promise.all([1, 2, 3].map((chat) => call('sendMessage', { chat_id: chat, text: 'x' })));
      assert.equal((await waiting).length, 3);
      assert.deepEqual(seen, [1, 2, 3]);
      await assert.rejects(sandbox.waitForDelivered(4, 50), /3 of 4 entries/);
    });

    it('never records or reports the token', async () => {
      await setup({ token: TOKEN });
      await call('sendMessage', { chat_id: 1, text: 'x' });
      await multipart('sendPhoto', { chat_id: '1' }, { photo: PHOTO });
      await call('sendMessage', { chat_id: 1, text: 'x' }, `${TOKEN}-wrong`);
      const served = [(await control('delivered')).body, (await control('stats')).body];
      const everything = JSON.stringify([sandbox.delivered(), sandbox.stats(), served]);
      assert.ok(!everything.includes('SECRET'), everything);
    });

    it('has a trailing-slash apiRoot and an idempotent stop()', async () => {
      await setup();
      assert.match(sandbox.apiRoot, /^http:\/\/127\.0\.0\.1:\d+\/$/);
      await Promise.all([sandbox.stop(), sandbox.stop()]);
      await assert.rejects(sandbox.start(), /create a new instance/);
    });
  });
});
