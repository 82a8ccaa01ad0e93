import { strict as assert } from 'node:assert';
import { loadImagesConfig, hostAllowed } from '../../src/config/images';
import { ConfigError } from '../../src/errors';

function throwsNaming(env: Record<string, string>, variable: string): void {
  assert.throws(
    () => loadImagesConfig(env),
    (e: unknown) => e instanceof ConfigError && e.variable === variable && e.message.startsWith(`${variable}:`),
  );
}

describe('images: loadImagesConfig', () => {
  it('defaults', () => {
    const c = loadImagesConfig({});
    assert.equal(c.baseUrl, undefined);
    assert.deepEqual(c.allowedHosts, []);
    assert.equal(c.maxBytes, 10 * 1024 * 1024);
    assert.equal(c.sendMode, 'upload');
    assert.deepEqual(c.adminChatIds, []);
    assert.equal(c.orderCaptionTemplate, 'Товар: {name}\nЦена: {price} руб.');
    assert.equal(c.cacheMaxBytes, 268_435_456);
  });

  it('allowed hosts default to the host of IMAGE_BASE_URL; the base gets a trailing slash', () => {
    const c = loadImagesConfig({ IMAGE_BASE_URL: 'https://Shop.example.com/media', ADMIN_CHAT_IDS: '1, -100200' });
    assert.equal(c.baseUrl, 'https://Shop.example.com/media/');
    assert.deepEqual(c.allowedHosts, ['shop.example.com']);
    assert.deepEqual(c.adminChatIds, [1, -100200]);
  });

  it('explicit allowed hosts, url mode, \\n in the template', () => {
    const c = loadImagesConfig({
      IMAGE_ALLOWED_HOSTS: 'cdn.example.com, *.img.example.com,localhost:8080',
      IMAGE_SEND_MODE: 'URL',
      ORDER_CAPTION_TEMPLATE: '{name}\\n{price} ₽ x{quantity}',
    });
    assert.deepEqual(c.allowedHosts, ['cdn.example.com', '*.img.example.com', 'localhost:8080']);
    assert.equal(c.sendMode, 'url');
    assert.equal(c.orderCaptionTemplate, '{name}\n{price} ₽ x{quantity}');
  });

  it('every bad variable is named', () => {
    throwsNaming({ IMAGE_BASE_URL: 'ftp://x' }, 'IMAGE_BASE_URL');
    throwsNaming({ IMAGE_BASE_URL: 'not a url' }, 'IMAGE_BASE_URL');
    throwsNaming({ IMAGE_ALLOWED_HOSTS: 'http://x.com' }, 'IMAGE_ALLOWED_HOSTS');
    throwsNaming({ IMAGE_CACHE_MAX_BYTES: '-1' }, 'IMAGE_CACHE_MAX_BYTES');
    throwsNaming({ IMAGE_CACHE_TTL_MS: 'soon' }, 'IMAGE_CACHE_TTL_MS');
    throwsNaming({ IMAGE_FETCH_TIMEOUT_MS: '5' }, 'IMAGE_FETCH_TIMEOUT_MS');
    throwsNaming({ IMAGE_MAX_BYTES: '0' }, 'IMAGE_MAX_BYTES');
    throwsNaming({ IMAGE_FETCH_CONCURRENCY: '0' }, 'IMAGE_FETCH_CONCURRENCY');
    throwsNaming({ IMAGE_SEND_MODE: 'fax' }, 'IMAGE_SEND_MODE');
    throwsNaming({ ADMIN_CHAT_IDS: '1,abc' }, 'ADMIN_CHAT_IDS');
    throwsNaming({ ORDER_CAPTION_TEMPLATE: '{title}' }, 'ORDER_CAPTION_TEMPLATE');
    throwsNaming({ ORDER_CAPTION_TEMPLATE: 'x'.repeat(1025) }, 'ORDER_CAPTION_TEMPLATE');
  });

  it('hostAllowed: exact host, host:port, wildcard subdomain', () => {
    const list = ['a.com', 'b.com:8080', '*.c.com'];
    assert.ok(hostAllowed(new URL('https://A.com/x'), list));
    assert.ok(hostAllowed(new URL('http://a.com:9000/x'), list));
    assert.ok(hostAllowed(new URL('http://b.com:8080/x'), list));
    assert.ok(!hostAllowed(new URL('http://b.com/x'), list));
    assert.ok(hostAllowed(new URL('http://img.c.com/x'), list));
    assert.ok(!hostAllowed(new URL('http://c.com/x'), list));
    assert.ok(!hostAllowed(new URL('http://evil-a.com/x'), list));
    assert.ok(!hostAllowed(new URL('http://a.com.evil.net/x'), list));
  });
});
