import assert from 'node:assert/strict';
import { decide, type PolicyJob, type PolicyLimits, type LimiterView } from '../../src/telegram/policy';
import { EMPTY_FLOOD } from '../../src/limits/flood';
import type { Part } from '../../src/outbox/plan';
import { asPlainText, splitPart } from '../../src/outbox/replan';
import {
  TelegramBadRequest,
  TelegramMigrated,
  TelegramParseError,
  TelegramPermanent,
  TelegramRateLimited,
  TelegramTooLong,
  TelegramTransient,
  TelegramUnauthorized,
} from '../../src/telegram/errors';

/** A fake clock: every row is decided at this instant. */
const NOW = 1_700_000_000_000;
const limits: PolicyLimits = { maxAttempts: 3, retryBaseMs: 1_000, retryMaxMs: 60_000, maxRetryAfterMs: 3_600_000, unauthorizedPauseMs: 60_000 };
const view = (over: Partial<LimiterView> = {}): LimiterView => ({ now: NOW, chatNearLimit: false, flood: EMPTY_FLOOD, random: () => 0.5, ...over });
const text = (t: string, parseMode: string | null = 'HTML'): Part => ({ method: 'sendMessage', text: t, parseMode });
const job = (over: Partial<PolicyJob> = {}): PolicyJob => ({ chatId: 42, part: { method: 'sendMessage', textLength: 9 }, plain: false, attempts: 0, ...over });

describe('policy: the decision table (one row per test)', () => {
  it('429 for a chat near its own limit → wait retry_after in the chat scope', () => {
    const a = decide(new TelegramRateLimited('sendMessage', 'Too Many Requests: retry after 3', 3), job(), limits, view({ chatNearLimit: true }));
    assert.equal(a.kind, 'throttled');
    if (a.kind !== 'throttled') return;
    assert.equal(a.scope, 'chat');
    assert.equal(a.until, NOW + 3_000);
    assert.equal(a.clampedFromMs, undefined);
  });

  it('429 for a group → the group scope', () => {
    const a = decide(new TelegramRateLimited('sendMessage', 'x', 60), job({ chatId: -100123 }), limits, view({ chatNearLimit: true }));
    assert.equal(a.kind === 'throttled' && a.scope, 'group');
  });

  it('429 for one lone chat not near its limit → still only that chat (never pauses the cluster)', () => {
    const a = decide(new TelegramRateLimited('sendMessage', 'x', 1), job(), limits, view());
    assert.equal(a.kind === 'throttled' && a.scope, 'chat');
  });

  it('429 for a second chat within the flood window, neither near its limit → global', () => {
    const first = decide(new TelegramRateLimited('sendMessage', 'x', 1), job({ chatId: 1 }), limits, view());
    assert.equal(first.kind, 'throttled');
    if (first.kind !== 'throttled') return;
    const second = decide(new TelegramRateLimited('sendMessage', 'x', 2), job({ chatId: 2 }), limits, view({ now: NOW + 500, flood: first.flood }));
    assert.equal(second.kind === 'throttled' && second.scope, 'global');
    assert.equal(second.kind === 'throttled' && second.until, NOW + 500 + 2_000);
  });

  it('429 for a second chat that is near its own limit → that chat, not global', () => {
    const first = decide(new TelegramRateLimited('sendMessage', 'x', 1), job({ chatId: 1 }), limits, view());
    if (first.kind !== 'throttled') return assert.fail(first.kind);
    const second = decide(
      new TelegramRateLimited('sendMessage', 'x', 1),
      job({ chatId: 2 }),
      limits,
      view({ now: NOW + 500, flood: first.flood, chatNearLimit: true }),
    );
    assert.equal(second.kind === 'throttled' && second.scope, 'chat');
  });

  it('429 for a second chat after the flood window → chat again', () => {
    const first = decide(new TelegramRateLimited('sendMessage', 'x', 1), job({ chatId: 1 }), limits, view());
    if (first.kind !== 'throttled') return assert.fail(first.kind);
    const second = decide(new TelegramRateLimited('sendMessage', 'x', 1), job({ chatId: 2 }), limits, view({ now: NOW + 2_500, flood: first.flood }));
    assert.equal(second.kind === 'throttled' && second.scope, 'chat');
  });

  it('429 with a huge retry_after → clamped to the configured maximum, and says so', () => {
    const a = decide(new TelegramRateLimited('sendMessage', 'x', 30 * 86_400), job(), limits, view());
    if (a.kind !== 'throttled') return assert.fail(a.kind);
    assert.equal(a.retryAfterMs, 3_600_000);
    assert.equal(a.until, NOW + 3_600_000);
    assert.equal(a.clampedFromMs, 30 * 86_400_000);
  });

  it('400 with migrate_to_chat_id → follow the migration', () => {
    const a = decide(new TelegramMigrated('sendMessage', 'upgraded', -1001234), job({ chatId: -5 }), limits, view());
    assert.deepEqual(a, { kind: 'migrate', newChatId: -1001234, note: 'group migrated to -1001234' });
  });

  it('parse error → re-plan the rest as plain text', () => {
    const a = decide(new TelegramParseError('sendMessage', "Bad Request: can't parse entities"), job(), limits, view());
    assert.equal(a.kind, 'plainText');
    assert.match(a.kind === 'plainText' ? a.note : '', /plain text/);
  });

  it('parse error after the plain-text fallback → fail for good', () => {
    const a = decide(new TelegramParseError('sendMessage', 'x'), job({ plain: true }), limits, view());
    assert.equal(a.kind, 'fail');
    assert.equal(a.kind === 'fail' && a.code, 'TG_PARSE_ERROR');
  });

  it('text too long → split the current part', () => {
    const a = decide(
      new TelegramTooLong('sendMessage', 'message is too long', 'text'),
      job({ part: { method: 'sendMessage', textLength: 4096 } }),
      limits,
      view(),
    );
    assert.equal(a.kind, 'split');
  });

  it('text too long for a tiny text → fail (splitting would not help)', () => {
    const a = decide(
      new TelegramTooLong('sendMessage', 'message is too long', 'text'),
      job({ part: { method: 'sendMessage', textLength: 10 } }),
      limits,
      view(),
    );
    assert.equal(a.kind, 'fail');
  });

  it('caption too long → fail (cannot be split)', () => {
    const a = decide(new TelegramTooLong('sendPhoto', 'message caption is too long', 'caption'), job(), limits, view());
    assert.equal(a.kind === 'fail' && a.code, 'TG_TOO_LONG');
  });

  it('blocked by the user → fail for good and mark the recipient', () => {
    const a = decide(new TelegramPermanent('sendMessage', 403, 'Forbidden: bot was blocked by the user', 'blocked'), job(), limits, view());
    assert.deepEqual(a, { kind: 'failRecipient', reason: 'blocked', code: 'TG_PERMANENT', description: 'Forbidden: bot was blocked by the user' });
  });

  it('401 → halt everyone for the configured pause', () => {
    const a = decide(new TelegramUnauthorized('sendMessage', 'Unauthorized'), job(), limits, view());
    assert.equal(a.kind === 'halt' && a.until, NOW + 60_000);
  });

  it('5xx on attempt 1 → retry after backoff (jitter from the fake random)', () => {
    const a = decide(new TelegramTransient('sendMessage', 502, 'Bad Gateway', 'server_error'), job({ attempts: 0 }), limits, view());
    if (a.kind !== 'retry') return assert.fail(a.kind);
    assert.equal(a.delayMs, 750); // base 1000: half fixed + 0.5 × half
    assert.equal(a.at, NOW + 750);
  });

  it('network failure on the last attempt → fail with the count', () => {
    const a = decide(new TelegramTransient('sendMessage', 0, 'network error', 'network'), job({ attempts: 2 }), limits, view());
    assert.equal(a.kind, 'fail');
    assert.match(a.kind === 'fail' ? a.reason : '', /after 3 attempts/);
  });

  it('any other 400 → fail for good', () => {
    const a = decide(new TelegramBadRequest('sendMessage', 400, 'Bad Request: wrong file identifier'), job(), limits, view());
    assert.equal(a.kind === 'fail' && a.code, 'TG_BAD_REQUEST');
  });
});

describe('re-planning parts (the plainText and split actions)', () => {
  it('asPlainText: the rest of a text message becomes plain, accepted parts are kept', () => {
    const parts = asPlainText([text('one'), text('<b>two</b>'), text('three &amp; four')], 1);
    assert.deepEqual(parts, [text('one'), { method: 'sendMessage', text: 'two\nthree & four', parseMode: null }]);
  });

  it('asPlainText: with a photo among the rest, only text parts change', () => {
    const photo: Part = { method: 'sendPhoto', item: { url: 'http://x/y.jpg', caption: 'c' } as never };
    assert.deepEqual(asPlainText([text('<i>a</i>'), photo], 0), [text('a', null), photo]);
  });

  it('splitPart: the current part in two halves, in order, others unchanged', () => {
    const long = 'word '.repeat(40).trim();
    const parts = splitPart([text('a'), text(long, null), text('z')], 1);
    assert.equal(parts.length, 4);
    assert.deepEqual(parts[0], text('a'));
    assert.deepEqual(parts[3], text('z'));
    assert.equal((parts[1] as { text: string }).text + ' ' + (parts[2] as { text: string }).text, long);
  });
});
