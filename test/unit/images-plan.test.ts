import { strict as assert } from 'node:assert';
import {
  planOrderNotification,
  detectLegacyOrder,
  orderIdOfNotification,
  renderCaption,
  formatPrice,
  truncate,
  imageUrl,
  chunkPhotos,
  type OrderLine,
  type PlanDeps,
  type Part,
} from '../../src/orders/plan';
import type { FetchResult } from '../../src/images/cache';
import { captureLogger } from '../helpers/services';

const TEMPLATE = 'Товар: {name}\nЦена: {price} руб.';

function lines(n: number): OrderLine[] {
  return Array.from({ length: n }, (_, i) => ({ productId: i + 1, name: `P${i + 1}`, price: `${(i + 1) * 100}.00`, quantity: 1, imagePath: `p${i + 1}.jpg` }));
}

function deps(
  orderLines: OrderLine[] | null,
  opts: { fail?: Set<string>; mode?: 'upload' | 'url'; size?: number } = {},
): PlanDeps & { logs: ReturnType<typeof captureLogger>; asked: string[] } {
  const logs = captureLogger();
  const asked: string[] = [];
  return {
    logs,
    asked,
    log: logs.log,
    orders: { orderLines: async () => orderLines },
    config: { baseUrl: 'https://cdn.example/img/', sendMode: opts.mode ?? 'upload', orderCaptionTemplate: TEMPLATE },
    images: {
      get: async (url: string): Promise<FetchResult> => {
        asked.push(url);
        if (opts.fail?.has(url)) return { ok: false, reason: 'http_status', message: `HTTP 404 from ${url}` };
        return { ok: true, bytes: Buffer.alloc(opts.size ?? 10), contentType: 'image/jpeg', fromCache: false };
      },
    },
  };
}

const shape = (parts: Part[]): string[] => parts.map((p) => (p.method === 'sendMediaGroup' ? `album:${p.items.length}` : p.method));

describe('orders: planOrderNotification (stubbed repository and images)', () => {
  it('text first, then albums of 10, a trailing single as sendPhoto', async () => {
    assert.deepEqual(shape(await planOrderNotification(deps(lines(12)), { text: 'T', parseMode: 'HTML', orderId: 1 })), ['sendMessage', 'album:10', 'album:2']);
    assert.deepEqual(shape(await planOrderNotification(deps(lines(11)), { text: 'T', parseMode: 'HTML', orderId: 1 })), [
      'sendMessage',
      'album:10',
      'sendPhoto',
    ]);
    assert.deepEqual(shape(await planOrderNotification(deps(lines(1)), { text: 'T', parseMode: 'HTML', orderId: 1 })), ['sendMessage', 'sendPhoto']);
    assert.deepEqual(shape(await planOrderNotification(deps(lines(20)), { text: 'T', parseMode: 'HTML', orderId: 1 })), [
      'sendMessage',
      'album:10',
      'album:10',
    ]);
    assert.deepEqual(shape(await planOrderNotification(deps([]), { text: 'T', parseMode: 'HTML', orderId: 1 })), ['sendMessage']);
  });

  it('the text part is unchanged with its parse mode; captions are plain text', async () => {
    const parts = await planOrderNotification(deps(lines(2)), { text: '<b>НОВЫЙ ЗАКАЗ #1</b>', parseMode: 'HTML', orderId: 1 });
    assert.deepEqual(parts[0], { method: 'sendMessage', text: '<b>НОВЫЙ ЗАКАЗ #1</b>', parseMode: 'HTML' });
    const album = parts[1];
    assert.ok(album?.method === 'sendMediaGroup');
    assert.deepEqual(
      album.items.map((i) => i.caption),
      ['Товар: P1\nЦена: 100 руб.', 'Товар: P2\nЦена: 200 руб.'],
    );
    assert.ok(album.items.every((i) => i.parseMode === undefined));
    const photo = album.items[0]!.photo;
    assert.ok(photo.kind === 'bytes' && photo.filename === 'product-1.jpg');
  });

  it('an unknown order gives the text alone and a warning', async () => {
    const d = deps(null);
    assert.deepEqual(shape(await planOrderNotification(d, { text: 'T', parseMode: null, orderId: 77 })), ['sendMessage']);
    assert.ok(d.logs.lines().some((l) => l.orderId === 77 && l.level === 40));
  });

  it('failed images become one text part after the albums; the reason is logged', async () => {
    const fail = new Set(['https://cdn.example/img/p2.jpg', 'https://cdn.example/img/p5.jpg']);
    const d = deps(lines(5), { fail });
    const parts = await planOrderNotification(d, { text: 'T', parseMode: null, orderId: 3 });
    assert.deepEqual(shape(parts), ['sendMessage', 'album:3', 'sendMessage']);
    const last = parts[2];
    assert.ok(last?.method === 'sendMessage');
    assert.equal(last.text, 'Товар: P2\nЦена: 200 руб.\n(изображение недоступно)\n\nТовар: P5\nЦена: 500 руб.\n(изображение недоступно)');
    assert.equal(last.parseMode, null);
    const warned = d.logs.lines().filter((l) => l.msg === 'product photo unavailable');
    assert.deepEqual(warned.map((l) => [l.productId, l.reason]).sort(), [
      [2, 'http_status'],
      [5, 'http_status'],
    ]);
  });

  it('a product without an image path is listed too', async () => {
    const ls = lines(2);
    ls[1]!.imagePath = null;
    const parts = await planOrderNotification(deps(ls), { text: 'T', parseMode: null, orderId: 3 });
    assert.deepEqual(shape(parts), ['sendMessage', 'sendPhoto', 'sendMessage']);
  });

  it('url mode sends URLs; an image above 5 MB is uploaded instead', async () => {
    const parts = await planOrderNotification(deps(lines(2), { mode: 'url' }), { text: 'T', parseMode: null, orderId: 1 });
    const album = parts[1];
    assert.ok(album?.method === 'sendMediaGroup');
    assert.deepEqual(album.items[0]!.photo, { kind: 'url', url: 'https://cdn.example/img/p1.jpg' });
    const big = await planOrderNotification(deps(lines(1), { mode: 'url', size: 6 * 1024 * 1024 }), { text: 'T', parseMode: null, orderId: 1 });
    assert.ok(big[1]?.method === 'sendPhoto' && big[1].item.photo.kind === 'bytes');
  });

  it('many unavailable products are split into texts of at most 4096 characters', async () => {
    const ls = lines(300).map((l) => ({ ...l, imagePath: null }));
    const parts = await planOrderNotification(deps(ls), { text: 'T', parseMode: null, orderId: 1 });
    const texts = parts.slice(1);
    assert.ok(texts.length > 1);
    assert.ok(texts.every((p) => p.method === 'sendMessage' && p.text.length <= 4096));
    assert.equal(
      texts
        .map((p) => (p.method === 'sendMessage' ? p.text : ''))
        .join('\n\n')
        .split('(изображение недоступно)').length - 1,
      300,
    );
  });
});

describe('orders: plan helpers', () => {
  it('detectLegacyOrder: only in admin chats', () => {
    assert.equal(detectLegacyOrder('🛒 НОВЫЙ ЗАКАЗ #123\nКлиент: …', 10, [10, 20]), 123);
    assert.equal(detectLegacyOrder('<b>НОВЫЙ ЗАКАЗ #7</b>', 20, [10, 20]), 7);
    assert.equal(detectLegacyOrder('НОВЫЙ ЗАКАЗ #123', 30, [10, 20]), null);
    assert.equal(detectLegacyOrder('Новый заказ принят', 10, [10]), null);
    assert.equal(detectLegacyOrder('НОВЫЙ ЗАКАЗ #', 10, [10]), null);
  });

  it('orderIdOfNotification: kind new_order, legacy rows, others', () => {
    assert.equal(orderIdOfNotification({ kind: 'new_order', order_id: 5, telegram_id: 1, message_text: 'x' }, []), 5);
    assert.equal(orderIdOfNotification({ kind: 'new_order', order_id: null, telegram_id: 1, message_text: 'НОВЫЙ ЗАКАЗ #6' }, []), 6);
    assert.equal(orderIdOfNotification({ kind: null, order_id: null, telegram_id: 1, message_text: 'НОВЫЙ ЗАКАЗ #8' }, [1]), 8);
    assert.equal(orderIdOfNotification({ kind: null, order_id: null, telegram_id: 2, message_text: 'НОВЫЙ ЗАКАЗ #8' }, [1]), null);
    assert.equal(orderIdOfNotification({ kind: 'promo', order_id: 5, telegram_id: 1, message_text: 'НОВЫЙ ЗАКАЗ #8' }, [1]), null);
  });

  it('captions: placeholders, prices, 1024-character cut', () => {
    const line: OrderLine = { productId: 4, name: 'Чай', price: '1499.90', quantity: 2, imagePath: null };
    assert.equal(renderCaption('{name} {price} x{quantity} #{id}', line), 'Чай 1499.90 x2 #4');
    assert.equal(formatPrice('1500.00'), '1500');
    assert.equal(formatPrice('0.50'), '0.50');
    const long = renderCaption(TEMPLATE, { ...line, name: 'я'.repeat(2000) });
    assert.equal(long.length, 1024);
    assert.ok(long.endsWith('…'));
    assert.equal(truncate('a😀b', 3), 'a…', 'never cuts a surrogate pair');
  });

  it('imageUrl: base + path like the legacy code, absolute URLs kept', () => {
    assert.equal(imageUrl('img/a b.jpg', 'https://x.com/media/'), 'https://x.com/media/img/a%20b.jpg');
    assert.equal(imageUrl('/img/a.jpg', 'https://x.com/media/'), 'https://x.com/media/img/a.jpg');
    assert.equal(imageUrl('https://cdn.y/a.jpg', 'https://x.com/'), 'https://cdn.y/a.jpg');
    assert.equal(imageUrl('a.jpg', undefined), null);
    assert.equal(imageUrl('', 'https://x.com/'), null);
    assert.equal(imageUrl(null, 'https://x.com/'), null);
  });

  it('chunkPhotos', () => {
    assert.deepEqual(
      chunkPhotos([1, 2, 3]).map((c) => c.length),
      [3],
    );
    assert.deepEqual(
      chunkPhotos(Array.from({ length: 21 }, (_, i) => i)).map((c) => c.length),
      [10, 10, 1],
    );
    assert.deepEqual(chunkPhotos([]), []);
  });
});
