import { strict as assert } from 'node:assert';
import { ADS_DEFAULTS, loadAdsConfig } from '../../src/config/ads';
import { classifyHttpError } from '../../src/ads/gateway';
import { visitorHash, windowOf, viewMsgId } from '../../src/ads/views-stream';
import { ConfigError, InputError } from '../../src/errors';

describe('ads config', () => {
  it('has named defaults', () => {
    const c = loadAdsConfig({});
    assert.equal(c.viewDedupWindowMs, 86_400_000);
    assert.equal(c.viewFlushMs, 1000);
    assert.equal(c.viewFlushMax, 5_000);
    assert.equal(c.bumpIntervalMs, 3 * 3_600_000);
    assert.deepEqual(c.trustedProxies, []);
    assert.equal(c.apiToken, undefined);
    assert.equal(c.enqueueSubject, 'notify.enqueue');
    assert.equal(c.gatewayRequestTimeoutMs, ADS_DEFAULTS.GATEWAY_REQUEST_TIMEOUT);
    assert.equal(c.gatewayRequestTimeoutMs, 10_000);
    assert.equal(c.gatewayIdleTimeoutMs, 30_000);
    assert.equal(c.gatewayKeepAliveTimeoutMs, 5_000);
    assert.equal(c.gatewayRetryAfterS, 5);
    assert.equal(c.viewVisitorsPerIp, 5);
  });

  it('reads durations with units', () => {
    const c = loadAdsConfig({ VIEW_DEDUP_WINDOW: '12h', BUMP_INTERVAL: '90m', BUMP_CHECK_MS: '30s', BUMP_LEASE_MS: '2m', RATE_LIMIT_WINDOW: '1500' });
    assert.equal(c.viewDedupWindowMs, 12 * 3_600_000);
    assert.equal(c.bumpIntervalMs, 90 * 60_000);
    assert.equal(c.bumpCheckMs, 30_000);
    assert.equal(c.bumpLeaseMs, 120_000);
    assert.equal(c.rateLimitWindowMs, 1_500);
  });

  const bad: Array<[Record<string, string>, string]> = [
    [{ VIEW_FLUSH_MS: 'soon' }, 'VIEW_FLUSH_MS'],
    [{ VIEW_FLUSH_MAX: '0' }, 'VIEW_FLUSH_MAX'],
    [{ VIEW_DEDUP_WINDOW: '3 weeks' }, 'VIEW_DEDUP_WINDOW'],
    [{ VIEW_DEDUP_WINDOW: '10ms' }, 'VIEW_DEDUP_WINDOW'],
    [{ BUMP_INTERVAL: '-1h' }, 'BUMP_INTERVAL'],
    [{ BUMP_CHECK_MS: '5m', BUMP_LEASE_MS: '1m' }, 'BUMP_LEASE_MS'],
    [{ TRUSTED_PROXIES: '10.0.0.0/8,proxy.local' }, 'TRUSTED_PROXIES'],
    [{ TRUSTED_PROXIES: '10.0.0.0/33' }, 'TRUSTED_PROXIES'],
    [{ ADS_API_TOKEN: 'short' }, 'ADS_API_TOKEN'],
    [{ NATS_SUBJECT_PREFIX: 'no-dot' }, 'NATS_SUBJECT_PREFIX'],
    // One prefix system: the old ads-only variable is refused, not silently ignored.
    [{ ADS_SUBJECT_PREFIX: 'staging.' }, 'ADS_SUBJECT_PREFIX'],
    [{ VIEWS_STREAM: 'a.b' }, 'VIEWS_STREAM'],
    [{ ADS_ENQUEUE_SUBJECT: 'notify.*' }, 'ADS_ENQUEUE_SUBJECT'],
    [{ GATEWAY_PORT: '70000' }, 'GATEWAY_PORT'],
    [{ GATEWAY_REQUEST_TIMEOUT: 'forever' }, 'GATEWAY_REQUEST_TIMEOUT'],
    [{ GATEWAY_REQUEST_TIMEOUT: '0' }, 'GATEWAY_REQUEST_TIMEOUT'],
    [{ GATEWAY_IDLE_TIMEOUT: '2h' }, 'GATEWAY_IDLE_TIMEOUT'],
    [{ GATEWAY_KEEPALIVE_TIMEOUT: '-5s' }, 'GATEWAY_KEEPALIVE_TIMEOUT'],
    [{ GATEWAY_RETRY_AFTER: '0' }, 'GATEWAY_RETRY_AFTER'],
    [{ VIEW_VISITORS_PER_IP: '0' }, 'VIEW_VISITORS_PER_IP'],
    [{ VIEW_VISITORS_PER_IP: '2.5' }, 'VIEW_VISITORS_PER_IP'],
  ];
  for (const [env, name] of bad) {
    it(`rejects ${JSON.stringify(env)} naming ${name}`, () => {
      assert.throws(
        () => loadAdsConfig(env),
        (e: unknown) => e instanceof ConfigError && e.variable === name && e.message.startsWith(`${name}:`),
      );
    });
  }

  it('never echoes the token', () => {
    try {
      loadAdsConfig({ ADS_API_TOKEN: 'sekret' });
      assert.fail('should throw');
    } catch (e) {
      assert.ok(!(e as Error).message.includes('sekret'));
    }
  });

  it('accepts IPv4/IPv6 proxies and CIDRs', () => {
    assert.deepEqual(loadAdsConfig({ TRUSTED_PROXIES: '127.0.0.1, 10.0.0.0/8,::1,fd00::/8' }).trustedProxies, ['127.0.0.1', '10.0.0.0/8', '::1', 'fd00::/8']);
  });
});

describe('ads view keys', () => {
  it('hashes the visitor with the salt, IP and optional visitor id', () => {
    const a = visitorHash('s', '1.2.3.4');
    assert.match(a, /^[0-9a-f]{32}$/);
    assert.equal(visitorHash('s', '1.2.3.4'), a);
    assert.notEqual(visitorHash('t', '1.2.3.4'), a);
    assert.notEqual(visitorHash('s', '1.2.3.4', 'v1'), a);
  });
  it('puts views in fixed windows', () => {
    assert.equal(windowOf(0, 1_000), 0);
    assert.equal(windowOf(999, 1_000), 0);
    assert.equal(windowOf(1_000, 1_000), 1);
    assert.equal(viewMsgId(5, 'ab', 7), '5.ab.7');
  });
});

describe('ads gateway error mapping', () => {
  it('maps errors to statuses and stable codes', () => {
    assert.deepEqual(classifyHttpError(new InputError('NOT_FOUND', 'x')), { status: 404, code: 'NOT_FOUND', message: 'x' });
    assert.equal(classifyHttpError({ code: 'FST_ERR_CTP_BODY_TOO_LARGE', statusCode: 413, message: 'big' }).code, 'PAYLOAD_TOO_LARGE');
    assert.equal(classifyHttpError({ code: 'FST_ERR_CTP_INVALID_JSON_BODY', statusCode: 400, message: 'bad' }).code, 'BAD_JSON');
    assert.equal(classifyHttpError({ statusCode: 429, message: 'slow down' }).code, 'RATE_LIMITED');
    assert.equal(classifyHttpError({ validation: [], message: 'body/x' }).status, 400);
    assert.deepEqual(classifyHttpError({ code: 'FST_ERR_MAX_PARAM_LENGTH', statusCode: 414, message: "'/ads/1111' is exceeding" }), {
      status: 414,
      code: 'URI_TOO_LONG',
      message: 'a path parameter is too long',
    });
    assert.equal(classifyHttpError({ code: 'FST_ERR_BAD_URL', statusCode: 400, message: "'%zz' is not a valid url component" }).code, 'BAD_REQUEST');
    // parser text never echoed
    assert.deepEqual(
      classifyHttpError({ code: 'FST_ERR_CTP_INVALID_JSON_BODY', statusCode: 400, message: "Unexpected token '}'" }).message,
      'body is not valid JSON',
    );
    const internal = classifyHttpError(new Error('db password=hunter2'));
    assert.equal(internal.status, 500);
    assert.ok(!internal.message.includes('hunter2'), 'internal details stay in the log');
  });
});

describe('config: one prefix, one duration syntax', () => {
  it('the ads subjects take NATS_SUBJECT_PREFIX', () => {
    assert.equal(loadAdsConfig({ NATS_SUBJECT_PREFIX: 'staging.' }).subjectPrefix, 'staging.');
    assert.equal(loadAdsConfig({}).subjectPrefix, '');
  });

  it('a deployment with a prefix gets its own views stream by default (two cannot share subjects)', () => {
    assert.equal(loadAdsConfig({ NATS_SUBJECT_PREFIX: 'staging.eu.' }).viewsStream, 'staging_eu_ADS_VIEWS');
    assert.equal(loadAdsConfig({}).viewsStream, 'ADS_VIEWS');
    assert.equal(loadAdsConfig({ NATS_SUBJECT_PREFIX: 'staging.', VIEWS_STREAM: 'MINE' }).viewsStream, 'MINE');
  });

  it('every duration takes a unit or bare milliseconds, in every section', () => {
    const ads = loadAdsConfig({ VIEW_FLUSH_MS: '2s', BUMP_INTERVAL: '90m', GATEWAY_RETRY_AFTER: '1500ms' });
    assert.equal(ads.viewFlushMs, 2_000);
    assert.equal(ads.bumpIntervalMs, 5_400_000);
    assert.equal(ads.gatewayRetryAfterS, 2, 'Retry-After is sent in whole seconds, rounded up');
    assert.equal(loadAdsConfig({ VIEW_FLUSH_MS: '250' }).viewFlushMs, 250);
  });
});
