import assert from 'node:assert/strict';
import { registerSecret, scrubSecrets } from '../../src/log';
import { captureLogger } from '../helpers/services';

// Shaped like a real token so the URL pattern matches it too; the secret half is unique to this file.
const TOKEN = '7712345678:AAF-logtest_secret_Zq9xY8wV7uT6sR5';
const SECRET_HALF = TOKEN.split(':')[1]!;
// A registered secret that does not look like a bot token: only registration can scrub it.
const NATS_PASSWORD = 'pl41n-nats-pa55word';

function assertClean(text: string): void {
  assert.ok(text.length > 0, 'nothing was logged');
  assert.ok(!text.includes(TOKEN), `token leaked: ${text}`);
  assert.ok(!text.includes(SECRET_HALF), `token secret leaked: ${text}`);
  assert.ok(!text.includes(NATS_PASSWORD), `password leaked: ${text}`);
}

describe('log: secrets never reach a log line', () => {
  before(() => {
    registerSecret(TOKEN);
    registerSecret(NATS_PASSWORD);
  });

  it('scrubs the token from a message', () => {
    const cap = captureLogger('debug');
    cap.log.info(`starting bot with token ${TOKEN} now`);
    assertClean(cap.text());
    const [line] = cap.lines();
    assert.match(String(line?.msg), /starting bot with token <redacted> now/);
  });

  it('scrubs the token from an error message and its stack', () => {
    const cap = captureLogger('debug');
    const err = new Error(`request to https://api.telegram.org/bot${TOKEN}/getMe failed, token=${TOKEN}`);
    cap.log.error({ err }, 'telegram call failed');
    cap.log.error(err);
    assertClean(cap.text());
    const lines = cap.lines();
    assert.equal(lines.length, 2);
    const logged = lines[0]?.err as { message?: string; stack?: string } | undefined;
    assert.ok(logged?.message, 'the error was serialized');
    assert.match(logged.message, /failed/);
  });

  it('scrubs the token from a nested object and an array', () => {
    const cap = captureLogger('debug');
    cap.log.warn({ ctx: { call: { cfg: { botToken: TOKEN, list: ['x', `a ${TOKEN} b`] } } }, nats: { pass: NATS_PASSWORD } }, 'nested');
    assertClean(cap.text());
    const line = cap.lines()[0] as { ctx: { call: { cfg: { botToken: string; list: string[] } } } };
    assert.equal(line.ctx.call.cfg.botToken, '<redacted>');
    assert.equal(line.ctx.call.cfg.list[1], 'a <redacted> b');
  });

  it('scrubs the token from a Telegram method URL', () => {
    const cap = captureLogger('debug');
    cap.log.info({ url: `http://127.0.0.1:8081/bot${TOKEN}/sendMessage` }, `POST /bot${TOKEN}/sendMessage`);
    assertClean(cap.text());
    const line = cap.lines()[0]!;
    assert.match(String(line.url), /\/bot<redacted>\/sendMessage$/);
    assert.match(String(line.msg), /^POST \/bot<redacted>\/sendMessage$/);
  });

  it('scrubs an unregistered token that appears in a method URL', () => {
    const other = '99887766:BBothertokenNotRegistered_123';
    const cap = captureLogger('debug');
    cap.log.info(`GET /bot${other}/getMe`);
    assert.ok(!cap.text().includes(other.split(':')[1]!), cap.text());
    assert.match(cap.text(), /bot<redacted>\/getMe/);
  });

  it('scrubs in child loggers and their bindings', () => {
    const cap = captureLogger('debug');
    const child = cap.log.child({ component: 'telegram', endpoint: `/bot${TOKEN}/` });
    child.info({ detail: TOKEN }, 'child line');
    assertClean(cap.text());
  });

  it('censors the redact paths token, password and authorization', () => {
    const cap = captureLogger('debug');
    cap.log.info(
      {
        token: 'tok-plain-value-1',
        password: 'pw-plain-value-2',
        authorization: 'Bearer auth-plain-value-3',
        nats: { token: 'tok-plain-value-4', password: 'pw-plain-value-5' },
        headers: { authorization: 'Basic auth-plain-value-6' },
      },
      'with credentials',
    );
    const text = cap.text();
    for (let i = 1; i <= 6; i++) assert.ok(!text.includes(`plain-value-${i}`), `value ${i} leaked: ${text}`);
    const line = cap.lines()[0] as Record<string, unknown> & { nats: Record<string, unknown>; headers: Record<string, unknown> };
    assert.equal(line.token, '<redacted>');
    assert.equal(line.password, '<redacted>');
    assert.equal(line.authorization, '<redacted>');
    assert.equal(line.nats.token, '<redacted>');
    assert.equal(line.nats.password, '<redacted>');
    assert.equal(line.headers.authorization, '<redacted>');
    assert.equal(line.msg, 'with credentials');
  });

  it('leaves ordinary lines alone', () => {
    const cap = captureLogger('debug');
    cap.log.info({ chatId: 42, text: 'hello bot world' }, 'sent 1 message');
    const line = cap.lines()[0]!;
    assert.equal(line.chatId, 42);
    assert.equal(line.text, 'hello bot world');
    assert.equal(line.msg, 'sent 1 message');
  });

  it('scrubs a registered secret with characters JSON escapes (quote, backslash)', () => {
    const tricky = 'p"ss\\w0rd-json-escaped';
    registerSecret(tricky);
    const cap = captureLogger('debug');
    cap.log.info({ nats: { pass: tricky } }, `connect with ${tricky}`);
    const line = cap.lines()[0] as { msg: string; nats: { pass: string } };
    assert.ok(!line.msg.includes(tricky), line.msg);
    assert.equal(line.nats.pass, '<redacted>');
    assert.ok(!cap.text().includes('w0rd-json-escaped'), cap.text());
  });

  it('scrubSecrets on a plain string', () => {
    assert.equal(scrubSecrets(`x ${TOKEN} y ${NATS_PASSWORD}`), 'x <redacted> y <redacted>');
  });
});
