import { Model } from 'objection';

/** A site message; the unread cache counts rows with `is_read = 0` per recipient. */
export class Message extends Model {
  static override tableName = 'messages';

  id!: number;
  sender_id!: number;
  recipient_id!: number;
  body!: string | null;
  is_read!: number;
  created_at!: Date;
}
