import { Model } from 'objection';

/** A unique view: (ad, salted visitor hash, dedup window). Inserted with INSERT IGNORE by the view counter. */
export class AdView extends Model {
  static override tableName = 'ad_views';
  static override idColumn = ['ad_id', 'visitor_hash', 'window_no'];

  ad_id!: number;
  visitor_hash!: Buffer;
  window_no!: number;
  created_at!: Date;
}
