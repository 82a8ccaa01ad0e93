import type { Knex } from 'knex';
import * as m0001 from './0001_telegram_notifications';
import * as m0002 from './0002_telegram_recipients';

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
];
