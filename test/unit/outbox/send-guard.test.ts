import { strict as assert } from 'node:assert';
import { ClaimLeases, claimLeaseMargin } from '../../../src/outbox/send-guard';

/** The claim-lease arithmetic on a fake clock (instants in ms): lease 60 s, margin 6 s. */
describe('ClaimLeases: what this process can vouch for of its rows’ claim leases', () => {
  const L = 60_000;
  const M = claimLeaseMargin(L);

  it('the margin is a tenth of the lease, at least 500 ms, at most a quarter', () => {
    assert.equal(M, 6_000);
    assert.equal(claimLeaseMargin(2_000), 500);
    assert.equal(claimLeaseMargin(1_000), 250);
  });

  it('a fresh claim vouches for its own lease less the margin, and no longer without an extension', () => {
    const l = new ClaimLeases(L);
    const e = l.evidence(1_000, 1_050);
    assert.ok(l.vouches(e, 1_000 + L - M - 1));
    assert.equal(l.vouches(e, 1_000 + L - M), false);
  });

  it('a reload vouches for the lease the database said was left', () => {
    const l = new ClaimLeases(L);
    const e = l.evidence(5_000, 5_010, 8_000);
    assert.ok(l.vouches(e, 5_000 + 8_000 - M - 1));
    assert.equal(l.vouches(e, 5_000 + 8_000 - M), false);
  });

  it('extensions that started after the row arrived and kept pace vouch for it: each until its start + the lease − the margin', () => {
    const l = new ClaimLeases(L);
    const e = l.evidence(0, 100);
    l.extended(20_000, 20_050);
    l.extended(40_000, 40_050);
    assert.ok(l.vouches(e, 70_000), 'past its own lease, inside the second extension');
    l.extended(60_000, 60_050);
    assert.ok(l.vouches(e, 60_000 + L - M - 1));
    assert.equal(l.vouches(e, 60_000 + L - M), false, 'the last extension ran out');
  });

  it('an extension that started before the row arrived does not vouch for it (the claim may have committed after it ran)', () => {
    const l = new ClaimLeases(L);
    l.extended(10_000, 10_050);
    const e = l.evidence(9_000, 10_100);
    assert.ok(l.vouches(e, 9_000 + L - M - 1), 'its own lease');
    assert.equal(l.vouches(e, 9_000 + L - M), false, 'the extension before its arrival extends nothing of it');
    l.extended(30_000, 30_050);
    assert.ok(l.vouches(e, 9_000 + L - M), 'the first one after its arrival does');
  });

  it('an extension answered after the row’s own lease ran out does not vouch for it: the reaper may have freed it first', () => {
    const l = new ClaimLeases(L);
    const e = l.evidence(0, 10);
    l.extended(1_000, L - M + 1); // a stall: its answer came after the row's lease ran out
    assert.equal(l.vouches(e, L - M + 500), false, "past its own lease, inside the extension's");
  });

  it('a stall breaks the chain: later extensions vouch only for rows seen after it, older ones need the database', () => {
    const l = new ClaimLeases(L);
    const old = l.evidence(0, 10);
    l.extended(20_000, 20_050);
    assert.ok(l.vouches(old, 60_000));
    const epoch = l.epoch;
    // Frozen from 21 s to 200 s: the next extension comes long after the last one's lease ran out.
    l.extended(200_000, 200_040);
    assert.equal(l.epoch, epoch + 1);
    assert.equal(l.vouches(old, 200_100), false, 'it may have been reaped and claimed again meanwhile');
    // A copy claimed again after the stall: its own lease, then the new chain.
    const again = ClaimLeases.newer(old, l.evidence(200_050, 200_060));
    assert.ok(l.vouches(again, 200_100));
    l.extended(220_000, 220_030);
    assert.ok(l.vouches(again, 200_050 + L - M + 1), 'the new chain vouches for the new copy');
    assert.equal(l.vouches(old, 221_000), false, 'never again for the old evidence');
  });

  it('the newer of two pieces of evidence is the one whose own lease ends later', () => {
    const a = { from: 0, ownMs: L, seenAt: 0 };
    const b = { from: 10_000, ownMs: 5_000, seenAt: 10_000 };
    assert.equal(ClaimLeases.newer(a, b), a);
    assert.equal(ClaimLeases.newer(b, a), a);
  });
});
