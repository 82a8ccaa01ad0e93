import assert from 'node:assert/strict';
import type { KV, NatsConnection } from 'nats';
import { BudgetClient, COORDINATOR_KEY, READ_WAIT_MS, floorShare } from '../../src/cluster/budget-client';
import { GlobalGate } from '../../src/limits/global-gate';
import { Metrics } from '../../src/metrics';
import type { BudgetGrant } from '../../src/nats/payloads';
import { captureLogger } from '../helpers/services';
import { budgetClientOptions } from '../helpers/budget-client';

const NOW = 1_700_000_000_000;
const enc = (v: unknown) => new TextEncoder().encode(JSON.stringify(v));

/** A KV that holds the coordinator lease and member keys, as the cluster bucket does. */
function fakeKv(state: {
  coordinator: { holder: string; revision: number } | null;
  members: string[];
  failing?: boolean;
  hanging?: boolean;
  reads?: number;
}): KV {
  return {
    get: async (key: string) => {
      state.reads = (state.reads ?? 0) + 1;
      if (state.hanging) return new Promise(() => undefined);
      if (state.failing) throw Object.assign(new Error('503'), { code: '503' });
      if (key === COORDINATOR_KEY)
        return state.coordinator
          ? { operation: 'PUT', value: enc({ holder: state.coordinator.holder, instance: 'x', since: 0 }), revision: state.coordinator.revision }
          : null;
      const m = state.members.find((h) => `member.${h}` === key);
      return m ? { operation: 'PUT', value: enc({ holder: m, instance: 'x', since: 0 }), revision: 1 } : null;
    },
    keys: async () =>
      (async function* () {
        for (const m of state.members) yield `member.${m}`;
      })(),
  } as unknown as KV;
}

function client(kvState: Parameters<typeof fakeKv>[0], now = () => NOW) {
  const gate = new GlobalGate({ count: 30, windowMs: 1000 }, { now });
  const logs = captureLogger('info');
  const published: unknown[] = [];
  const nc = {
    publish: (_s: string, d: Uint8Array) => published.push(JSON.parse(new TextDecoder().decode(d))),
    subscribe: () => ({ unsubscribe() {} }),
  } as unknown as NatsConnection;
  const c = new BudgetClient(budgetClientOptions({ nc, kv: fakeKv(kvState), gate, log: logs.log, metrics: new Metrics(), now }));
  return { c, gate, logs, published };
}

const grant = (over: Partial<BudgetGrant> = {}): BudgetGrant => ({
  share: 10,
  window_ms: 1000,
  issued_at: NOW,
  expires_at: NOW + 500,
  coordinator: 'boss:1',
  lease_revision: 7,
  rate: 30,
  ...over,
});

describe('budget control messages (issue 10 item 5)', () => {
  it('a grant from the coordinator holding the lease at that revision is accepted', async () => {
    const { c } = client({ coordinator: { holder: 'boss:1', revision: 7 }, members: [] });
    assert.equal(await c.checkGrant(grant()), undefined);
  });

  it('while KV reads fail (a JetStream election), grants from the coordinator read less than a lease period ago are still accepted', async () => {
    let t = NOW;
    const kv: Parameters<typeof fakeKv>[0] = { coordinator: { holder: 'boss:1', revision: 7 }, members: [] };
    const { c } = client(kv, () => t);
    const view = c as unknown as { refreshView(): Promise<void> };
    await view.refreshView();
    kv.failing = true;
    t = NOW + 2_000;
    await view.refreshView();
    assert.equal(await c.checkGrant(grant({ issued_at: t, expires_at: t + 500 })), undefined, 'read 2 s ago, lease TTL 3 s');
    t = NOW + 3_000;
    await view.refreshView();
    assert.match((await c.checkGrant(grant({ issued_at: t, expires_at: t + 500 })))!, /unknown/, 'a lease period without a read: nothing is known');
  });

  it('while KV reads fail, a renewal of the coordinator we read (a newer revision) is accepted; an older one, another holder, or a newer one readable and absent is not', async () => {
    let t = NOW;
    const kv: Parameters<typeof fakeKv>[0] = { coordinator: { holder: 'boss:1', revision: 7 }, members: [] };
    const { c } = client(kv, () => t);
    const view = c as unknown as { refreshView(): Promise<void> };
    await view.refreshView();
    t = NOW + 1_000;
    const at = { issued_at: t, expires_at: t + 500 };
    assert.match((await c.checkGrant(grant({ ...at, lease_revision: 12 })))!, /revision 12/, 'reads work: the revision is looked up, and it is not there');
    kv.failing = true;
    assert.equal(await c.checkGrant(grant({ ...at, lease_revision: 12 })), undefined, 'the coordinator renewed during the election: we cannot read it');
    assert.match((await c.checkGrant(grant({ ...at, lease_revision: 5 })))!, /revision 5/, 'older than what we read');
    assert.match((await c.checkGrant(grant({ ...at, lease_revision: 12, coordinator: 'other:1' })))!, /not the coordinator's lease/);
    t = NOW + 4_000;
    await view.refreshView();
    assert.match((await c.checkGrant(grant({ issued_at: t, expires_at: t + 500, lease_revision: 12 })))!, /unknown/, 'a lease period since the last read');
  });

  it('while KV reads fail, a renewal accepted once is known: the next grants at its revision wait for no read', async () => {
    let t = NOW;
    const kv: Parameters<typeof fakeKv>[0] = { coordinator: { holder: 'boss:1', revision: 7 }, members: [] };
    const { c } = client(kv, () => t);
    await (c as unknown as { refreshView(): Promise<void> }).refreshView();
    kv.failing = true;
    t = NOW + 1_000;
    const at = { issued_at: t, expires_at: t + 500 };
    assert.equal(await c.checkGrant(grant({ ...at, lease_revision: 12 })), undefined);
    const reads = kv.reads;
    assert.equal(await c.checkGrant(grant({ ...at, lease_revision: 12 })), undefined);
    assert.equal(await c.checkGrant(grant({ ...at, lease_revision: 12 })), undefined);
    assert.equal(kv.reads, reads, 'no KV read for a revision already accepted');
  });

  it('a read that does not answer counts as failed after READ_WAIT_MS: a renewal of the coordinator we read is accepted then, not after the read gives up', async () => {
    const kv: Parameters<typeof fakeKv>[0] = { coordinator: { holder: 'boss:1', revision: 7 }, members: [] };
    const { c } = client(kv, () => NOW);
    await (c as unknown as { refreshView(): Promise<void> }).refreshView();
    kv.hanging = true;
    const t0 = Date.now();
    assert.equal(await c.checkGrant(grant({ lease_revision: 12 })), undefined);
    const took = Date.now() - t0;
    assert.ok(took >= READ_WAIT_MS - 5 && took < READ_WAIT_MS + 500, `decided after ${took} ms`);
    assert.match(
      (await c.checkGrant(grant({ lease_revision: 99, coordinator: 'other:1' })))!,
      /not the coordinator's lease/,
      'another holder is still refused',
    );
  });

  it('a grant naming another process than the lease holder is refused', async () => {
    const { c } = client({ coordinator: { holder: 'boss:1', revision: 7 }, members: [] });
    assert.match((await c.checkGrant(grant({ coordinator: 'forger:1' })))!, /not the coordinator's lease/);
  });

  it('a grant with a stale or invented lease revision is refused', async () => {
    const { c } = client({ coordinator: { holder: 'boss:1', revision: 7 }, members: [] });
    assert.match((await c.checkGrant(grant({ lease_revision: 99 })))!, /revision 99/);
  });

  it('a grant issued outside the clock-skew bound is refused (the forged future issued_at)', async () => {
    const { c } = client({ coordinator: { holder: 'boss:1', revision: 7 }, members: [] });
    assert.match((await c.checkGrant(grant({ issued_at: NOW + 86_400_000, expires_at: NOW + 86_400_500 })))!, /issued_at/);
    assert.match((await c.checkGrant(grant({ issued_at: NOW - 5_000, expires_at: NOW - 4_500 })))!, /issued_at/);
  });

  it('a share above the limit is refused (the forged 1e9)', async () => {
    const { c } = client({ coordinator: { holder: 'boss:1', revision: 7 }, members: [] });
    assert.match((await c.checkGrant(grant({ share: 1e9 })))!, /above the bot's limit/);
  });

  it('a grant living longer than the lease period is refused', async () => {
    const { c } = client({ coordinator: { holder: 'boss:1', revision: 7 }, members: [] });
    assert.match((await c.checkGrant(grant({ expires_at: NOW + 60_000 })))!, /lease period/);
  });

  it('a flood message from a process that is not a live member is ignored', async () => {
    const { c, gate } = client({ coordinator: null, members: ['peer:1'] });
    await (c as unknown as { refreshView(): Promise<void> }).refreshView();
    assert.equal(c.onFloodMessage({ until: NOW + 5_000, instance: 'evil', holder: 'evil:1' }), false);
    assert.equal(gate.pausedUntilMs, 0);
    assert.equal(c.onFloodMessage({ until: NOW + 5_000, instance: 'peer', holder: 'peer:1' }), true);
    assert.equal(gate.pausedUntilMs, NOW + 5_000);
    gate.stop();
  });

  it('a flood pause of 30 days is clamped to the longest retry_after accepted, and logged; no timer overflows', async () => {
    const { c, gate, logs } = client({ coordinator: null, members: ['peer:1'] });
    await (c as unknown as { refreshView(): Promise<void> }).refreshView();
    const warnings: string[] = [];
    process.on('warning', (w) => warnings.push(w.name));
    assert.equal(c.onFloodMessage({ until: NOW + 30 * 86_400_000, instance: 'peer', holder: 'peer:1' }), true);
    assert.equal(gate.pausedUntilMs, NOW + 3_600_000);
    assert.match(logs.text(), /clamped/);
    await new Promise((r) => setImmediate(r));
    assert.ok(!warnings.includes('TimeoutOverflowWarning'));
    gate.stop();
  });

  it('a flood with its instant: the process reports at once what it got accepted in the window ending then', async () => {
    let t = NOW;
    const { c, gate, published } = client({ coordinator: null, members: ['peer:1'] }, () => t);
    await (c as unknown as { refreshView(): Promise<void> }).refreshView();
    gate.setLimit({ count: 30, windowMs: 1000 });
    // 12 sends accepted 100 ms apart (NOW … NOW+1100); the 429 came at NOW+1000: the window (NOW, NOW+1000] holds 10.
    for (let i = 0; i < 12; i++) {
      t = NOW + i * 100;
      gate.request({ priority: 0, backlogMs: 0, readySince: t, cost: 1, grant: (r) => gate.settle(r, t, true) });
    }
    t = NOW + 1_150;
    assert.equal(c.onFloodMessage({ until: t + 1_000, instance: 'peer', holder: 'peer:1', at: NOW + 1_000 }), true);
    const r = published.at(-1) as { accepted: number; accepted_at: number };
    assert.deepEqual([r.accepted, r.accepted_at], [10, NOW + 1_000]);
    gate.stop();
  });

  it('stop(): the last report says the process leaves, and when its past sends leave its window', async () => {
    let t = NOW;
    const { c, gate, published } = client({ coordinator: null, members: [] }, () => t);
    c.start();
    gate.setLimit({ count: 30, windowMs: 1000 });
    gate.request({ priority: 0, backlogMs: 0, readySince: t, cost: 1, grant: (r) => gate.settle(r, t, true) });
    t = NOW + 300;
    c.stop();
    const r = published.at(-1) as { leaving: boolean; free_at: number; demand: number; share: number };
    // The send answered at NOW leaves the window at NOW + 1000 (+2 ms margin).
    assert.deepEqual([r.leaving, r.free_at, r.demand, r.share], [true, NOW + 1_002, 0, 0]);
    gate.stop();
  });

  it('joining without a coordinator: the floor until the membership was watched for one lease period, then limit ÷ members', async () => {
    let t = NOW;
    const { c, gate } = client({ coordinator: null, members: ['peer:1', 'me:1'] }, () => t);
    const priv = c as unknown as { refreshView(): Promise<void>; check(): void; setShare(n: number, m: string): void };
    priv.setShare(floorShare(30), 'starting');
    await priv.refreshView();
    t = NOW + 2_999;
    priv.check();
    assert.deepEqual([c.current.share, c.current.mode, gate.limit.count], [1, 'starting', 1], 'not yet watched for a full lease period');
    t = NOW + 3_000;
    await priv.refreshView(); // the coordinator was last looked at recently: there is none
    priv.check();
    assert.deepEqual([c.current.share, c.current.mode], [15, 'fallback']);
    gate.stop();
  });
});

describe('GlobalGate with a share of 0', () => {
  it('grants nothing until the share is raised (a capped cost of 0 used to pass any window)', () => {
    const clock = { now: () => NOW };
    const gate = new GlobalGate({ count: 0, windowMs: 1000 }, clock);
    let granted = 0;
    gate.request({ priority: 0, backlogMs: 0, readySince: NOW, cost: 1, grant: () => granted++ });
    assert.equal(granted, 0);
    gate.setLimit({ count: 1, windowMs: 1000 });
    assert.equal(granted, 1);
    gate.stop();
  });
});

describe('GlobalGate pacing', () => {
  it('spreads a window over its length: bursts of count/10, the full rate on average', () => {
    let t = NOW;
    const clock = { now: () => t };
    const gate = new GlobalGate({ count: 100, windowMs: 1000 }, clock, 0.1);
    const grants: number[] = [];
    for (let i = 0; i < 100; i++)
      gate.request({
        priority: 0,
        backlogMs: 0,
        readySince: NOW,
        cost: 1,
        grant: (r) => {
          grants.push(t);
          gate.settle(r, t, true);
        },
      });
    assert.equal(grants.length, 10, 'a burst of 10 at once, not 100');
    for (let step = 0; step < 90; step++) {
      t += 10;
      gate.setLimit(gate.limit); // pump (the real gate wakes itself on a timer)
    }
    assert.equal(grants.length, 100, 'the whole window within it');
    assert.ok(grants[99]! - NOW <= 900);
    assert.equal(gate.acceptedPerSecond(), 100);
    gate.stop();
  });
});
