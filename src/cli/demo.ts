import type { NatsConnection } from 'nats';
import type { Knex } from '../db/knex';
import { encodeJson } from '../nats/codec';
import { Subjects, type SubjectSet } from '../nats/subjects';
import type { EnqueueReply } from '../nats/payloads';
import { CliError, requestError } from './errors';

const dec = new TextDecoder();

export interface DemoOptions {
  db: Knex;
  nc: NatsConnection;
  subjects: SubjectSet;
  /** NATS_SUBJECT_PREFIX (every subject takes it). */
  adsPrefix: string;
  adminChatId: number;
  customerChatId: number;
  /** The site user who owns the demo ads and receives the demo messages. */
  userId: number;
  /** How long to wait for the demo notifications to be delivered (ms). */
  waitMs: number;
  print: (line: string) => void;
}

export interface DemoResult {
  productIds: number[];
  orderId: number;
  adIds: number[];
  messageIds: number[];
  notificationIds: number[];
  /** Status of each demo notification when the wait ended. */
  statuses: string[];
}

/** Product photos the sandbox serves at /sandbox/images/<name>.png (see sandbox/demo-images.ts). */
const PRODUCTS = [
  { name: 'Кружка «Утро»', price: 450, image_path: 'red.png' },
  { name: 'Футболка «Бот»', price: 1200, image_path: 'green.png' },
  { name: 'Блокнот в клетку', price: 199.9, image_path: 'blue.png' },
  { name: 'Наклейки (без фото)', price: 99, image_path: null },
];

/**
 * Seeds a demo on a running system: products with photos, an order and its new-order
 * notification to an admin (text, album, the product without a photo), a customer
 * message, ads and unread messages. Notifications go through notify.enqueue like any
 * producer's; the unread cache hears of the messages through messages.created.
 */
export async function seedDemo(o: DemoOptions): Promise<DemoResult> {
  const { db, nc, subjects, print } = o;
  // A worker must be there to deliver; say so before writing anything.
  await nc.request(subjects.clusterStatus, new Uint8Array(), { timeout: 3_000 }).catch((e: unknown) => {
    throw requestError(subjects.clusterStatus, 'worker', e);
  });

  const productIds: number[] = [];
  for (const p of PRODUCTS) {
    const [id] = await db('products').insert(p);
    productIds.push(Number(id));
  }
  const items = PRODUCTS.map((p, i) => ({ product_id: productIds[i] ?? 0, quantity: i === 1 ? 2 : 1, price: p.price }));
  const total = items.reduce((s, it) => s + it.price * it.quantity, 0);
  const [orderId] = await db('orders').insert({ customer_chat_id: o.customerChatId, customer_user_id: o.userId, total, status: 'new' });
  await db('order_items').insert(items.map((it) => ({ ...it, order_id: Number(orderId) })));
  print(`products ${productIds.join(', ')} and order #${orderId} (${items.length} lines, ${total.toFixed(2)} руб.) written`);

  const enqueue = async (payload: Record<string, unknown>): Promise<number> => {
    const m = await nc.request(subjects.enqueue, encodeJson(payload), { timeout: 5_000 }).catch((e: unknown) => {
      throw requestError(subjects.enqueue, 'worker', e);
    });
    const r = JSON.parse(dec.decode(m.data)) as EnqueueReply;
    if (!r.ok) throw new CliError(`enqueue refused: ${r.error.code}: ${r.error.message}`);
    return r.id;
  };
  const adminText = `<b>НОВЫЙ ЗАКАЗ #${orderId}</b>\nПокупатель: чат ${o.customerChatId}\nСумма: ${total.toFixed(2)} руб.`;
  const notificationIds = [
    await enqueue({ chat_id: o.adminChatId, text: adminText, kind: 'new_order', order_id: Number(orderId), idempotency_key: `demo-order-${orderId}` }),
    await enqueue({ chat_id: o.customerChatId, text: `Спасибо! Заказ <b>#${orderId}</b> принят.`, idempotency_key: `demo-customer-${orderId}` }),
  ];
  print(
    `notifications ${notificationIds.join(', ')} enqueued: the order (text, an album of 3 photos, then the product without a photo) to chat ${o.adminChatId}, a thank-you to chat ${o.customerChatId}`,
  );

  const adIds: number[] = [];
  for (const title of ['Велосипед, почти новый', 'Диван угловой', 'Ноутбук 14"']) {
    // An old bumped_at makes them due for the next bump.
    const [id] = await db('advertisements').insert({
      owner_id: o.userId,
      title,
      is_active: 1,
      auto_bump: 1,
      bumped_at: new Date(Date.now() - 7 * 24 * 3600_000),
    });
    adIds.push(Number(id));
  }
  const messageIds: number[] = [];
  for (const body of ['Ещё продаёте?', 'Торг уместен?', 'Можно посмотреть сегодня?']) {
    const [id] = await db('messages').insert({ sender_id: o.userId + 1, recipient_id: o.userId, body, is_read: 0 });
    messageIds.push(Number(id));
    nc.publish(Subjects.messagesCreated(o.adsPrefix), encodeJson({ id: Number(id), sender_id: o.userId + 1, recipient_id: o.userId }));
  }
  await nc.flush();
  print(`ads ${adIds.join(', ')} (owner ${o.userId}) and ${messageIds.length} unread messages to user ${o.userId} written`);

  const deadline = Date.now() + o.waitMs;
  let statuses: string[] = [];
  for (;;) {
    const rows = await db<{ id: number; status: string }>('telegram_notifications').whereIn('id', notificationIds).select('id', 'status');
    statuses = notificationIds.map((id) => rows.find((r) => r.id === id)?.status ?? 'missing');
    if (statuses.every((s) => s === 'sent' || s === 'failed') || Date.now() >= deadline) break;
    await new Promise((r) => setTimeout(r, 250));
  }
  print(
    `delivery: ${notificationIds.map((id, i) => `#${id} ${statuses[i]}`).join(', ')}${statuses.every((s) => s === 'sent') ? '' : ' (still going: see npm run cli -- recipient <chat id>)'}`,
  );
  return { productIds, orderId: Number(orderId), adIds, messageIds, notificationIds, statuses };
}

/** The commands to try next, with this setup's ports and ids. */
export function nextCommands(r: DemoResult, o: { adminChatId: number; userId: number; gatewayPort: number; sandboxPort: number }): string[] {
  const ad = r.adIds[0] ?? 1;
  return [
    'npm run cli -- status                          # which process holds which shards',
    'npm run cli -- top                             # live view of the backlog and send rates (Ctrl-C leaves)',
    `npm run cli -- enqueue ${o.adminChatId} '<b>hello</b>'        # one more notification`,
    `npm run cli -- recipient ${o.adminChatId}                 # that chat's notifications by status`,
    `curl -s 'localhost:${o.sandboxPort}/sandbox/delivered?chat_id=${o.adminChatId}'   # what the sandbox received`,
    `curl -s -X POST localhost:${o.gatewayPort}/ads/${ad}/views          # a view beacon`,
    `curl -s localhost:${o.gatewayPort}/ads/${ad}/views                  # its views`,
    `curl -s localhost:${o.gatewayPort}/users/${o.userId}/unread                  # unread messages (3)`,
    'npm run cli -- bump                            # bump the due ads now',
  ];
}
