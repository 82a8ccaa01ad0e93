import { ClaimLeases } from '../../../../src/outbox/send-guard';
import { TestClock } from '../../../helpers/pipeline-fakes';
import { strict as assert } from 'node:assert';
import { spawnClaimer, type ClaimerMsg } from '../../../../actors/pipeline/claimer';
import type { PipelineDeps, PipelineSettings } from '../../../../actors/pipeline/deps';
import type { ShardManagerMsg } from '../../../../actors/pipeline/shard-manager/shard-manager';
import { BufferBook } from '../../../../src/outbox/buffer-book';
import type { ClaimRequest } from '../../../../src/outbox/repository';
import type { OutboxRow } from '../../../../src/outbox/types';
import { Metrics } from '../../../../src/metrics';
import { dispatch, query, spawn, startActorSystem, stopActorSystem, type ActorSystem, type ReplyTo } from '../../../../src/runtime/actor';
import { captureLogger, waitFor } from '../../../helpers/services';
import { deferred, type Deferred } from '../../../helpers/deferred';

/** The claimer with a fake repository whose calls finish when the test says so. */
const settings: PipelineSettings = {
  chatLimit: { count: 1, windowMs: 1000 },
  groupLimit: { count: 20, windowMs: 60_000 },
  maxAttempts: 5,
  retryBaseMs: 1000,
  retryMaxMs: 60_000,
  claimBatch: 100,
  claimLeaseMs: 60_000,
  // Timers far in the future: the test drives the claimer with messages.
  pollMs: 3_600_000,
  chatBufferSeconds: 60,
  maxBuffered: 10_000,
  outcomeFlushMs: 500,
  outcomeFlushMax: 500,
  drainTimeoutMs: 1000,
};

const row = (id: number, shard: number): OutboxRow => ({
  id,
  chatId: 100 + id,
  text: 't',
  parseMode: null,
  kind: null,
  orderId: null,
  priority: 0,
  attempts: 0,
  retryCount: 0,
  shard,
  createdAt: 0,
  progress: null,
  plainText: false,
  fetchedAt: 0,
});

class FakeRepo {
  claims: Array<{ req: ClaimRequest; d: Deferred<OutboxRow[]> }> = [];
  renewals: Array<Deferred<number>> = [];
  polls: Array<Deferred<boolean>> = [];
  claim(req: ClaimRequest): Promise<OutboxRow[]> {
    const d = deferred<OutboxRow[]>();
    this.claims.push({ req, d });
    return d.promise;
  }
  renewLeases(): Promise<number> {
    const d = deferred<number>();
    this.renewals.push(d);
    return d.promise;
  }
  hasDue(): Promise<boolean> {
    const d = deferred<boolean>();
    this.polls.push(d);
    return d.promise;
  }
  reapExpired(): Promise<number> {
    return Promise.resolve(0);
  }
}

describe('claimer actor (fake repository)', () => {
  let system: ActorSystem;
  let repo: FakeRepo;
  let received: ShardManagerMsg[];
  let claimer: ReturnType<typeof spawnClaimer>;
  let book: BufferBook;
  let clock: TestClock;
  let leases: ClaimLeases;

  beforeEach(() => {
    const { log } = captureLogger();
    system = startActorSystem('claimer-test', log);
    repo = new FakeRepo();
    received = [];
    const manager = spawn<null, ShardManagerMsg>(system, {
      name: 'manager',
      init: () => null,
      receive: (s, m) => {
        received.push(m);
        return s;
      },
    });
    book = new BufferBook();
    clock = new TestClock();
    leases = new ClaimLeases(settings.claimLeaseMs);
    const deps = {
      settings: { ...settings, claimBatch: 1000 },
      log,
      metrics: new Metrics(),
      repo,
      book,
      clock,
      claimLeases: leases,
    } as unknown as PipelineDeps;
    claimer = spawnClaimer(system, deps, manager);
  });
  afterEach(() => stopActorSystem(system));

  it('claims the owned shards and hands the rows to the shard manager', async () => {
    dispatch<ClaimerMsg>(claimer, { type: 'own', shards: [3, 1] });
    await waitFor(() => repo.claims.length === 1, 2000, 5, 'a claim');
    assert.deepEqual(repo.claims[0]!.req.shards, [1, 3]);
    assert.equal(repo.claims[0]!.req.limit, 100, 'nothing buffered: a short first claim, so sending starts sooner');
    repo.claims[0]!.d.resolve([row(1, 1), row(2, 3)]);
    await waitFor(() => received.length === 1, 2000, 5, 'rows handed over');
    assert.deepEqual(received[0], { type: 'rows', rows: [row(1, 1), row(2, 3)] });
  });

  it('a full batch claims again at once; a wake during a claim runs one more claim after it', async () => {
    dispatch<ClaimerMsg>(claimer, { type: 'own', shards: [0] });
    await waitFor(() => repo.claims.length === 1, 2000, 5, 'first claim');
    dispatch<ClaimerMsg>(claimer, { type: 'wake', shard: 0 });
    dispatch<ClaimerMsg>(claimer, { type: 'wake', shard: 0 });
    repo.claims[0]!.d.resolve([row(1, 0)]);
    await waitFor(() => repo.claims.length === 2, 2000, 5, 'the claim the wakes asked for');
    repo.claims[1]!.d.resolve([]);
    // Two wakes during one claim make one more claim, not two; an empty batch ends the run.
    await query(claimer, (replyTo: ReplyTo<void>): ClaimerMsg => ({ type: 'pause', replyTo }), 1000);
    assert.equal(repo.claims.length, 2);
  });

  it('with rows buffered, a full first batch is followed at once by a claim of the full size', async () => {
    dispatch<ClaimerMsg>(claimer, { type: 'own', shards: [0] });
    await waitFor(() => repo.claims.length === 1, 2000, 5, 'first claim');
    const rows = Array.from({ length: 100 }, (_, i) => row(i + 1, 0));
    book.add(0, 5, rows.length); // what the shard manager does with them
    repo.claims[0]!.d.resolve(rows);
    await waitFor(() => repo.claims.length === 2, 2000, 5, 'the next claim');
    assert.equal(repo.claims[1]!.req.limit, 1000);
  });

  it('a buffer drained in the middle of a backlog is refilled with full batches: only shards just taken get the short claim', async () => {
    dispatch<ClaimerMsg>(claimer, { type: 'own', shards: [0] });
    await waitFor(() => repo.claims.length === 1, 2000, 5, 'first claim');
    assert.equal(repo.claims[0]!.req.limit, 100);
    repo.claims[0]!.d.resolve(Array.from({ length: 100 }, (_, i) => row(i + 1, 0))); // sent at once: nothing stays buffered
    await waitFor(() => repo.claims.length === 2, 2000, 5, 'the next claim');
    assert.equal(repo.claims[1]!.req.limit, 1000, 'nothing buffered, but the shards are not new');
    repo.claims[1]!.d.resolve([]);
    dispatch<ClaimerMsg>(claimer, { type: 'own', shards: [0, 1] });
    await waitFor(() => repo.claims.length === 3, 2000, 5, 'a claim for the added shard');
    assert.equal(repo.claims[2]!.req.limit, 100, 'a shard just taken: short again');
  });

  it('pause answers only once the claim in flight has landed (a handoff must not overtake it)', async () => {
    dispatch<ClaimerMsg>(claimer, { type: 'own', shards: [0] });
    await waitFor(() => repo.claims.length === 1, 2000, 5, 'a claim');
    let paused = false;
    const p = query(claimer, (replyTo: ReplyTo<void>): ClaimerMsg => ({ type: 'pause', replyTo }), 2000).then(() => (paused = true));
    // A renewal dispatched after the pause starts: the mailbox handled the pause, which still waits.
    dispatch<ClaimerMsg>(claimer, { type: 'renew' });
    await waitFor(() => repo.renewals.length === 1, 2000, 5, 'the renewal after the pause');
    assert.equal(paused, false);
    repo.claims[0]!.d.resolve([row(7, 0)]);
    await p;
    assert.equal(paused, true);
    // The rows were dispatched to the shard manager before the pause was answered.
    await waitFor(() => received.length === 1, 2000, 5, 'rows at the shard manager');
    assert.deepEqual(
      received.map((m) => (m.type === 'rows' ? m.rows.map((r) => r.id) : [])),
      [[7]],
    );
  });

  it('a successful lease renewal vouches for the rows from the instant it started; a failed one does not', async () => {
    const t0 = clock.now();
    // A row claimed at t0, seen at once; its own lease has run out by the time it is checked.
    const e = leases.evidence(t0, t0);
    const late = t0 + settings.claimLeaseMs - leases.marginMs + 5; // past its own lease, inside a renewal made 10 ms later
    dispatch<ClaimerMsg>(claimer, { type: 'renew' });
    await waitFor(() => repo.renewals.length === 1, 2000, 5, 'first renewal');
    repo.renewals[0]!.reject(new Error('db down'));
    await new Promise((r) => setTimeout(r, 20));
    // The mailbox has handled the failure by the time it answers a later message.
    await query(claimer, (replyTo: ReplyTo<void>): ClaimerMsg => ({ type: 'pause', replyTo }), 1000);
    assert.equal(leases.vouches(e, late), false, 'a failed renewal vouches for nothing');
    clock.advance(10);
    dispatch<ClaimerMsg>(claimer, { type: 'renew' });
    await waitFor(() => repo.renewals.length === 2, 2000, 5, 'second renewal');
    repo.renewals[1]!.resolve(3);
    await waitFor(() => leases.vouches(e, late), 2000, 5, 'the renewal vouches past the claim lease');
    assert.equal(leases.vouches(e, clock.now() + settings.claimLeaseMs - leases.marginMs), false, 'until its start + the lease − the margin');
  });

  it('a slow lease renewal or poll never holds the mailbox (I/O runs outside it)', async () => {
    dispatch<ClaimerMsg>(claimer, { type: 'renew' });
    dispatch<ClaimerMsg>(claimer, { type: 'tick' });
    await waitFor(() => repo.renewals.length === 1 && repo.polls.length === 1, 2000, 5, 'renewal and poll started');
    // Neither has finished, yet ownership changes and claims go on.
    dispatch<ClaimerMsg>(claimer, { type: 'own', shards: [5] });
    await waitFor(() => repo.claims.length === 1, 2000, 5, 'a claim while renewal and poll hang');
    // A second renewal while one runs is not stacked on it.
    dispatch<ClaimerMsg>(claimer, { type: 'renew' });
    repo.claims[0]!.d.resolve([]);
    await query(claimer, (replyTo: ReplyTo<void>): ClaimerMsg => ({ type: 'pause', replyTo }), 1000);
    assert.equal(repo.renewals.length, 1);
    repo.renewals[0]!.resolve(3);
    repo.polls[0]!.resolve(false);
  });
});
