import assert from 'node:assert/strict';
import { DEFAULTS, describeConfig, loadConfig } from '../../src/config/core';
import { ConfigError } from '../../src/errors';

const TOKEN = '123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw';

/** Runs loadConfig and returns the ConfigError it must throw. */
function configError(env: Record<string, string>): ConfigError {
  try {
    loadConfig(env);
  } catch (e) {
    assert.ok(e instanceof ConfigError, `expected a ConfigError, got ${String(e)}`);
    assert.equal(e.code, 'CONFIG_INVALID');
    return e;
  }
  assert.fail(`loadConfig(${JSON.stringify(env)}) did not throw`);
}

/** Asserts the error names `variable` (in the message and the field) and that the message matches `form`. */
function assertNames(env: Record<string, string>, variable: string, form: RegExp): ConfigError {
  const e = configError(env);
  assert.equal(e.variable, variable);
  assert.ok(e.message.startsWith(`${variable}: `), `message should name ${variable}: ${e.message}`);
  assert.match(e.message, form);
  return e;
}

describe('config: loadConfig', () => {
  it('has the documented defaults for an empty environment', () => {
    const c = loadConfig({});
    assert.equal(c.databaseUrl, 'mysql://root@127.0.0.1:3306/shop_notify');
    assert.equal(c.natsUrl, 'nats://127.0.0.1:4222');
    assert.equal(c.telegramBotToken, undefined);
    assert.equal(c.telegramApiRoot, 'https://api.telegram.org/');
    assert.equal(c.telegramGlobalRate, 30);
    assert.equal(c.telegramChatRate, 1);
    assert.equal(c.telegramGroupRatePerMin, 20);
    assert.equal(c.telegramMaxAttempts, 5);
    assert.equal(c.role, 'all');
    assert.equal(c.logLevel, 'info');
    assert.equal(c.metricsPort, 9464);
    assert.equal(c.shardCount, 64);
    assert.equal(c.migrateOnStart, true);
    assert.equal(c.retryBaseMs, 1000);
    assert.equal(c.retryMaxMs, 300_000);
    assert.equal(c.outboxPollMs, 1000);
    assert.equal(c.natsUser, undefined);
    assert.equal(c.natsPassword, undefined);
  });

  it('treats blank values as unset', () => {
    const c = loadConfig({ TELEGRAM_GLOBAL_RATE: '   ', DATABASE_URL: '' });
    assert.equal(c.telegramGlobalRate, 30);
    assert.equal(c.databaseUrl, DEFAULTS.DATABASE_URL);
  });

  it('reads valid values', () => {
    const c = loadConfig({
      TELEGRAM_BOT_TOKEN: TOKEN,
      TELEGRAM_GLOBAL_RATE: '300',
      TELEGRAM_GROUP_RATE_PER_MIN: '200',
      TELEGRAM_MAX_ATTEMPTS: '3',
      DATABASE_URL: 'mariadb://u:p@db:3307/shop',
      NATS_URL: 'nats://a:4222,nats://b:4222',
      LOG_LEVEL: 'DEBUG',
      METRICS_PORT: '0',
      ROLE: 'worker',
      SHARD_COUNT: '128',
      MIGRATE_ON_START: 'no',
    });
    assert.equal(c.telegramBotToken, TOKEN);
    assert.equal(c.telegramGlobalRate, 300);
    assert.equal(c.telegramGroupRatePerMin, 200);
    assert.equal(c.telegramMaxAttempts, 3);
    assert.equal(c.databaseUrl, 'mariadb://u:p@db:3307/shop');
    assert.equal(c.natsUrl, 'nats://a:4222,nats://b:4222');
    assert.equal(c.logLevel, 'debug');
    assert.equal(c.metricsPort, 0);
    assert.equal(c.role, 'worker');
    assert.equal(c.shardCount, 128);
    assert.equal(c.migrateOnStart, false);
  });

  it('TELEGRAM_CHAT_RATE accepts fractions and values far above Telegram’s', () => {
    assert.equal(loadConfig({ TELEGRAM_CHAT_RATE: '0.5' }).telegramChatRate, 0.5);
    assert.equal(loadConfig({ TELEGRAM_CHAT_RATE: '500' }).telegramChatRate, 500);
    assert.equal(loadConfig({ TELEGRAM_GLOBAL_RATE: '0.25' }).telegramGlobalRate, 0.25);
    assert.equal(loadConfig({ TELEGRAM_GROUP_RATE_PER_MIN: '1.5' }).telegramGroupRatePerMin, 1.5);
  });

  it('SHARD_FORMATION_MS: 1 s by default, 0 (take shards at the first view) to 60 s', () => {
    assert.equal(loadConfig({}).shardFormationMs, 1_000);
    assert.equal(loadConfig({ SHARD_FORMATION_MS: '0' }).shardFormationMs, 0);
    assert.equal(loadConfig({ SHARD_FORMATION_MS: '5s' }).shardFormationMs, 5_000);
    assertNames({ SHARD_FORMATION_MS: '2m' }, 'SHARD_FORMATION_MS', /between 0 ms and 1 m/);
  });

  it('TELEGRAM_GROUP_WINDOW_MS: a minute by default, any duration for tests (the rate stays per minute)', () => {
    assert.equal(loadConfig({}).telegramGroupWindowMs, 60_000);
    assert.equal(loadConfig({ TELEGRAM_GROUP_WINDOW_MS: '3s' }).telegramGroupWindowMs, 3_000);
    assertNames({ TELEGRAM_GROUP_WINDOW_MS: '0' }, 'TELEGRAM_GROUP_WINDOW_MS', /100/);
  });

  describe('each invalid variable names itself and the expected form', () => {
    for (const value of ['abc', '0', '-1']) {
      it(`TELEGRAM_GLOBAL_RATE=${value}`, () => {
        const e = assertNames({ TELEGRAM_GLOBAL_RATE: value }, 'TELEGRAM_GLOBAL_RATE', /expected a number greater than 0/);
        assert.ok(e.message.includes(value), e.message);
      });
    }

    for (const value of ['0', '-2', 'fast']) {
      it(`TELEGRAM_CHAT_RATE=${value}`, () => {
        assertNames({ TELEGRAM_CHAT_RATE: value }, 'TELEGRAM_CHAT_RATE', /expected a number greater than 0/);
      });
    }

    for (const value of ['0', 'twenty']) {
      it(`TELEGRAM_GROUP_RATE_PER_MIN=${value}`, () => {
        assertNames({ TELEGRAM_GROUP_RATE_PER_MIN: value }, 'TELEGRAM_GROUP_RATE_PER_MIN', /expected a number greater than 0/);
      });
    }

    it('TELEGRAM_MAX_ATTEMPTS=2.5 (must be an integer)', () => {
      assertNames({ TELEGRAM_MAX_ATTEMPTS: '2.5' }, 'TELEGRAM_MAX_ATTEMPTS', /expected an integer between 1 and \d+, got "2\.5"/);
    });

    it('TELEGRAM_MAX_ATTEMPTS=0', () => {
      assertNames({ TELEGRAM_MAX_ATTEMPTS: '0' }, 'TELEGRAM_MAX_ATTEMPTS', /expected an integer between 1 and/);
    });

    it('DATABASE_URL=postgres://… (wrong scheme)', () => {
      const e = assertNames(
        { DATABASE_URL: 'postgres://u:pg-secret@h:5432/db' },
        'DATABASE_URL',
        /expected a URL with scheme mysql: or mariadb:, got "postgres:"/,
      );
      assert.ok(!e.message.includes('pg-secret'), e.message);
    });

    it('DATABASE_URL that is not a URL, without echoing its password', () => {
      const e = assertNames({ DATABASE_URL: 'mysql://shop:hunter2-secret@[bad-host/db' }, 'DATABASE_URL', /expected a URL \(mysql: or mariadb:\)/);
      assert.ok(!e.message.includes('hunter2-secret'), e.message);
      assert.ok(e.message.includes('shop:***@'), e.message);
    });

    it('NATS_URL=http://x', () => {
      assertNames({ NATS_URL: 'http://x' }, 'NATS_URL', /expected nats:\/\/host:port, got scheme "http:"/);
    });

    it('NATS_URL with one bad entry in a list', () => {
      assertNames({ NATS_URL: 'nats://a:4222,http://b:4222' }, 'NATS_URL', /"http:"/);
    });

    it('LOG_LEVEL=loud', () => {
      assertNames({ LOG_LEVEL: 'loud' }, 'LOG_LEVEL', /expected one of fatal, error, warn, info, debug, trace, silent, got "loud"/);
    });

    it('METRICS_PORT=70000', () => {
      assertNames({ METRICS_PORT: '70000' }, 'METRICS_PORT', /expected an integer between 0 and 65535, got 70000/);
    });

    it('ROLE=boss', () => {
      assertNames({ ROLE: 'boss' }, 'ROLE', /expected one of all, worker, gateway, got "boss"/);
    });

    it('RETRY_MAX_MS < RETRY_BASE_MS', () => {
      assertNames({ RETRY_BASE_MS: '5000', RETRY_MAX_MS: '1000' }, 'RETRY_MAX_MS', /expected a value ≥ RETRY_BASE_MS \(5000\), got 1000/);
    });

    it('SHARD_LEASE_TTL_MS too short for the budget grants', () => {
      assertNames({ SHARD_LEASE_TTL_MS: '2000' }, 'SHARD_LEASE_TTL_MS', /expected at least 3000 .*got 2000/);
      // A slower global rate has a longer window, so it needs a longer lease.
      assertNames({ TELEGRAM_GLOBAL_RATE: '0.5', SHARD_LEASE_TTL_MS: '4000' }, 'SHARD_LEASE_TTL_MS', /expected at least 5000/);
    });

    it('SHARD_COUNT=0', () => {
      assertNames({ SHARD_COUNT: '0' }, 'SHARD_COUNT', /expected an integer between 1 and 4096, got 0/);
    });

    it('MIGRATE_ON_START=maybe', () => {
      assertNames({ MIGRATE_ON_START: 'maybe' }, 'MIGRATE_ON_START', /expected one of true\/false\/1\/0\/yes\/no\/on\/off, got "maybe"/);
    });

    it('TELEGRAM_API_ROOT=ftp://x', () => {
      assertNames({ TELEGRAM_API_ROOT: 'ftp://x/' }, 'TELEGRAM_API_ROOT', /expected a URL with scheme http: or https:/);
    });

    for (const bad of ['not-a-token', '123456:short', 'abc:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw', '123456:AAHdqTcvCH1vGWJx fSeofSAs0K5PALDsaw']) {
      it(`a malformed TELEGRAM_BOT_TOKEN (${bad.length} chars) is refused without echoing it`, () => {
        const e = assertNames({ TELEGRAM_BOT_TOKEN: bad }, 'TELEGRAM_BOT_TOKEN', /expected a bot token of the form <bot id>:<secret>/);
        assert.ok(!e.message.includes(bad), `message leaks the value: ${e.message}`);
        // Neither half of it either.
        for (const piece of bad.split(':')) if (piece.length >= 6) assert.ok(!e.message.includes(piece), e.message);
        assert.ok(!JSON.stringify(e).includes(bad), 'toJSON leaks the value');
      });
    }
  });

  describe('TELEGRAM_API_ROOT', () => {
    it('gets a trailing slash when it has none', () => {
      assert.equal(loadConfig({ TELEGRAM_API_ROOT: 'http://127.0.0.1:8081' }).telegramApiRoot, 'http://127.0.0.1:8081/');
      assert.equal(loadConfig({ TELEGRAM_API_ROOT: 'https://proxy.example/tg' }).telegramApiRoot, 'https://proxy.example/tg/');
    });

    it('keeps one that has it', () => {
      assert.equal(loadConfig({ TELEGRAM_API_ROOT: 'https://proxy.example/tg/' }).telegramApiRoot, 'https://proxy.example/tg/');
    });
  });

  describe('describeConfig', () => {
    it('never contains the bot token, the NATS password or the NATS token', () => {
      const natsPassword = 'n4ts-s3cret-pass';
      const natsToken = 'n4ts-t0ken-value';
      // One NATS mechanism at a time (src/config/nats-auth.ts): user+password, then token.
      const c = loadConfig({ TELEGRAM_BOT_TOKEN: TOKEN, NATS_USER: 'svc', NATS_PASSWORD: natsPassword });
      const text = JSON.stringify(describeConfig(c)) + JSON.stringify(describeConfig(loadConfig({ NATS_TOKEN: natsToken })));
      assert.ok(!text.includes(TOKEN), text);
      assert.ok(!text.includes(TOKEN.split(':')[1]!), text);
      assert.ok(!text.includes(natsPassword), text);
      assert.ok(!text.includes(natsToken), text);
      const d = describeConfig(c);
      assert.equal(d.telegramBotToken, '***');
      assert.equal(d.natsPassword, '***');
      assert.equal(d.natsUser, 'svc');
    });

    it('redacts the password of a DATABASE_URL and keeps the rest', () => {
      const c = loadConfig({ DATABASE_URL: 'mysql://shop:hunter2-secret@db.internal:3306/shop' });
      const d = describeConfig(c);
      assert.equal(typeof d.databaseUrl, 'string');
      assert.ok(!String(d.databaseUrl).includes('hunter2-secret'));
      assert.match(String(d.databaseUrl), /^mysql:\/\/shop:\*\*\*@db\.internal:3306\/shop$/);
      assert.ok(!JSON.stringify(d).includes('hunter2-secret'));
    });

    it('says when there is no token (in-process sandbox)', () => {
      assert.match(String(describeConfig(loadConfig({})).telegramBotToken), /sandbox/);
    });
  });
});

describe('config: durations', () => {
  it('core _MS variables take units too, and bare numbers stay milliseconds', () => {
    const c = loadConfig({ OUTBOX_POLL_MS: '2s', CLAIM_LEASE_MS: '2m', SHUTDOWN_TIMEOUT_MS: '45000', RETRY_MAX_MS: '1h' });
    assert.equal(c.outboxPollMs, 2_000);
    assert.equal(c.claimLeaseMs, 120_000);
    assert.equal(c.shutdownTimeoutMs, 45_000);
    assert.equal(c.retryMaxMs, 3_600_000);
  });

  it('a bad duration names the variable, the bounds and the syntax', () => {
    assert.throws(
      () => loadConfig({ OUTBOX_POLL_MS: '2 fortnights' }),
      (e: unknown) => e instanceof ConfigError && e.variable === 'OUTBOX_POLL_MS' && /between 10 ms and 1 m .*1500ms, 30s/.test(e.message),
    );
    assert.throws(
      () => loadConfig({ CLAIM_LEASE_MS: '2d' }),
      (e: unknown) => e instanceof ConfigError && e.variable === 'CLAIM_LEASE_MS',
    );
  });
});
