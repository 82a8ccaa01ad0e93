import { strict as assert } from 'node:assert';
import { HeldShards } from '../../../src/cluster/held-shards';
import type { KvLease } from '../../../src/cluster/lease';
import { Formation, memberKey, planShards, wantedShards } from '../../../src/cluster/shard-plan';

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

describe('Formation: a newcomer waits for the cluster to form before it takes free shards', () => {
  const view = (members: string[], held: Array<[number, string]> = []) => ({ members, map: new Map(held) });

  it('processes started together: waits until the member list stays the same for the settle time', () => {
    const heard: Array<{ members: number; waitedMs: number }> = [];
    const f = new Formation(1000, 6000, (x) => heard.push(x));
    assert.equal(f.ready(view(['a']), 'a', 0), false, 'alone at its first view: the others may not have written their keys yet');
    assert.equal(f.ready(view(['a', 'b']), 'a', 500), false, 'b appeared: the count starts again');
    assert.equal(f.ready(view(['a', 'b', 'c']), 'a', 1000), false);
    assert.equal(f.ready(view(['c', 'b', 'a']), 'a', 1500), false, 'same members in another order: still counting');
    assert.equal(f.ready(view(['a', 'b', 'c']), 'a', 2000), true, 'unchanged for 1 s');
    assert.deepEqual(heard, [{ members: 3, waitedMs: 2000 }]);
    assert.equal(f.ready(view(['a', 'b', 'c', 'd']), 'a', 2100), true, 'formed once, never waits again');
    assert.equal(heard.length, 1);
  });

  it('a lone process waits only the settle time', () => {
    const f = new Formation(1000, 6000);
    assert.equal(f.ready(view(['a']), 'a', 10_000), false);
    assert.equal(f.ready(view(['a']), 'a', 10_999), false);
    assert.equal(f.ready(view(['a']), 'a', 11_000), true);
  });

  it('joins a formed cluster at once: another member already holds shards', () => {
    const f = new Formation(1000, 6000);
    assert.equal(f.ready(view(['a', 'b'], [[3, 'b']]), 'a', 0), true);
    const own = new Formation(1000, 6000);
    assert.equal(own.ready(view(['a'], [[3, 'a']]), 'a', 0), false, 'its own old key (before a fence) does not count as a formed cluster');
  });

  it('members that keep changing: takes its shards after the longest wait anyway', () => {
    const f = new Formation(1000, 6000);
    let ready = false;
    for (let t = 0; t <= 6000 && !ready; t += 500) ready = f.ready(view(['a', `x${t}`]), 'a', t);
    assert.equal(ready, true);
    assert.equal(f.ready(view(['a', 'y']), 'a', 6001), true);
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
    assert.deepEqual(held.owned(), [0, 1, 2], 'the pipeline keeps a fenced shard');
    assert.equal(held.sendingCount, 2);
    let r = await held.renewAll();
    assert.deepEqual(r, { lost: [2], resumed: [] }, 'no answer for 1: still ours, still fenced');
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
});
