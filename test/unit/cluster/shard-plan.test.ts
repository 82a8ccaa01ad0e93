import { strict as assert } from 'node:assert';
import { HeldShards } from '../../../src/cluster/held-shards';
import type { KvLease } from '../../../src/cluster/lease';
import { memberKey, planShards, wantedShards } from '../../../src/cluster/shard-plan';

/** A lease whose validity and renewal answer the test decides. */
const fakeLease = (o: { valid: boolean; renew?: boolean | Error }) =>
  ({
    valid: () => o.valid,
    renew: () => (o.renew instanceof Error ? Promise.reject(o.renew) : Promise.resolve(o.renew ?? true)),
    o,
  }) as unknown as KvLease & { o: typeof o };

describe('shard plan: what a shard owner does at a tick', () => {
  it('counts itself and its own leases, hands off what the assignment gives away, wants only free shards', () => {
    const view = { members: ['b:1'], shards: new Map([[2, 'b:1']]), stale: new Map([[3, 'dead:1']]) };
    // a holds 0 and 1; b holds 2; 3 belongs to a silent holder (left out of `shards`, free to take).
    const plan = planShards(4, 'a:1', view, [0, 1]);
    assert.deepEqual(plan.members, ['b:1', 'a:1']);
    assert.equal(plan.map.get(0), 'a:1');
    assert.deepEqual(plan.surplus, [], 'a keeps its quota of two');
    assert.deepEqual(wantedShards(plan, 'a:1', new Set([0, 1])), []);
    assert.deepEqual(wantedShards(plan, 'b:1', new Set([2])), [3], 'b takes the silent holder’s shard');
    const three = planShards(4, 'a:1', { members: ['b:1', 'c:1'], shards: new Map(), stale: new Map() }, [0, 1, 2, 3]);
    assert.equal(three.surplus.length, 2, 'with three members a keeps two of four');
    assert.equal(memberKey('host:1/x y'), 'member.host_1/x_y');
  });
});

describe('HeldShards: fencing and resuming held leases', () => {
  it('fences the late ones once, resumes them after a renewal, drops the ones someone else wrote', async () => {
    const held = new HeldShards();
    const l0 = fakeLease({ valid: true });
    const l1 = fakeLease({ valid: false, renew: new Error('503') });
    const l2 = fakeLease({ valid: true, renew: false });
    held.leases.set(0, l0).set(1, l1).set(2, l2);
    assert.deepEqual(held.fenceLate(), [1]);
    assert.deepEqual(held.fenceLate(), [], 'already fenced');
    assert.deepEqual(held.sending(), [0, 2]);
    let r = await held.renewAll();
    assert.deepEqual(r, { lost: [2], wasSending: [2], resumed: [] }, 'no answer for 1: still ours, still fenced');
    assert.deepEqual(held.status(), { owned: [0, 1], fenced: [1] });
    l1.o.renew = true;
    l1.o.valid = true;
    r = await held.renewAll();
    assert.deepEqual(r.resumed, [1]);
    assert.deepEqual(held.resumeValid(), [1]);
    assert.equal(held.sendingCount, 2);
  });

  it('a streak of unanswered renewals: its start is kept, the first answered round reports its length; the probe retries one lease until the KV answers', async () => {
    let t = 1_000;
    const held = new HeldShards();
    const l0 = fakeLease({ valid: true, renew: new Error('503') });
    const l1 = fakeLease({ valid: true, renew: new Error('503') });
    held.leases.set(0, l0).set(1, l1);
    let r = await held.renewAll(() => t);
    assert.equal(held.failingSince, 1_000);
    assert.equal(r.failingForMs, undefined);
    t = 3_000;
    await held.renewAll(() => t);
    assert.equal(held.failingSince, 1_000, 'the streak goes on');
    assert.equal(await held.probe(), false, 'no answer');
    let answered = 0;
    let probes = 0;
    const renew = l0.renew.bind(l0);
    (l0 as unknown as { renew: () => Promise<boolean> }).renew = () => {
      probes++;
      if (probes === 3) l0.o.renew = true;
      return renew();
    };
    await new Promise<void>((done) => {
      held.keepProbing(5, () => {
        answered++;
        done();
      });
      held.keepProbing(5, () => answered++); // one loop at a time: ignored
    });
    assert.equal(probes, 3, 'retried until it was answered');
    assert.equal(answered, 1);
    l1.o.renew = true;
    t = 7_500;
    r = await held.renewAll(() => t);
    assert.equal(r.failingForMs, 6_500, 'from the first unanswered round to the first answered one');
    assert.equal(held.failingSince, undefined);
    held.keepProbing(5, () => assert.fail('nothing fails: no probe'));
    held.stopProbing();
  });

  it('confirmResumed: once the pipeline owns every resumed shard (or it was fenced or dropped again), how many and how long', () => {
    const held = new HeldShards();
    const l0 = fakeLease({ valid: false });
    const l1 = fakeLease({ valid: false });
    held.leases.set(0, l0).set(1, l1);
    held.fenceLate();
    l0.o.valid = true;
    l1.o.valid = true;
    assert.deepEqual(held.resumeValid(100), [0, 1]);
    assert.equal(held.confirmResumed([0], 150), undefined, 'shard 1 is not sent for yet');
    held.drop([1]);
    assert.deepEqual(held.confirmResumed([0], 400), { shards: 2, tookMs: 300 });
    assert.equal(held.confirmResumed([0], 500), undefined, 'reported once');
  });
});
