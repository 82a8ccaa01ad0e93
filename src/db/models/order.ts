import { Model, type RelationMappings } from 'objection';
import { OrderItem } from './order-item';

/** A customer order. `total` is a DECIMAL(12,2) string. */
export class Order extends Model {
  static override tableName = 'orders';

  id!: number;
  customer_chat_id!: number | null;
  customer_user_id!: number | null;
  total!: string;
  /** Free-form shop status; 'new' when created. */
  status!: string;
  created_at!: Date;
  updated_at!: Date;

  items?: OrderItem[];

  static override get relationMappings(): RelationMappings {
    return {
      items: { relation: Model.HasManyRelation, modelClass: OrderItem, join: { from: 'orders.id', to: 'order_items.order_id' } },
    };
  }
}
