import { Model } from 'objection';

export type RecipientStatus = 'ok' | 'blocked' | 'deactivated' | 'kicked' | 'not_found' | 'migrated';

/** A chat Telegram told us about: unreachable (with the reason) or migrated to a new id. */
export class Recipient extends Model {
  static override tableName = 'telegram_recipients';
  static override idColumn = 'chat_id';

  chat_id!: number;
  status!: RecipientStatus;
  reason!: string | null;
  error_code!: string | null;
  migrated_to_chat_id!: number | null;
  unreachable_since!: Date | null;
  updated_at!: Date;
}
