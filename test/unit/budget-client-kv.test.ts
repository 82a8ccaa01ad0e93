import assert from 'node:assert/strict';
import type { KV, KvEntry, NatsConnection } from 'nats';
import { BudgetClient, COORDINATOR_KEY } from '../../src/cluster/budget-client';
import { GlobalGate } from '../../src/limits/global-gate';
import { Metrics } from '../../src/metrics';
import { captureLogger } from '../helpers/services';
import { budgetClientOptions } from '../helpers/budget-client';

const enc = (v: unknown) => new TextEncoder().encode(typeof v === 'string' ? v : JSON.stringify(v));

/** A KV whose keys hold whatever a peer (or a forger) wrote. */
function kvOf(values: Record<string, unknown>): KV {
  const entry = (key: string): KvEntry | null =>
    key in values ? ({ bucket: 'c', key, operation: 'PUT', value: enc(values[key]), revision: 5 } as unknown as KvEntry) : null;
  return {
    get: async (key: string) => entry(key),
    keys: async () =>
      (async function* () {
        for (const k of Object.keys(values)) if (k.startsWith('member.')) yield k;
      })(),
  } as unknown as KV;
}

/** The budget client reads peers' KV values like any input (issue 12 item 3). */
describe('budget client: lease and member values are validated', () => {
  it('a member or coordinator value that is not a lease is ignored, counted and logged once per key', async () => {
    const gate = new GlobalGate({ count: 30, windowMs: 1000 });
    const metrics = new Metrics();
    const logs = captureLogger('info');
    const kv = kvOf({
      [COORDINATOR_KEY]: { holder: 42 },
      'member.good:1': { holder: 'good:1', instance: 'good', since: 1 },
      'member.garbage': '{not json',
      'member.wrong': { holder: '', instance: 'x', since: 0 },
    });
    const nc = { publish: () => undefined, subscribe: () => ({ unsubscribe() {} }) } as unknown as NatsConnection;
    const c = new BudgetClient(budgetClientOptions({ nc, kv, gate, log: logs.log, metrics }));
    const priv = c as unknown as { refreshView(): Promise<void>; members: Set<string>; coordinator: { holder: string | undefined } };
    await priv.refreshView();
    await priv.refreshView();
    assert.deepEqual([...priv.members], ['good:1'], 'only the valid member counts');
    assert.equal(priv.coordinator.holder, undefined, 'an invalid coordinator value names no coordinator');
    const bad = await metrics.registry.getSingleMetric('nats_bad_payloads_total')!.get();
    const codes = bad.values.map((v) => [v.labels.code, v.value]).sort();
    // Three bad keys, read twice each.
    assert.deepEqual(codes, [['BAD_PAYLOAD', 6]]);
    const warned = logs.lines().filter((l) => l.msg === 'invalid cluster KV value ignored');
    assert.deepEqual(warned.map((l) => l.key).sort(), [COORDINATOR_KEY, 'member.garbage', 'member.wrong']);
    gate.stop();
  });
});
