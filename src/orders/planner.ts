import type { Knex } from 'knex';
import type { Logger } from '../log';
import type { ImagesConfig } from '../config/images';
import type { ImageSource } from '../images/source';
import { textParts, type Part, type Planner } from '../outbox/plan';
import type { OutboxRow } from '../outbox/types';
import { orderIdOfNotification, orderRepository, planOrderNotification, type OrderRepository } from './plan';

/**
 * The planner the pipeline uses: new-order notifications (kind 'new_order' with an
 * order_id, or a legacy row "НОВЫЙ ЗАКАЗ #<id>" to an admin chat) get their text and
 * then the products' photos; every other row is its text, split at 4096 characters.
 */
export class OrderAwarePlanner implements Planner {
  private readonly orders: OrderRepository;

  constructor(
    db: Knex,
    private readonly images: ImageSource,
    private readonly config: Pick<ImagesConfig, 'baseUrl' | 'sendMode' | 'orderCaptionTemplate' | 'orderImageUnavailableText' | 'adminChatIds'>,
    private readonly log: Logger,
  ) {
    this.orders = orderRepository(db);
  }

  async plan(row: OutboxRow): Promise<Part[]> {
    const text = textParts(row);
    const orderId = orderIdOfNotification({ kind: row.kind, order_id: row.orderId, telegram_id: row.chatId, message_text: row.text }, this.config.adminChatIds);
    if (orderId === null) return text;
    const order = await planOrderNotification(
      { orders: this.orders, images: this.images, config: this.config, log: this.log },
      { text: row.text, parseMode: row.parseMode, orderId },
    );
    // The order plan starts with the text as given; ours is split and honours the plain-text fallback.
    return [...text, ...order.slice(1)];
  }
}
