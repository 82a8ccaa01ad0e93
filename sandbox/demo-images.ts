import { crc32, deflateSync } from 'node:zlib';

/**
 * Demo product photos the sandbox serves at GET /sandbox/images/<name>.png, so that
 * `npm run cli -- demo` can show order albums without any image host: a solid-colour
 * PNG per name (a few named colours, any other name gets a colour from its hash).
 */
const COLOURS: Record<string, [number, number, number]> = {
  red: [220, 50, 47],
  green: [133, 153, 0],
  blue: [38, 139, 210],
  yellow: [181, 137, 0],
  violet: [108, 113, 196],
};

const NAME = /^\/sandbox\/images\/([a-z0-9-]{1,40})\.png$/;

/** The PNG for a /sandbox/images/… path, or undefined when the path is not one. */
export function demoImage(pathname: string): Buffer | undefined {
  const m = NAME.exec(pathname);
  if (!m) return undefined;
  const [, name = ''] = m;
  return solidPng(640, 400, COLOURS[name] ?? colourOf(name));
}

function colourOf(name: string): [number, number, number] {
  const h = crc32(name);
  return [h & 0xff, (h >>> 8) & 0xff, (h >>> 16) & 0xff];
}

function chunk(type: string, data: Buffer): Buffer {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  const body = Buffer.concat([Buffer.from(type, 'latin1'), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(body) >>> 0);
  return Buffer.concat([len, body, crc]);
}

/** An 8-bit RGB PNG of one colour. */
export function solidPng(width: number, height: number, [r, g, b]: [number, number, number]): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // colour type RGB
  const row = Buffer.alloc(1 + width * 3);
  for (let x = 0; x < width; x++) row.set([r, g, b], 1 + x * 3);
  const raw = Buffer.concat(Array.from({ length: height }, () => row));
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('IDAT', deflateSync(raw)),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}
