import assert from 'node:assert/strict';
import { harness, type Harness } from '../helpers/pipeline';
import { waitFor } from '../helpers/services';
import { startImageServer, type ImageServer } from '../helpers/image-server';
import { startActorSystem, stopActorSystem, type ActorSystem } from '../../src/runtime/actor';
import { spawnFetcher } from '../../actors/image-fetcher';
import { fetcherImageSource } from '../../actors/image-fetcher';
import { loadImagesConfig } from '../../src/config/images';
import { OrderAwarePlanner } from '../../src/orders/planner';
import { Product } from '../../src/db/models/product';
import { Order } from '../../src/db/models/order';
import { OrderItem } from '../../src/db/models/order-item';

const ADMIN = -1001234567890;

describe('new-order notifications through the pipeline (sandbox, image server, MariaDB)', function () {
  this.timeout(60_000);
  let h: Harness;
  let srv: ImageServer;
  let system: ActorSystem;

  beforeEach(async () => {
    // Group limits high enough that the test is about order, not waiting.
    h = await harness({ sandbox: { globalRate: 300, chatRate: 10, groupRatePerMin: 6000 } });
    srv = await startImageServer();
    system = startActorSystem('orders-test', h.logs.log);
  });
  afterEach(async () => {
    await h.close();
    stopActorSystem(system);
    await srv.close();
  });

  const start = async () => {
    const config = loadImagesConfig({ IMAGE_BASE_URL: `${srv.origin}/`, ADMIN_CHAT_IDS: String(ADMIN), IMAGE_FETCH_TIMEOUT_MS: '2000' });
    const fetcher = spawnFetcher(system, { config });
    const planner = new OrderAwarePlanner(h.tdb.db, fetcherImageSource(fetcher, { timeoutMs: 6_000 }), config, h.logs.log);
    await h.start(undefined, { TELEGRAM_GROUP_RATE_PER_MIN: '6000' }, planner);
  };

  const makeOrder = async (n: number, tag: string): Promise<number> => {
    const order = await Order.query(h.tdb.db).insert({});
    for (let i = 0; i < n; i++) {
      const p = await Product.query(h.tdb.db).insert({ name: `${tag}${i + 1}`, price: `${100 + i}.00`, image_path: `png/${1000 + i}` });
      await OrderItem.query(h.tdb.db).insert({ order_id: order.id, product_id: p.id, quantity: 1, price: `${100 + i}.00` });
    }
    return order.id;
  };

  const insertOrderRow = async (orderId: number, kind: string | null = 'new_order'): Promise<number> => {
    const [id] = await h.tdb
      .db('telegram_notifications')
      .insert({ telegram_id: ADMIN, message_text: `🛒 НОВЫЙ ЗАКАЗ #${orderId}\nСумма: 1000 руб.`, kind, order_id: kind ? orderId : null });
    return Number(id);
  };
  const status = async (id: number) => (await h.tdb.db('telegram_notifications').where({ id }).first()).status as string;

  it('12 products → the text, an album of 10 and an album of 2, in order, with captions', async () => {
    const orderId = await makeOrder(12, 'Товар-');
    const id = await insertOrderRow(orderId);
    await start();
    await waitFor(async () => (await status(id)) === 'sent', 20_000, 50, 'order sent');
    const d = h.sandbox.delivered(ADMIN);
    assert.deepEqual(
      d.map((x) => [x.method, x.mediaCount]),
      [
        ['sendMessage', 1],
        ['sendMediaGroup', 10],
        ['sendMediaGroup', 2],
      ],
    );
    assert.match(d[0]!.text!, /НОВЫЙ ЗАКАЗ/);
    const captions = d.slice(1).flatMap((x) => x.media!.map((m) => m.caption));
    assert.deepEqual(
      captions,
      Array.from({ length: 12 }, (_, i) => `Товар: Товар-${i + 1}\nЦена: ${100 + i} руб.`),
    );
    assert.ok(d[1]!.media!.every((m) => m.source === 'upload'));
  });

  it('a 1-product order → sendPhoto', async () => {
    const id = await insertOrderRow(await makeOrder(1, 'Solo'));
    await start();
    await waitFor(async () => (await status(id)) === 'sent', 20_000, 50, 'sent');
    assert.deepEqual(
      h.sandbox.delivered(ADMIN).map((x) => x.method),
      ['sendMessage', 'sendPhoto'],
    );
  });

  it('a 5xx on the second album: the retry sends only the second album', async () => {
    const id = await insertOrderRow(await makeOrder(12, 'R'));
    // Once the first album is accepted, the next sendMediaGroup (the second album) fails once.
    const onDelivered = (e: { method: string; mediaCount: number }): void => {
      if (e.method === 'sendMediaGroup' && e.mediaCount === 10) {
        h.sandbox.injectFailure({ chatId: ADMIN, method: 'sendMediaGroup', status: 502, count: 1 });
        h.sandbox.off('delivered', onDelivered);
      }
    };
    h.sandbox.on('delivered', onDelivered);
    await start();
    await waitFor(async () => (await status(id)) === 'sent', 20_000, 50, 'sent');
    const d = h.sandbox.delivered(ADMIN);
    assert.equal(h.sandbox.stats().injected, 1, 'the second album was rejected once');
    // Neither the text nor the first album was sent again.
    assert.deepEqual(
      d.map((x) => [x.method, x.mediaCount]),
      [
        ['sendMessage', 1],
        ['sendMediaGroup', 10],
        ['sendMediaGroup', 2],
      ],
    );
    const row = await h.tdb.db('telegram_notifications').where({ id }).first();
    assert.equal(row.retry_count, 1);
    assert.deepEqual(JSON.parse(row.progress), { done: 3, total: 3 });
  });

  it('a legacy row (НОВЫЙ ЗАКАЗ #N to an admin chat, no kind) gets the photos too', async () => {
    const id = await insertOrderRow(await makeOrder(3, 'L'), null);
    await start();
    await waitFor(async () => (await status(id)) === 'sent', 20_000, 50, 'sent');
    assert.deepEqual(
      h.sandbox.delivered(ADMIN).map((x) => [x.method, x.mediaCount]),
      [
        ['sendMessage', 1],
        ['sendMediaGroup', 3],
      ],
    );
  });
});
