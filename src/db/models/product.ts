import { Model } from 'objection';

/** A shop product. `price` is a DECIMAL(12,2), returned by mysql2 as a string ("1499.90"). */
export class Product extends Model {
  static override tableName = 'products';

  id!: number;
  name!: string;
  price!: string;
  /** Resolved against IMAGE_BASE_URL; an absolute http(s) URL is used as is. Null: no photo. */
  image_path!: string | null;
  created_at!: Date;
  updated_at!: Date;
}
