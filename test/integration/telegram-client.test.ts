import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { createServer as createNetServer, type AddressInfo, type Server as NetServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inspect, promisify } from 'node:util';
import { TelegramSandbox } from '../../sandbox/server';
import { TelegrafClient, type PhotoItem } from '../../src/telegram/client';
import {
  TelegramApiError,
  TelegramMigrated,
  TelegramParseError,
  TelegramPermanent,
  TelegramRateLimited,
  TelegramTooLong,
  TelegramTransient,
  TelegramUnauthorized,
} from '../../src/telegram/errors';
import { freePort } from '../helpers/ports';

const TOKEN = '424242:CLIENT-test_secret_abcdefghijklmnop';
const SECRET_HALF = TOKEN.split(':')[1]!;

/** Every classified error seen in this file, checked for the token at the end too. */
const seen: TelegramApiError[] = [];

/** Awaits a rejection, asserts it is a TelegramApiError of `cls` that never carries the token. */
async function rejection<T extends TelegramApiError>(p: Promise<unknown>, cls: abstract new (...args: never[]) => T): Promise<T> {
  let caught: unknown;
  try {
    await p;
  } catch (e) {
    caught = e;
  }
  assert.ok(caught !== undefined, 'the call resolved but should have been rejected');
  assert.ok(caught instanceof TelegramApiError, `not a TelegramApiError: ${inspect(caught)}`);
  seen.push(caught);
  assert.ok(caught instanceof cls, `expected ${cls.name}, got ${caught.constructor.name}: ${caught.message}`);
  assertNoToken(caught);
  return caught;
}

function assertNoToken(e: TelegramApiError): void {
  for (const text of [e.message, e.description, JSON.stringify(e), String(e.stack), JSON.stringify(e.details ?? {})]) {
    assert.ok(!text.includes(TOKEN), `token in error: ${text}`);
    assert.ok(!text.includes(SECRET_HALF), `token secret in error: ${text}`);
  }
}

function png(size: number, fill: number): Buffer {
  const b = Buffer.alloc(size, fill);
  Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]).copy(b);
  return b;
}

describe('telegram client against the sandbox over HTTP', function () {
  this.timeout(20_000);
  let sandbox: TelegramSandbox;
  let client: TelegrafClient;

  before(async () => {
    sandbox = new TelegramSandbox({ globalRate: 1000, chatRate: 1, groupRatePerMin: 20 });
    const { apiRoot } = await sandbox.start();
    client = new TelegrafClient({ token: TOKEN, apiRoot, timeoutMs: 5_000 });
  });

  beforeEach(() => sandbox.reset());

  after(async () => {
    await client.close();
    await sandbox.stop();
  });

  it('sends a message and returns Telegram’s result', async () => {
    const msg = await client.sendMessage(1001, '<b>hello</b>', 'HTML');
    assert.equal(msg.chat.id, 1001);
    assert.equal(typeof msg.message_id, 'number');
    const [entry] = sandbox.delivered(1001);
    assert.equal(entry?.text, '<b>hello</b>');
    assert.equal(entry?.parseMode, 'HTML');
    const me = await client.getMe();
    assert.equal(me.id, 424242);
  });

  it('keeps its connections alive over http:// through bursts wider than Node’s free-socket pool (3 × 300 calls at once)', async () => {
    const fresh = new TelegrafClient({ token: TOKEN, apiRoot: sandbox.apiRoot, timeoutMs: 5_000 });
    for (let round = 0; round < 3; round++)
      await Promise.all(Array.from({ length: 300 }, (_, i) => fresh.sendMessage(2000 + round * 300 + i, `k${round}.${i}`)));
    const s = sandbox.stats();
    assert.equal(s.accepted.requests, 900);
    // telegraf passes no agent for http://, and Node's global agent keeps at most 256 idle sockets: each
    // later burst reopened the rest (344+). The client's own agent reuses the first burst's 300.
    assert.ok(s.connections <= 300, `${s.connections} connections for 3 bursts of 300 calls`);
  });

  describe('429', () => {
    it('from the sandbox’s own per-chat limit: TelegramRateLimited with retry_after', async () => {
      await client.sendMessage(1002, 'first');
      const e = await rejection(client.sendMessage(1002, 'second at once'), TelegramRateLimited);
      assert.equal(e.code, 'TG_RATE_LIMITED');
      assert.equal(e.status, 429);
      assert.ok(Number.isInteger(e.retryAfterSec) && e.retryAfterSec >= 1, `retryAfterSec ${e.retryAfterSec}`);
      assert.equal(e.retryAfterMs, e.retryAfterSec * 1000);
      assert.match(e.description, /^Too Many Requests: retry after \d+$/);
      assert.equal(sandbox.delivered(1002).length, 1);
    });

    it('injected with a large retry_after: carried exactly', async () => {
      sandbox.injectFailure({ status: 429, retryAfter: 3600, method: 'sendMessage' });
      const e = await rejection(client.sendMessage(1003, 'x'), TelegramRateLimited);
      assert.equal(e.retryAfterSec, 3600);
      assert.deepEqual(e.toJSON().details, { status: 429, retryAfterSec: 3600 });
    });
  });

  describe('403: permanent, with the reason', () => {
    const cases = [
      { chatId: 2001, state: 'blocked', reason: 'blocked', description: /blocked by the user/ },
      { chatId: 2002, state: 'deactivated', reason: 'deactivated', description: /user is deactivated/ },
      { chatId: -2003, state: 'kicked', reason: 'kicked', description: /kicked from the group chat/ },
      { chatId: -1001000002004, state: 'kicked', reason: 'kicked', description: /kicked from the supergroup chat/ },
    ] as const;
    for (const c of cases) {
      it(`${c.state} (chat ${c.chatId}) → TelegramPermanent ${c.reason}`, async () => {
        sandbox.setChat({ chatId: c.chatId, state: c.state });
        const e = await rejection(client.sendMessage(c.chatId, 'hi'), TelegramPermanent);
        assert.equal(e.code, 'TG_PERMANENT');
        assert.equal(e.status, 403);
        assert.equal(e.reason, c.reason);
        assert.match(e.description, c.description);
        assert.equal(sandbox.delivered(c.chatId).length, 0);
      });
    }
  });

  describe('400 variants', () => {
    it('chat not found → TelegramPermanent not_found', async () => {
      sandbox.setChat({ chatId: 3001, state: 'unknown' });
      const e = await rejection(client.sendMessage(3001, 'hi'), TelegramPermanent);
      assert.equal(e.status, 400);
      assert.equal(e.reason, 'not_found');
    });

    it('group upgraded to a supergroup → TelegramMigrated with newChatId', async () => {
      sandbox.setChat({ chatId: -3002, state: 'migrated', migrateToChatId: -1009876543210 });
      const e = await rejection(client.sendMessage(-3002, 'hi'), TelegramMigrated);
      assert.equal(e.code, 'TG_MIGRATED');
      assert.equal(e.newChatId, -1009876543210);
      // The new id works.
      await client.sendMessage(e.newChatId, 'hi again');
      assert.equal(sandbox.delivered(-1009876543210).length, 1);
    });

    it("can't parse entities → TelegramParseError", async () => {
      const e = await rejection(client.sendMessage(3003, '<b>unclosed bold', 'HTML'), TelegramParseError);
      assert.equal(e.code, 'TG_PARSE_ERROR');
      assert.equal(e.status, 400);
      assert.match(e.description, /can't parse entities/i);
      // The same text as plain text is fine.
      await client.sendMessage(3003, '<b>unclosed bold', null);
      assert.equal(sandbox.delivered(3003).length, 1);
    });

    it('message is too long → TelegramTooLong text', async () => {
      const e = await rejection(client.sendMessage(3004, 'x'.repeat(4097)), TelegramTooLong);
      assert.equal(e.code, 'TG_TOO_LONG');
      assert.equal(e.what, 'text');
      await client.sendMessage(3004, 'x'.repeat(4096));
    });

    it('caption too long → TelegramTooLong caption', async () => {
      const item: PhotoItem = { photo: { kind: 'bytes', data: png(200, 1), filename: 'a.png' }, caption: 'c'.repeat(1025) };
      const e = await rejection(client.sendPhoto(3005, item), TelegramTooLong);
      assert.equal(e.what, 'caption');
      assert.match(e.description, /caption is too long/);
    });
  });

  it('401 (sandbox expects another token) → TelegramUnauthorized', async () => {
    const strict = new TelegramSandbox({ token: '999:another-token-entirely-000000' });
    const { apiRoot } = await strict.start();
    try {
      const c = new TelegrafClient({ token: TOKEN, apiRoot, timeoutMs: 5_000 });
      const e = await rejection(c.sendMessage(4001, 'hi'), TelegramUnauthorized);
      assert.equal(e.code, 'TG_UNAUTHORIZED');
      assert.equal(e.status, 401);
      await rejection(c.getMe(), TelegramUnauthorized);
      assert.equal(strict.delivered().length, 0);
    } finally {
      await strict.stop();
    }
  });

  for (const status of [500, 502, 503] as const) {
    it(`injected ${status} → TelegramTransient server_error`, async () => {
      sandbox.injectFailure({ status, chatId: 5000 + status });
      const e = await rejection(client.sendMessage(5000 + status, 'hi'), TelegramTransient);
      assert.equal(e.code, 'TG_TRANSIENT');
      assert.equal(e.reason, 'server_error');
      assert.equal(e.status, status);
      // The failure was consumed: the next call goes through.
      await client.sendMessage(5000 + status, 'hi');
      assert.equal(sandbox.delivered(5000 + status).length, 1);
    });
  }

  describe('timeouts and network failures', () => {
    let silent: Server;
    const sockets = new Set<Socket>();
    let requests = 0;

    before(async () => {
      silent = createServer(() => {
        requests++; // never answers
      });
      silent.on('connection', (s) => {
        sockets.add(s);
        s.on('close', () => sockets.delete(s));
      });
      await new Promise<void>((r) => silent.listen(0, '127.0.0.1', () => r()));
    });

    after(async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => silent.close(() => r()));
    });

    it('a server that never answers → TelegramTransient timeout, within ~1 s', async () => {
      const { port } = silent.address() as AddressInfo;
      const c = new TelegrafClient({ token: TOKEN, apiRoot: `http://127.0.0.1:${port}/`, timeoutMs: 200 });
      const started = performance.now();
      const e = await rejection(c.sendMessage(6001, 'hi'), TelegramTransient);
      const elapsed = performance.now() - started;
      assert.equal(e.reason, 'timeout');
      assert.equal(e.status, 0);
      assert.ok(elapsed >= 190, `returned before the timeout: ${elapsed.toFixed(0)} ms`);
      assert.ok(elapsed < 1000, `took ${elapsed.toFixed(0)} ms`);
      assert.ok(requests >= 1, 'the request never reached the server');
    });

    it('a sandbox request left hanging → TelegramTransient timeout', async () => {
      const c = new TelegrafClient({ token: TOKEN, apiRoot: sandbox.apiRoot, timeoutMs: 200 });
      sandbox.injectFailure({ hang: true, chatId: 6002 });
      const e = await rejection(c.sendMessage(6002, 'hi'), TelegramTransient);
      assert.equal(e.reason, 'timeout');
    });

    it('an answer that is not JSON → TelegramTransient bad_response; a bare 502 → server_error', async () => {
      const odd = createServer((req, res) => {
        if (req.url?.endsWith('/sendMessage')) res.writeHead(200, { 'content-type': 'text/html' }).end('<html>proxy page</html>');
        else res.writeHead(502, 'Bad Gateway').end();
      });
      await new Promise<void>((r) => odd.listen(0, '127.0.0.1', () => r()));
      try {
        const { port } = odd.address() as AddressInfo;
        const c = new TelegrafClient({ token: TOKEN, apiRoot: `http://127.0.0.1:${port}/`, timeoutMs: 5_000 });
        const e = await rejection(c.sendMessage(6004, 'hi'), TelegramTransient);
        assert.equal(e.reason, 'bad_response');
        const g = await rejection(c.sendPhoto(6004, { photo: { kind: 'url', url: 'http://127.0.0.1:9/x.jpg' } }), TelegramTransient);
        assert.equal(g.reason, 'server_error');
        assert.equal(g.status, 502);
      } finally {
        odd.closeAllConnections();
        await new Promise<void>((r) => odd.close(() => r()));
      }
    });

    it('an https:// apiRoot goes over TLS: a certificate nobody trusts → TelegramTransient network, nothing handled', async () => {
      const dir = mkdtempSync(join(tmpdir(), 'tg-tls-'));
      try {
        const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
        await promisify(execFile)('openssl', ['req', '-x509', ...ec, '-keyout', 'k.pem', '-out', 'c.pem', '-days', '1', '-subj', '/CN=localhost'], {
          cwd: dir,
        });
        let handled = 0;
        const tls = createHttpsServer({ key: readFileSync(join(dir, 'k.pem')), cert: readFileSync(join(dir, 'c.pem')) }, (_req, res) => {
          handled++;
          res.end('{"ok":true,"result":{}}');
        });
        await new Promise<void>((r) => tls.listen(0, '127.0.0.1', () => r()));
        try {
          const c = new TelegrafClient({ token: TOKEN, apiRoot: `https://127.0.0.1:${(tls.address() as AddressInfo).port}/`, timeoutMs: 5_000 });
          const e = await rejection(c.sendMessage(6005, 'hi'), TelegramTransient);
          assert.equal(e.reason, 'network');
          assert.match(e.message, /self[- ]signed certificate/i);
          assert.equal(handled, 0);
          await c.close();
        } finally {
          tls.closeAllConnections();
          await new Promise<void>((r) => tls.close(() => r()));
        }
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });

    it('connection refused → TelegramTransient network', async () => {
      const port = await freePort();
      const c = new TelegrafClient({ token: TOKEN, apiRoot: `http://127.0.0.1:${port}/`, timeoutMs: 5_000 });
      const started = performance.now();
      const e = await rejection(c.sendMessage(6003, 'hi'), TelegramTransient);
      assert.equal(e.reason, 'network');
      assert.equal(e.status, 0);
      assert.match(e.message, /ECONNREFUSED/);
      assert.ok(performance.now() - started < 2_000, 'connection refused should fail fast, not wait for the timeout');
    });
  });

  describe('HTTP edge cases against a scripted server (undici pool)', () => {
    let server: NetServer;
    let apiRoot: string;
    let connections: number;
    let requests: number;
    const open = new Set<Socket>();
    /** What the server writes for its n-th request (1-based): the raw answer, or null to close the socket unanswered. */
    let script: (n: number) => string | null;
    const ok = (body: string, extra = ''): string => `HTTP/1.1 200 OK\r\nContent-Length: ${Buffer.byteLength(body)}\r\n${extra}\r\n${body}`;
    const sent = (n: number): string => JSON.stringify({ ok: true, result: { message_id: n, chat: { id: 1 } } });

    beforeEach(async () => {
      connections = 0;
      requests = 0;
      server = createNetServer((socket) => {
        connections++;
        open.add(socket);
        socket.on('close', () => open.delete(socket));
        let buf = '';
        socket.on('data', (d: Buffer) => {
          buf += d.toString('latin1');
          // One request is a head and a body of Content-Length bytes (the client sends JSON, never chunked).
          for (;;) {
            const headEnd = buf.indexOf('\r\n\r\n');
            if (headEnd < 0) return;
            const length = Number(/content-length: *(\d+)/i.exec(buf.slice(0, headEnd))?.[1] ?? 0);
            if (buf.length < headEnd + 4 + length) return;
            assert.match(buf, new RegExp(`^POST /bot${TOKEN}/sendMessage HTTP/1.1\r\n`));
            buf = buf.slice(headEnd + 4 + length);
            const out = script(++requests);
            if (out === null) socket.destroy();
            else socket.write(out);
          }
        });
      });
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
      apiRoot = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
    });

    afterEach(async () => {
      for (const s of open) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    });

    const clientFor = (o: { timeoutMs?: number; maxConnections?: number } = {}): TelegrafClient =>
      new TelegrafClient({ token: TOKEN, apiRoot, timeoutMs: o.timeoutMs ?? 2_000, ...(o.maxConnections ? { maxConnections: o.maxConnections } : {}) });

    it('reads chunked answers: a result, and a 429 with its retry_after', async () => {
      const chunked = (status: string, body: string): string =>
        `HTTP/1.1 ${status}\r\nTransfer-Encoding: chunked\r\n\r\n${body
          .match(/.{1,7}/g)!
          .map((part) => `${part.length.toString(16)}\r\n${part}\r\n`)
          .join('')}0\r\n\r\n`;
      script = (n) =>
        n === 1
          ? chunked('200 OK', sent(41))
          : chunked(
              '429 Too Many Requests',
              JSON.stringify({ ok: false, error_code: 429, description: 'Too Many Requests: retry after 7', parameters: { retry_after: 7 } }),
            );
      // One connection: undici reuses a socket only an event-loop turn after its answer, so a call
      // made at once would open a second one; with a cap of 1 it waits for the first.
      const c = clientFor({ maxConnections: 1 });
      assert.equal((await c.sendMessage(1, 'a')).message_id, 41);
      const e = await rejection(c.sendMessage(1, 'b'), TelegramRateLimited);
      assert.equal(e.retryAfterSec, 7);
      assert.equal(connections, 1, 'a chunked answer keeps the connection');
      await c.close();
    });

    it('reads an answer delimited by the close (no length, not chunked), then opens a new connection', async () => {
      script = (n) => (n === 1 ? `HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n${sent(1)}` : ok(sent(n)));
      // The close-delimited answer ends only when the server closes: do so once it is written.
      server.on('connection', (s) => s.on('data', () => requests === 1 && setImmediate(() => s.end())));
      const c = clientFor();
      assert.equal((await c.sendMessage(1, 'a')).message_id, 1);
      assert.equal((await c.sendMessage(1, 'b')).message_id, 2);
      assert.equal(connections, 2);
      await c.close();
    });

    it('reuses one connection for calls in turn; a Connection: close answer is not reused', async () => {
      script = (n) => (n === 2 ? ok(sent(2), 'Connection: close\r\n') : ok(sent(n)));
      const c = clientFor({ maxConnections: 1 });
      for (let i = 1; i <= 4; i++) assert.equal((await c.sendMessage(1, `m${i}`)).message_id, i);
      assert.equal(connections, 2);
      await c.close();
    });

    it('a connection closed before the answer → TelegramTransient network; the next call gets a fresh one', async () => {
      script = (n) => (n === 1 ? null : ok(sent(n)));
      const c = clientFor();
      const e = await rejection(c.sendMessage(1, 'a'), TelegramTransient);
      assert.equal(e.reason, 'network');
      assert.equal((await c.sendMessage(1, 'b')).message_id, 2);
      assert.equal(connections, 2);
      await c.close();
    });

    it('an answer that is not HTTP → TelegramTransient network (undici’s parser rejects it)', async () => {
      script = () => 'SSH-2.0-OpenSSH_9.6\r\n\r\n';
      const c = clientFor();
      const e = await rejection(c.sendMessage(1, 'a'), TelegramTransient);
      assert.equal(e.reason, 'network');
      assert.match(e.message, /does not match the HTTP\/1\.1 protocol/);
      await c.close();
    });

    it('at most maxConnections are open: a burst queues for them and all of it is answered', async () => {
      script = (n) => ok(sent(n));
      const c = clientFor({ maxConnections: 2 });
      const answers = await Promise.all(Array.from({ length: 20 }, (_, i) => c.sendMessage(1, `m${i}`)));
      assert.deepEqual(
        answers.map((a) => a.message_id).sort((a, b) => a - b),
        Array.from({ length: 20 }, (_, i) => i + 1),
      );
      assert.equal(connections, 2);
      await c.close();
    });

    it('the timeout covers the wait for a connection; a call that timed out while queued is never sent', async () => {
      // Request 1 is left hanging (the head is sent, the body never completes).
      script = (n) => (n === 1 ? 'HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{"slow' : ok(sent(n)));
      const c = clientFor({ maxConnections: 1, timeoutMs: 300 });
      const first = rejection(c.sendMessage(1, 'hangs'), TelegramTransient);
      const started = performance.now();
      await new Promise<void>((r) => server.once('connection', (s) => s.once('data', () => r())));
      // The only connection is busy: this call waits in the pool's queue and times out there, at its own deadline.
      const queued = c.sendMessage(2, 'queued');
      const e = await rejection(queued, TelegramTransient);
      assert.equal(e.reason, 'timeout');
      assert.ok(performance.now() - started < 300 + 250, `the queued call waited ${(performance.now() - started).toFixed(0)} ms`);
      assert.equal((await first).reason, 'timeout');
      // The next call is the server's 2nd request: the queued one was dropped unsent.
      assert.equal((await c.sendMessage(3, 'after')).message_id, 2);
      await c.close();
    });

    it('close() closes the pool’s connections; calls after it fail as TelegramTransient network', async () => {
      script = (n) => ok(sent(n));
      const c = clientFor();
      await Promise.all([c.sendMessage(1, 'a'), c.sendMessage(2, 'b'), c.sendMessage(3, 'c')]);
      assert.ok(open.size >= 1);
      const closed = Promise.all([...open].map((s) => new Promise((r) => s.once('close', r))));
      await c.close();
      await closed;
      assert.equal(open.size, 0);
      const e = await rejection(c.sendMessage(4, 'late'), TelegramTransient);
      assert.equal(e.reason, 'network');
    });
  });

  describe('uploads', () => {
    it('sendMediaGroup with Buffer uploads arrives as uploads with its captions', async () => {
      const items: PhotoItem[] = [
        { photo: { kind: 'bytes', data: png(1000, 1), filename: 'one.png' }, caption: '<b>first</b>', parseMode: 'HTML' },
        { photo: { kind: 'bytes', data: png(2000, 2), filename: 'two.png' }, caption: 'second' },
        { photo: { kind: 'bytes', data: png(3000, 3), filename: 'three.png' } },
      ];
      const sent = await client.sendMediaGroup(7001, items);
      assert.equal(sent.length, 3);
      const [entry, ...rest] = sandbox.delivered(7001);
      assert.equal(rest.length, 0);
      assert.equal(entry?.method, 'sendMediaGroup');
      assert.equal(entry?.mediaCount, 3);
      assert.deepEqual(
        entry?.media?.map((m) => ({ source: m.source, bytes: m.bytes, caption: m.caption })),
        [
          { source: 'upload', bytes: 1000, caption: '<b>first</b>' },
          { source: 'upload', bytes: 2000, caption: 'second' },
          { source: 'upload', bytes: 3000, caption: undefined },
        ],
      );
    });

    it('the same items can be re-sent after a failure (fresh payload per call)', async () => {
      const items: PhotoItem[] = [
        { photo: { kind: 'bytes', data: png(1500, 4), filename: 'a.png' }, caption: 'A' },
        { photo: { kind: 'bytes', data: png(2500, 5), filename: 'b.png' }, caption: 'B' },
      ];
      sandbox.injectFailure({ status: 502, method: 'sendMediaGroup', chatId: 7002 });
      await rejection(client.sendMediaGroup(7002, items), TelegramTransient);
      const sent = await client.sendMediaGroup(7002, items);
      assert.equal(sent.length, 2);
      const [entry] = sandbox.delivered(7002);
      assert.deepEqual(
        entry?.media?.map((m) => [m.source, m.bytes, m.caption]),
        [
          ['upload', 1500, 'A'],
          ['upload', 2500, 'B'],
        ],
      );
      // The caller's items are untouched (telegraf stringifies payloads in place; ours are fresh per call).
      assert.ok(items[0]!.photo.kind === 'bytes' && items[0]!.photo.data.equals(png(1500, 4)));
      assert.equal(items[0]!.caption, 'A');
    });

    it('photos by URL go as JSON requests (no upload): sendPhoto and sendMediaGroup', async () => {
      const url = (n: number): PhotoItem => ({ photo: { kind: 'url', url: `http://127.0.0.1:9/p${n}.jpg` }, caption: `<i>c${n}</i>`, parseMode: 'HTML' });
      const one = await client.sendPhoto(7004, url(1));
      assert.equal(one.chat.id, 7004);
      const album = await client.sendMediaGroup(7005, [url(2), { photo: { kind: 'url', url: 'http://127.0.0.1:9/p3.jpg' } }]);
      assert.equal(album.length, 2);
      assert.deepEqual(
        [...sandbox.delivered(7004), ...sandbox.delivered(7005)].map((e) => [e.method, e.media?.map((m) => [m.source, m.caption])]),
        [
          ['sendPhoto', [['url', '<i>c1</i>']]],
          [
            'sendMediaGroup',
            [
              ['url', '<i>c2</i>'],
              ['url', undefined],
            ],
          ],
        ],
      );
    });

    it('sendPhoto upload re-sent after a failure carries the whole file', async () => {
      const item: PhotoItem = { photo: { kind: 'bytes', data: png(4321, 6), filename: 'p.png' }, caption: 'photo' };
      sandbox.injectFailure({ status: 503, method: 'sendPhoto', chatId: 7003 });
      await rejection(client.sendPhoto(7003, item), TelegramTransient);
      await client.sendPhoto(7003, item);
      const [entry] = sandbox.delivered(7003);
      assert.equal(entry?.caption, 'photo');
      assert.deepEqual(
        entry?.media?.map((m) => [m.source, m.bytes]),
        [['upload', 4321]],
      );
    });
  });

  // Last: mocha runs nested describes after the tests of this level.
  describe('summary', () => {
    it('classified every error kind in this file without leaking the token', () => {
      const kinds = new Set(seen.map((e) => e.code));
      for (const code of ['TG_RATE_LIMITED', 'TG_PERMANENT', 'TG_MIGRATED', 'TG_PARSE_ERROR', 'TG_TOO_LONG', 'TG_UNAUTHORIZED', 'TG_TRANSIENT']) {
        assert.ok(kinds.has(code as TelegramApiError['code']), `no ${code} seen`);
      }
      for (const e of seen) assertNoToken(e);
    });
  });
});
