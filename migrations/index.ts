import type { Knex } from 'knex';
import * as m0001 from './0001_telegram_notifications';
import * as m0002 from './0002_telegram_recipients';
import * as m0003 from './0003_advertisements';
import * as m0004 from './0004_ad_views';
import * as m0005 from './0005_messages';
import * as m0006 from './0006_bump_runs';
import * as m0020 from './0020_products';
import * as m0021 from './0021_orders';
import * as m0022 from './0022_order_items';
import * as m0023 from './0023_shard_owners';
import * as m0024 from './0024_idempotency_key_binary';
import * as m0025 from './0025_ad_view_dead_letters';

export interface MigrationModule {
  name: string;
  up: (knex: Knex) => Promise<void>;
  down: (knex: Knex) => Promise<void>;
}

/**
 * Append-only, in order. Never edit or reorder an entry that may have been applied
 * somewhere: add a new one.
 */
export const migrations: MigrationModule[] = [
  { name: '0001_telegram_notifications', ...m0001 },
  { name: '0002_telegram_recipients', ...m0002 },
  { name: '0003_advertisements', ...m0003 },
  { name: '0004_ad_views', ...m0004 },
  { name: '0005_messages', ...m0005 },
  { name: '0006_bump_runs', ...m0006 },
  { name: '0020_products', ...m0020 },
  { name: '0021_orders', ...m0021 },
  { name: '0022_order_items', ...m0022 },
  { name: '0023_shard_owners', ...m0023 },
  { name: '0024_idempotency_key_binary', ...m0024 },
  { name: '0025_ad_view_dead_letters', ...m0025 },
];
