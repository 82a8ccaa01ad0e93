import { createServer, type IncomingMessage, type ServerResponse, type Server } from 'node:http';

/**
 * A local HTTP image server for tests and the benchmark, on 127.0.0.1 port 0.
 *
 * Paths:
 * - `/png/<bytes>/<name>`, `/jpeg/<bytes>/<name>`: an image of exactly that size
 * - `/404/<name>`: 404; `/html/<name>`: 200 text/html; `/notype/<name>`: 200 without Content-Type
 * - `/big-announced/<bytes>/<name>`: image/png whose Content-Length is `bytes` (body sent in full)
 * - `/big-chunked/<bytes>/<name>`: image/png streamed chunked (no Content-Length), `bytes` long
 * - `/redirect?to=<url>`: 302 to `to`; `/chain/<n>/<rest>`: n redirects, then `/<rest>`
 * Query on any path: `delay=<ms>` waits before answering; `hang=1` never answers;
 * `hangBody=1` sends the headers and half the body, then stalls.
 * Every request is counted by its path with query (`hits(path)`).
 */
export interface ImageServer {
  port: number;
  /** `http://127.0.0.1:<port>` */
  origin: string;
  /** `http://<host>:<port><path>`; host defaults to 127.0.0.1. */
  url(path: string, host?: string): string;
  hits(path: string): number;
  totalHits(): number;
  resetHits(): void;
  close(): Promise<void>;
}

const PNG_SIG = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
const JPEG_SIG = Buffer.from([0xff, 0xd8, 0xff, 0xe0]);
const bodies = new Map<string, Buffer>();

/** Deterministic bytes of `size`, starting with the format's signature. */
export function imageBytes(kind: 'png' | 'jpeg', size: number): Buffer {
  const key = `${kind}:${size}`;
  let b = bodies.get(key);
  if (!b) {
    b = Buffer.alloc(size, kind === 'png' ? 0x42 : 0x24);
    (kind === 'png' ? PNG_SIG : JPEG_SIG).copy(b, 0, 0, Math.min(size, 8));
    bodies.set(key, b);
  }
  return b;
}

export async function startImageServer(): Promise<ImageServer> {
  const counts = new Map<string, number>();
  const sockets = new Set<import('node:net').Socket>();
  const server: Server = createServer((req, res) => {
    const key = req.url ?? '/';
    counts.set(key, (counts.get(key) ?? 0) + 1);
    const u = new URL(key, 'http://x');
    if (u.searchParams.get('hang') === '1') return; // never answers
    const delay = Number(u.searchParams.get('delay') ?? 0);
    const go = (): void => handle(req, res, u);
    if (delay > 0) setTimeout(go, delay);
    else go();
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : 0;
  let closing: Promise<void> | undefined;
  return {
    port,
    origin: `http://127.0.0.1:${port}`,
    url: (path, host = '127.0.0.1') => `http://${host}:${port}${path}`,
    hits: (path) => counts.get(path) ?? 0,
    totalHits: () => [...counts.values()].reduce((a, b) => a + b, 0),
    resetHits: () => counts.clear(),
    close: () =>
      (closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
      })),
  };
}

function handle(_req: IncomingMessage, res: ServerResponse, u: URL): void {
  const seg = u.pathname.split('/').filter(Boolean);
  const hangBody = u.searchParams.get('hangBody') === '1';
  const sendImage = (type: string, body: Buffer, headers: Record<string, string | number> = { 'content-length': body.length }): void => {
    res.writeHead(200, { 'content-type': type, ...headers });
    if (hangBody) {
      res.write(body.subarray(0, Math.floor(body.length / 2)));
      return; // stalls: never ends
    }
    res.end(body);
  };
  switch (seg[0]) {
    case 'png':
    case 'jpeg': {
      const size = Number(seg[1]);
      sendImage(seg[0] === 'png' ? 'image/png' : 'image/jpeg', imageBytes(seg[0], size));
      return;
    }
    case '404':
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
      return;
    case 'html':
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end('<html><body>not an image</body></html>');
      return;
    case 'notype':
      res.writeHead(200).end(imageBytes('png', 100));
      return;
    case 'big-announced':
      sendImage('image/png', imageBytes('png', Number(seg[1])));
      return;
    case 'big-chunked': {
      const body = imageBytes('png', Number(seg[1]));
      res.writeHead(200, { 'content-type': 'image/png' });
      let off = 0;
      const step = 64 * 1024;
      const pump = (): void => {
        while (off < body.length) {
          const chunk = body.subarray(off, off + step);
          off += step;
          if (!res.write(chunk)) return void res.once('drain', pump);
        }
        res.end();
      };
      res.on('error', () => undefined);
      pump();
      return;
    }
    case 'redirect': {
      const to = u.searchParams.get('to') ?? '/';
      res.writeHead(302, { location: to }).end();
      return;
    }
    case 'chain': {
      const n = Number(seg[1]);
      const rest = seg.slice(2).join('/');
      res.writeHead(302, { location: n > 1 ? `/chain/${n - 1}/${rest}` : `/${rest}` }).end();
      return;
    }
    default:
      res.writeHead(404).end();
  }
}
