import assert from 'node:assert/strict';
import { telegramTarget } from '../../src/startup/sandbox';
import { ConfigError } from '../../src/errors';
import { loadConfig } from '../../src/config/core';

const TOKEN = '123456:TEST-token-abcdefghijklmnopqrstuvwxyz';

describe('startup: Telegram or the sandbox, decided before any connection', () => {
  const target = (env: Record<string, string>) => telegramTarget(loadConfig(env));

  it('a token always means Telegram', () => {
    assert.equal(target({ TELEGRAM_BOT_TOKEN: TOKEN }), 'telegram');
    assert.equal(target({ TELEGRAM_BOT_TOKEN: TOKEN, DATABASE_URL: 'mysql://root@db/shop' }), 'telegram');
  });

  it('no token: the sandbox on a development setup (DATABASE_URL unset) or when asked for', () => {
    assert.equal(target({}), 'sandbox');
    assert.equal(target({ DATABASE_URL: 'mysql://root@db/shop', TELEGRAM_SANDBOX: '1' }), 'sandbox');
  });

  it('no token with a DATABASE_URL: refuses, naming TELEGRAM_BOT_TOKEN, DATABASE_URL and TELEGRAM_SANDBOX', () => {
    assert.throws(
      () => target({ DATABASE_URL: 'mysql://root@db/shop' }),
      (e: unknown) => e instanceof ConfigError && e.variable === 'TELEGRAM_BOT_TOKEN' && /DATABASE_URL/.test(e.message) && /TELEGRAM_SANDBOX=1/.test(e.message),
    );
  });

  it('TELEGRAM_SANDBOX=0 forbids it even on a development setup', () => {
    assert.throws(() => target({ TELEGRAM_SANDBOX: '0' }), /TELEGRAM_BOT_TOKEN: not set, and TELEGRAM_SANDBOX=0/);
  });

  it('a bad TELEGRAM_SANDBOX value is a config error naming it', () => {
    assert.throws(() => loadConfig({ TELEGRAM_SANDBOX: 'maybe' }), /TELEGRAM_SANDBOX: expected one of/);
  });
});
