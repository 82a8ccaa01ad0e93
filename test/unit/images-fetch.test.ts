import { strict as assert } from 'node:assert';
import { createServer } from 'node:http';
import { downloadImage, type DownloadOptions, type DownloadResult, type FetchFailureReason } from '../../src/images/fetch';
import { startImageServer, type ImageServer } from '../helpers/image-server';

describe('images: downloadImage', () => {
  let srv: ImageServer;
  let opts: DownloadOptions;

  before(async () => {
    srv = await startImageServer();
    opts = { allowedHosts: ['127.0.0.1'], timeoutMs: 2_000, maxBytes: 100_000 };
  });
  after(() => srv.close());

  function failed(r: DownloadResult, reason: FetchFailureReason): void {
    assert.equal(r.ok, false, `expected ${reason}, got ok`);
    if (!r.ok) assert.equal(r.reason, reason, r.message);
  }

  it('downloads an image: exact bytes, content type without parameters, final URL', async () => {
    const r = await downloadImage(srv.url('/png/5000/a'), opts);
    assert.ok(r.ok);
    assert.equal(r.bytes.length, 5000);
    assert.deepEqual([...r.bytes.subarray(0, 4)], [0x89, 0x50, 0x4e, 0x47]);
    assert.equal(r.contentType, 'image/png');
    assert.equal(r.finalUrl, srv.url('/png/5000/a'));
  });

  it('bad_url: relative or non-http URLs', async () => {
    failed(await downloadImage('img/a.png', opts), 'bad_url');
    failed(await downloadImage('file:///etc/passwd', opts), 'bad_url');
  });

  it('host_not_allowed: refused before any request', async () => {
    failed(await downloadImage(srv.url('/png/100/host', 'localhost'), opts), 'host_not_allowed');
    assert.equal(srv.hits('/png/100/host'), 0);
    failed(await downloadImage(srv.url('/png/100/host'), { ...opts, allowedHosts: [] }), 'host_not_allowed');
  });

  it('redirect_not_allowed: a hop to a host outside the list is not followed', async () => {
    const target = srv.url('/png/100/redir-target', 'localhost');
    const r = await downloadImage(srv.url(`/redirect?to=${encodeURIComponent(target)}`), opts);
    failed(r, 'redirect_not_allowed');
    if (!r.ok) assert.match(r.message, /localhost/);
    assert.equal(srv.hits('/png/100/redir-target'), 0);
  });

  it('follows redirects to allowed hosts, re-checking each hop (localhost allowed too)', async () => {
    const target = srv.url('/png/100/redir-ok', 'localhost');
    const r = await downloadImage(srv.url(`/redirect?to=${encodeURIComponent(target)}`), { ...opts, allowedHosts: ['127.0.0.1', 'localhost'] });
    assert.ok(r.ok, r.ok ? '' : r.message);
    assert.equal(r.finalUrl, target);
    assert.equal(srv.hits('/png/100/redir-ok'), 1);
  });

  it('follows at most 5 redirects', async () => {
    assert.ok((await downloadImage(srv.url('/chain/5/png/100/c5'), opts)).ok);
    failed(await downloadImage(srv.url('/chain/6/png/100/c6'), opts), 'redirect_not_allowed');
    assert.equal(srv.hits('/png/100/c6'), 0);
  });

  it('redirect to another scheme is refused', async () => {
    failed(await downloadImage(srv.url(`/redirect?to=${encodeURIComponent('ftp://127.0.0.1/x.png')}`), opts), 'redirect_not_allowed');
  });

  it('timeout: no headers, a slow answer, a stalled body', async () => {
    const t = { ...opts, timeoutMs: 200 };
    const started = Date.now();
    failed(await downloadImage(srv.url('/png/100/t1?hang=1'), t), 'timeout');
    failed(await downloadImage(srv.url('/png/100/t2?delay=1500'), t), 'timeout');
    failed(await downloadImage(srv.url('/png/50000/t3?hangBody=1'), t), 'timeout');
    assert.ok(Date.now() - started < 2_000, 'each timeout took about 200 ms');
  });

  it('http_status: 404', async () => {
    const r = await downloadImage(srv.url('/404/x'), opts);
    failed(r, 'http_status');
    if (!r.ok) assert.equal(r.status, 404);
  });

  it('not_image: text/html and a missing Content-Type', async () => {
    failed(await downloadImage(srv.url('/html/x'), opts), 'not_image');
    failed(await downloadImage(srv.url('/notype/x'), opts), 'not_image');
  });

  it('too_large: by Content-Length and by counting a chunked body', async () => {
    failed(await downloadImage(srv.url('/big-announced/100001/x'), opts), 'too_large');
    const r = await downloadImage(srv.url('/big-chunked/5000000/x'), opts);
    failed(r, 'too_large');
    if (!r.ok) assert.match(r.message, /body exceeds/);
    assert.ok((await downloadImage(srv.url('/big-chunked/100000/y'), opts)).ok, 'exactly the limit is fine');
  });

  it('network: connection refused, and an outside abort', async () => {
    const s = createServer();
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
    const port = (s.address() as { port: number }).port;
    await new Promise<void>((r) => s.close(() => r()));
    failed(await downloadImage(`http://127.0.0.1:${port}/x.png`, opts), 'network');

    const ac = new AbortController();
    setTimeout(() => ac.abort(), 50);
    failed(await downloadImage(srv.url('/png/100/abort?hang=1'), { ...opts, signal: ac.signal }), 'network');
  });
});
