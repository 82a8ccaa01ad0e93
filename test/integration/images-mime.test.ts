import { strict as assert } from 'node:assert';
import { createServer, type Server } from 'node:http';
import { downloadImage, sniffImageType, type DownloadOptions } from '../../src/images/fetch';

/** Issue 10 item 9: the fetcher accepts only JPEG, PNG, WebP and GIF, by Content-Type and by signature. */
describe('images: only photo formats Telegram takes (real HTTP server)', () => {
  const jpeg = Buffer.concat([Buffer.from([0xff, 0xd8, 0xff, 0xdb]), Buffer.alloc(60, 1)]);
  const png = Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), Buffer.alloc(60, 2)]);
  const gif = Buffer.concat([Buffer.from('GIF89a', 'latin1'), Buffer.alloc(60, 3)]);
  const webp = Buffer.concat([Buffer.from('RIFF', 'latin1'), Buffer.from([0x40, 0, 0, 0]), Buffer.from('WEBPVP8 ', 'latin1'), Buffer.alloc(52, 4)]);
  const svg = Buffer.from('<svg xmlns="http://www.w3.org/2000/svg" width="1" height="1"></svg>');
  const routes: Record<string, [string, Buffer]> = {
    '/a.jpg': ['image/jpeg', jpeg],
    '/a-alias.jpg': ['image/jpg', jpeg],
    '/a.png': ['image/png; charset=binary', png],
    '/a.gif': ['image/gif', gif],
    '/a.webp': ['image/webp', webp],
    '/a.svg': ['image/svg+xml', svg],
    '/svg-as-png': ['image/png', svg],
    '/a.bmp': ['image/bmp', Buffer.from('BM' + 'x'.repeat(60), 'latin1')],
    '/png-as-jpeg': ['image/jpeg', png],
    '/empty.png': ['image/png', Buffer.alloc(0)],
  };
  let server: Server;
  let base: string;
  let opts: DownloadOptions;

  before(async () => {
    server = createServer((req, res) => {
      const r = routes[req.url ?? ''];
      if (!r) return void res.writeHead(404).end();
      res.writeHead(200, { 'content-type': r[0] }).end(r[1]);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const addr = server.address();
    base = `http://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}`;
    opts = { allowedHosts: ['127.0.0.1'], timeoutMs: 2_000, maxBytes: 100_000 };
  });
  after(() => new Promise<void>((resolve) => server.close(() => resolve())));

  for (const [path, type] of [
    ['/a.jpg', 'image/jpeg'],
    ['/a-alias.jpg', 'image/jpeg'],
    ['/a.png', 'image/png'],
    ['/a.gif', 'image/gif'],
    ['/a.webp', 'image/webp'],
    ['/png-as-jpeg', 'image/png'],
  ] as const) {
    it(`accepts ${path} as ${type} (the signature decides the reported type)`, async () => {
      const r = await downloadImage(`${base}${path}`, opts);
      assert.ok(r.ok, r.ok ? '' : r.message);
      assert.equal(r.contentType, type);
      assert.deepEqual(r.bytes, routes[path]![1]);
    });
  }

  for (const [path, why] of [
    ['/a.svg', /image\/svg\+xml.*not a photo type/],
    ['/a.bmp', /image\/bmp.*not a photo type/],
    ['/svg-as-png', /does not start with a JPEG, PNG, WebP or GIF signature/],
    ['/empty.png', /signature/],
  ] as const) {
    it(`refuses ${path} as not_image`, async () => {
      const r = await downloadImage(`${base}${path}`, opts);
      assert.equal(r.ok, false);
      if (!r.ok) {
        assert.equal(r.reason, 'not_image');
        assert.match(r.message, why);
      }
    });
  }

  it('sniffImageType reads only the four signatures', () => {
    assert.equal(sniffImageType(jpeg), 'image/jpeg');
    assert.equal(sniffImageType(webp), 'image/webp');
    assert.equal(sniffImageType(Buffer.from('RIFF\0\0\0\0WAVE', 'latin1')), undefined);
    assert.equal(sniffImageType(svg), undefined);
    assert.equal(sniffImageType(new Uint8Array([0xff, 0xd8])), undefined);
  });
});
