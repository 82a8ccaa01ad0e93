import { Model, type RelationMappings } from 'objection';
import { Product } from './product';
import { Order } from './order';

/** One line of an order: a product, its quantity and its unit price at order time (string, DECIMAL). */
export class OrderItem extends Model {
  static override tableName = 'order_items';

  id!: number;
  order_id!: number;
  product_id!: number;
  quantity!: number;
  price!: string;

  product?: Product;
  order?: Order;

  // A getter: the classes import each other, so the mapping is built on first use.
  static override get relationMappings(): RelationMappings {
    return {
      product: { relation: Model.BelongsToOneRelation, modelClass: Product, join: { from: 'order_items.product_id', to: 'products.id' } },
      order: { relation: Model.BelongsToOneRelation, modelClass: Order, join: { from: 'order_items.order_id', to: 'orders.id' } },
    };
  }
}
