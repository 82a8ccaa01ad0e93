/**
 * The delivery plan of a new-order notification for the admins: the order text, then
 * the products' photos as albums, then one text listing the products whose photo could
 * not be fetched. The sender executes the parts in order and records which were accepted.
 */
import type { Knex } from 'knex';
import type { PhotoItem, PhotoSource } from '../telegram/client';
import { IMAGES_DEFAULTS, type ImagesConfig } from '../config/images';
import type { ImageSource } from '../images/source';
import type { Logger } from '../log';
import { OrderItem } from '../db/models/order-item';
import { Order } from '../db/models/order';

/** One Telegram call of a plan (see outbox/plan.ts). Albums hold 2–10 items; captions are plain text. */
import type { Part } from '../outbox/plan';
export type { Part };

/** Telegram's limits (Bot API): items per album, caption and text lengths, photo by URL. */
export const ALBUM_MAX = 10;
export const CAPTION_MAX = 1024;
export const TEXT_MAX = 4096;
export const URL_PHOTO_MAX_BYTES = 5 * 1024 * 1024;
/** Appended to a product's caption text when its photo is missing. */
export const IMAGE_UNAVAILABLE = IMAGES_DEFAULTS.ORDER_IMAGE_UNAVAILABLE_TEXT;

/** One product of an order, as the plan needs it. */
export interface OrderLine {
  productId: number;
  name: string;
  /** Unit price at order time, DECIMAL as string ("1499.90"). */
  price: string;
  quantity: number;
  imagePath: string | null;
}

export interface OrderRepository {
  /** The order's lines in the order they were added; null when the order does not exist. */
  orderLines(orderId: number): Promise<OrderLine[] | null>;
}

/**
 * OrderRepository over the objection models, bound to `db` (not the global knex). One
 * join with explicit columns (withGraphJoined would select every column objection has
 * cached for the table, which breaks over legacy tables with fewer columns).
 */
export function orderRepository(db: Knex): OrderRepository {
  return {
    async orderLines(orderId) {
      const order = await Order.query(db).findById(orderId).select('id');
      if (!order) return null;
      const rows = await OrderItem.query(db)
        .join('products', 'products.id', 'order_items.product_id')
        .where('order_items.order_id', orderId)
        .orderBy('order_items.id')
        .select('order_items.product_id', 'order_items.quantity', 'order_items.price', 'products.name', 'products.image_path')
        .castTo<OrderLineRow[]>();
      return rows.map((r) => ({ productId: r.product_id, name: r.name, price: r.price, quantity: r.quantity, imagePath: r.image_path }));
    },
  };
}

interface OrderLineRow {
  product_id: number;
  quantity: number;
  price: string;
  name: string;
  image_path: string | null;
}

export interface PlanDeps {
  orders: OrderRepository;
  images: ImageSource;
  config: Pick<ImagesConfig, 'baseUrl' | 'sendMode' | 'orderCaptionTemplate' | 'orderImageUnavailableText'>;
  log: Logger;
}

export interface PlanInput {
  /** The notification's text, sent first and unchanged. */
  text: string;
  parseMode: string | null;
  orderId: number;
}

/**
 * Builds the parts for one new-order notification: [text, albums of ≤ 10 photos (a
 * chunk of 1 goes as sendPhoto), one text part listing every product without a photo].
 * Never drops a product: a photo that cannot be fetched becomes a text line, and the
 * reason is logged. An unknown order gives the text alone (logged).
 */
export async function planOrderNotification(deps: PlanDeps, input: PlanInput): Promise<Part[]> {
  const parts: Part[] = [{ method: 'sendMessage', text: input.text, parseMode: input.parseMode }];
  const lines = await deps.orders.orderLines(input.orderId);
  if (lines === null) {
    deps.log.warn({ orderId: input.orderId }, 'new-order notification for an unknown order: sending the text only');
    return parts;
  }
  const results = await Promise.all(lines.map((line) => photoFor(deps, input.orderId, line)));
  const photos: PhotoItem[] = [];
  const missing: OrderLine[] = [];
  results.forEach((photo, i) => {
    if (photo) photos.push({ photo, caption: renderCaption(deps.config.orderCaptionTemplate, lines[i]!) });
    else missing.push(lines[i]!);
  });
  for (const chunk of chunkPhotos(photos)) {
    parts.push(chunk.length === 1 ? { method: 'sendPhoto', item: chunk[0]! } : { method: 'sendMediaGroup', items: chunk });
  }
  for (const text of unavailableTexts(deps.config.orderCaptionTemplate, missing, deps.config.orderImageUnavailableText ?? IMAGE_UNAVAILABLE))
    parts.push({ method: 'sendMessage', text, parseMode: null });
  return parts;
}

async function photoFor(deps: PlanDeps, orderId: number, line: OrderLine): Promise<PhotoSource | null> {
  const url = imageUrl(line.imagePath, deps.config.baseUrl);
  if (url === null) {
    deps.log.warn(
      { orderId, productId: line.productId, imagePath: line.imagePath, reason: line.imagePath ? 'bad_url' : 'no_image_path' },
      'product photo unavailable',
    );
    return null;
  }
  const r = await deps.images.get(url, line.productId);
  if (!r.ok) {
    deps.log.warn({ orderId, productId: line.productId, url, reason: r.reason, err: r.message }, 'product photo unavailable');
    return null;
  }
  // Telegram fetches URL photos itself, up to 5 MB; larger ones go as uploads (≤ 10 MB).
  if (deps.config.sendMode === 'url' && r.bytes.byteLength <= URL_PHOTO_MAX_BYTES) return { kind: 'url', url };
  return { kind: 'bytes', data: r.bytes, filename: `product-${line.productId}.${extensionOf(r.contentType)}` };
}

/**
 * `IMAGE_BASE_URL + image_path` (as the legacy code did, minus a doubled slash); an
 * absolute http(s) path is used as is. Null when there is no path or no way to resolve it.
 */
export function imageUrl(imagePath: string | null, baseUrl: string | undefined): string | null {
  const p = imagePath?.trim();
  if (!p) return null;
  try {
    if (/^https?:\/\//i.test(p)) return new URL(p).href;
    if (!baseUrl) return null;
    return new URL((baseUrl.endsWith('/') ? baseUrl : `${baseUrl}/`) + p.replace(/^\/+/, '')).href;
  } catch {
    return null;
  }
}

/** Splits photos into albums of ≤ 10, in order; the last chunk may have 1 photo (→ sendPhoto). */
export function chunkPhotos<T>(items: readonly T[]): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += ALBUM_MAX) out.push(items.slice(i, i + ALBUM_MAX));
  return out;
}

/** Fills {name}, {price}, {quantity}, {id}; cut to 1024 characters with an ellipsis. */
export function renderCaption(template: string, line: OrderLine): string {
  const values: Record<string, string> = { name: line.name, price: formatPrice(line.price), quantity: String(line.quantity), id: String(line.productId) };
  const text = template.replace(/\{(name|price|quantity|id)\}/g, (_, k: string) => values[k] ?? '');
  return truncate(text, CAPTION_MAX);
}

/** "1500.00" → "1500", "1499.90" → "1499.90": whole prices without kopecks, as the shop writes them. */
export function formatPrice(price: string | number): string {
  const n = typeof price === 'number' ? price : Number(price);
  if (!Number.isFinite(n)) return String(price);
  return Number.isInteger(n) ? String(n) : n.toFixed(2);
}

/** Cuts to `max` UTF-16 units (Telegram's count), never inside a surrogate pair, ending with '…'. */
export function truncate(text: string, max: number): string {
  if (text.length <= max) return text;
  let cut = max - 1;
  const code = text.charCodeAt(cut - 1);
  if (code >= 0xd800 && code <= 0xdbff) cut--;
  return `${text.slice(0, cut)}…`;
}

/** One block per product without a photo (its caption + "(image unavailable)"), packed into texts of ≤ 4096. */
function unavailableTexts(template: string, missing: readonly OrderLine[], unavailable: string): string[] {
  const texts: string[] = [];
  let current = '';
  for (const line of missing) {
    const block = truncate(`${renderCaption(template, line)}\n${unavailable}`, TEXT_MAX);
    if (current && current.length + 2 + block.length > TEXT_MAX) {
      texts.push(current);
      current = '';
    }
    current = current ? `${current}\n\n${block}` : block;
  }
  if (current) texts.push(current);
  return texts;
}

function extensionOf(contentType: string): string {
  const sub = contentType.split('/')[1] ?? 'jpg';
  if (sub === 'jpeg' || sub === 'pjpeg') return 'jpg';
  return sub.replace(/[^a-z0-9]/g, '') || 'jpg';
}

const LEGACY_ORDER = /НОВЫЙ ЗАКАЗ #(\d+)/u;

/**
 * The order id of a legacy row: text containing `НОВЫЙ ЗАКАЗ #<id>` sent to a chat in
 * ADMIN_CHAT_IDS. Null otherwise (a customer quoting the phrase gets no photos).
 */
export function detectLegacyOrder(text: string, chatId: number, adminChatIds: readonly number[]): number | null {
  if (!adminChatIds.includes(chatId)) return null;
  const m = LEGACY_ORDER.exec(text);
  if (!m) return null;
  const id = Number(m[1]);
  return Number.isSafeInteger(id) && id > 0 ? id : null;
}

/**
 * Which order a notification row is about: `kind = 'new_order'` rows carry `order_id`;
 * rows without a kind are checked with detectLegacyOrder. Null: an ordinary message.
 */
export function orderIdOfNotification(
  row: { kind: string | null; order_id: number | null; telegram_id: number; message_text: string },
  adminChatIds: readonly number[],
): number | null {
  if (row.kind === 'new_order') {
    if (row.order_id !== null) return row.order_id;
    const id = Number(LEGACY_ORDER.exec(row.message_text)?.[1]);
    return Number.isSafeInteger(id) && id > 0 ? id : null;
  }
  if (row.kind === null) return detectLegacyOrder(row.message_text, row.telegram_id, adminChatIds);
  return null;
}
