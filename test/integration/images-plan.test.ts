import { strict as assert } from 'node:assert';
import * as m0020 from '../../migrations/0020_products';
import * as m0021 from '../../migrations/0021_orders';
import * as m0022 from '../../migrations/0022_order_items';
import { Order } from '../../src/db/models/order';
import { Product } from '../../src/db/models/product';
import { OrderItem } from '../../src/db/models/order-item';
import { spawnFetcher, type FetcherMessage } from '../../actors/image-fetcher';
import { startActorSystem, stopActorSystem, type ActorRef, type ActorSystem } from '../../src/runtime/actor';
import { fetcherImageSource } from '../../actors/image-fetcher';
import { loadImagesConfig, type ImagesConfig } from '../../src/config/images';
import { planOrderNotification, orderRepository, orderIdOfNotification, type Part, type PlanDeps } from '../../src/orders/plan';
import { startImageServer, imageBytes, type ImageServer } from '../helpers/image-server';
import { createTestDb, captureLogger, type TestDb } from '../helpers/services';
import type { Knex } from 'knex';

/** Applies this feature's migrations directly (idempotent), so the test does not depend on migrations/index.ts. */
async function migrateShop(db: Knex): Promise<void> {
  for (const m of [m0020, m0021, m0022]) await m.up(db);
}

describe('orders: new-order plan over MariaDB, the fetcher actor and a local image server', function () {
  this.timeout(60_000);
  let tdb: TestDb;
  let srv: ImageServer;
  let system: ActorSystem;
  let fetcher: ActorRef<FetcherMessage>;
  let config: ImagesConfig;
  let logs: ReturnType<typeof captureLogger>;

  before(async () => {
    tdb = await createTestDb('img');
    await migrateShop(tdb.db);
    srv = await startImageServer();
  });
  after(async () => {
    await srv.close();
    await tdb.drop();
  });
  beforeEach(() => {
    logs = captureLogger();
    system = startActorSystem('plan-test', logs.log);
    config = loadImagesConfig({ IMAGE_BASE_URL: `${srv.origin}/`, IMAGE_FETCH_TIMEOUT_MS: '500', ADMIN_CHAT_IDS: '-100500' });
    fetcher = spawnFetcher(system, { config });
  });
  afterEach(() => stopActorSystem(system));

  const deps = (over: Partial<PlanDeps> = {}): PlanDeps => ({
    orders: orderRepository(tdb.db),
    images: fetcherImageSource(fetcher, { timeoutMs: 5_000 }),
    config,
    log: logs.log,
    ...over,
  });

  /** Creates products with the given image paths and an order of all of them; returns the order id. */
  async function order(paths: Array<string | null>, tag: string): Promise<{ orderId: number; productIds: number[] }> {
    const productIds: number[] = [];
    for (const [i, p] of paths.entries()) {
      const prod = await Product.query(tdb.db).insert({ name: `${tag} товар ${i + 1}`, price: `${(i + 1) * 10}.50`, image_path: p });
      productIds.push(prod.id);
    }
    const o = await Order.query(tdb.db).insert({ customer_chat_id: 42, customer_user_id: 42, total: '0', status: 'new' });
    for (const [i, id] of productIds.entries())
      await OrderItem.query(tdb.db).insert({ order_id: o.id, product_id: id, quantity: i + 1, price: `${(i + 1) * 10}.50` });
    return { orderId: o.id, productIds };
  }

  const shape = (parts: Part[]): string[] => parts.map((p) => (p.method === 'sendMediaGroup' ? `album:${p.items.length}` : p.method));
  const captions = (parts: Part[]): Array<string | undefined> =>
    parts.flatMap((p) => (p.method === 'sendMediaGroup' ? p.items.map((i) => i.caption) : p.method === 'sendPhoto' ? [p.item.caption] : []));

  it('models: Order has many OrderItems, OrderItem belongs to Product', async () => {
    const { orderId, productIds } = await order(['png/100/m1', 'png/100/m2'], 'm');
    const o = await Order.query(tdb.db).findById(orderId).withGraphFetched('items.product');
    assert.equal(o?.items?.length, 2);
    assert.deepEqual(
      o?.items?.map((i) => i.product?.id),
      productIds,
    );
    assert.equal(o?.items?.[1]?.price, '20.50');
  });

  it('12 products → the text, an album of 10 and an album of 2, captions in order', async () => {
    const paths = Array.from({ length: 12 }, (_, i) => `png/${1000 + i}/p12-${i}`);
    const { orderId } = await order(paths, 'p12');
    const parts = await planOrderNotification(deps(), { text: 'НОВЫЙ ЗАКАЗ #x', parseMode: 'HTML', orderId });
    assert.deepEqual(shape(parts), ['sendMessage', 'album:10', 'album:2']);
    assert.deepEqual(
      captions(parts),
      paths.map((_, i) => `Товар: p12 товар ${i + 1}\nЦена: ${(i + 1) * 10}.50 руб.`),
    );
    const album2 = parts[2];
    assert.ok(album2?.method === 'sendMediaGroup');
    const last = album2.items[1]!.photo;
    assert.ok(last.kind === 'bytes');
    assert.ok(last.data.equals(imageBytes('png', 1011)), 'the bytes of the 12th image');
  });

  it('1 product → sendPhoto; 11 products → an album of 10 and a sendPhoto', async () => {
    const one = await order(['jpeg/2000/one'], 'one');
    assert.deepEqual(shape(await planOrderNotification(deps(), { text: 'T', parseMode: null, orderId: one.orderId })), ['sendMessage', 'sendPhoto']);
    const eleven = await order(
      Array.from({ length: 11 }, (_, i) => `png/${500 + i}/p11-${i}`),
      'p11',
    );
    assert.deepEqual(shape(await planOrderNotification(deps(), { text: 'T', parseMode: null, orderId: eleven.orderId })), [
      'sendMessage',
      'album:10',
      'sendPhoto',
    ]);
  });

  it('failing images (404, html, timeout, oversized, disallowed host, redirect to it) → a text line each, the rest delivered, reasons logged', async () => {
    const elsewhere = `http://localhost:${srv.port}/png/100/elsewhere`;
    const paths = [
      'png/1000/ok-1',
      '404/gone',
      'html/page',
      'png/100/slow?hang=1',
      `big-chunked/${11 * 1024 * 1024}/huge`,
      elsewhere,
      `redirect?to=${encodeURIComponent(elsewhere)}`,
      'png/1000/ok-2',
    ];
    const { orderId } = await order(paths, 'f');
    const parts = await planOrderNotification(deps(), { text: 'T', parseMode: null, orderId });
    assert.deepEqual(shape(parts), ['sendMessage', 'album:2', 'sendMessage']);
    assert.deepEqual(captions(parts), ['Товар: f товар 1\nЦена: 10.50 руб.', 'Товар: f товар 8\nЦена: 80.50 руб.']);
    const text = parts[2]?.method === 'sendMessage' ? parts[2].text : '';
    for (const i of [2, 3, 4, 5, 6, 7])
      assert.ok(text.includes(`Товар: f товар ${i}\nЦена: ${i * 10}.50 руб.\n(изображение недоступно)`), `product ${i} listed`);
    const reasons = logs
      .lines()
      .filter((l) => l.msg === 'product photo unavailable')
      .map((l) => l.reason)
      .sort();
    assert.deepEqual(reasons, ['host_not_allowed', 'http_status', 'not_image', 'redirect_not_allowed', 'timeout', 'too_large']);
  });

  it('repeated orders of the same products fetch each image once; concurrent orders share the downloads', async () => {
    const paths = Array.from({ length: 6 }, (_, i) => `png/${3000 + i}/rep-${i}?delay=100`);
    const first = await order(paths, 'rep');
    await Promise.all(Array.from({ length: 5 }, () => planOrderNotification(deps(), { text: 'T', parseMode: null, orderId: first.orderId })));
    for (const p of paths) assert.equal(srv.hits(`/${p}`), 1, `${p} downloaded once by concurrent orders`);
    for (let i = 0; i < 3; i++) await planOrderNotification(deps(), { text: 'T', parseMode: null, orderId: first.orderId });
    for (const p of paths) assert.equal(srv.hits(`/${p}`), 1, `${p} still downloaded once`);
  });

  it('url mode: photos go by URL', async () => {
    const { orderId } = await order(['png/100/url-1', 'png/100/url-2'], 'u');
    const parts = await planOrderNotification(deps({ config: { ...config, sendMode: 'url' } }), { text: 'T', parseMode: null, orderId });
    const album = parts[1];
    assert.ok(album?.method === 'sendMediaGroup');
    assert.deepEqual(album.items[0]!.photo, { kind: 'url', url: `${srv.origin}/png/100/url-1` });
  });

  it('a legacy row (НОВЫЙ ЗАКАЗ #N to an admin chat) gets the photos too', async () => {
    const { orderId } = await order(['png/700/legacy-1', 'png/700/legacy-2', 'png/700/legacy-3'], 'legacy');
    const row = { kind: null, order_id: null, telegram_id: -100500, message_text: `🛒 НОВЫЙ ЗАКАЗ #${orderId}\nСумма: 61.50` };
    const detected = orderIdOfNotification(row, config.adminChatIds);
    assert.equal(detected, orderId);
    const parts = await planOrderNotification(deps(), { text: row.message_text, parseMode: null, orderId: detected });
    assert.deepEqual(shape(parts), ['sendMessage', 'album:3']);
    assert.equal(orderIdOfNotification({ ...row, telegram_id: 42 }, config.adminChatIds), null, 'not to a customer chat');
  });

  it('migrations are idempotent over existing tables', async () => {
    const counts = async () =>
      Promise.all(['products', 'orders', 'order_items'].map(async (t) => Number(((await tdb.db(t).count({ n: '*' }))[0] as { n: number | string }).n)));
    const before = await counts();
    assert.ok(
      before.every((n) => n > 0),
      'earlier tests left rows to keep',
    );
    await migrateShop(tdb.db);
    assert.deepEqual(await counts(), before, 'rows kept');
    assert.ok(await tdb.db.schema.hasColumn('order_items', 'price'));
  });
});

describe('orders: migrations over a legacy shop schema', function () {
  this.timeout(60_000);
  let tdb: TestDb;
  before(async () => {
    tdb = await createTestDb('imgleg', { migrate: false });
  });
  after(() => tdb?.drop());

  it('keeps legacy products/orders tables with INT ids, adds missing columns, and links order_items to them', async () => {
    await tdb.db.raw(
      'CREATE TABLE products (id INT NOT NULL AUTO_INCREMENT PRIMARY KEY, name VARCHAR(100) NOT NULL, price DECIMAL(10,2) NOT NULL) ENGINE=InnoDB',
    );
    await tdb.db.raw('CREATE TABLE orders (id INT NOT NULL AUTO_INCREMENT PRIMARY KEY, user_id BIGINT NULL) ENGINE=InnoDB');
    await tdb.db('products').insert({ name: 'old', price: '5.00' });
    await migrateShop(tdb.db);
    assert.ok(await tdb.db.schema.hasColumn('products', 'image_path'));
    assert.ok(await tdb.db.schema.hasColumn('orders', 'status'));
    const [o] = await tdb.db('orders').insert({ user_id: 1 });
    await tdb.db('order_items').insert({ order_id: o, product_id: 1, quantity: 1, price: '5.00' });
    const lines = await orderRepository(tdb.db).orderLines(o!);
    assert.deepEqual(lines, [{ productId: 1, name: 'old', price: '5.00', quantity: 1, imagePath: null }]);
  });
});
