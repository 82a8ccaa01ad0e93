import type { BudgetClientOptions } from '../../src/cluster/budget-client';
import { makeSubjects } from '../../src/nats/subjects';

/** The options a unit test's budget client runs with: one member `me:1` of a 30/s bot, a 3 s lease TTL. */
export function budgetClientOptions(
  o: Pick<BudgetClientOptions, 'nc' | 'kv' | 'gate' | 'log' | 'metrics'> & Partial<BudgetClientOptions>,
): BudgetClientOptions {
  return {
    subjects: makeSubjects('t.'),
    holder: 'me:1',
    instance: 'me',
    global: { count: 30, windowMs: 1000 },
    demand: () => 0,
    leaseTtlMs: 3000,
    maxPauseMs: 3_600_000,
    maxSkewMs: 2_000,
    ...o,
  };
}
