import { strict as assert } from 'node:assert';
import { connect, type KV, type NatsConnection, type Subscription } from 'nats';
import { spawnBudgetCoordinator, type BudgetCoordinatorMsg, type BudgetStatus } from '../../../../actors/cluster/budget-coordinator';
import { COORDINATOR_KEY } from '../../../../src/cluster/budget-client';
import { coordinatorTiming } from '../../../../src/cluster/budget-plan';
import { openClusterBucket } from '../../../../src/cluster/kv';
import { leaseHolder } from '../../../../src/cluster/lease';
import { Metrics } from '../../../../src/metrics';
import { encodeJson } from '../../../../src/nats/codec';
import { NatsIntake } from '../../../../src/nats/intake';
import { makeSubjects, type SubjectSet } from '../../../../src/nats/subjects';
import { dispatch, query, startActorSystem, stopActorSystem, type ActorRef, type ActorSystem, type ReplyTo } from '../../../../src/runtime/actor';
import { NATS_URL, captureLogger, uniq, waitFor } from '../../../helpers/services';

interface Grant {
  share: number;
  window_ms: number;
  issued_at: number;
  expires_at: number;
  coordinator: string;
  lease_revision: number;
  rate: number;
}

/**
 * The budget coordinator's protocol with fake members: the test publishes their demand
 * reports and answers their grants. The actor takes a real NatsConnection and KV, so it
 * runs against the local nats-server on a fresh subject prefix and bucket. The test
 * dispatches `tick`s itself (the actor's own tick is every 250 ms). Global limit 20 per
 * 200 ms (100/s); lease TTL 1.6 s, so grants live 600 ms.
 */
describe('budget-coordinator actor (fake members, NATS and KV on the local nats-server)', function () {
  this.timeout(10_000);
  const GLOBAL = { count: 20, windowMs: 200 };
  const TTL = 1_600;
  let nc: NatsConnection;
  let kv: KV;
  let subjects: SubjectSet;
  let metrics: Metrics;
  let system: ActorSystem;
  let coordinator: ActorRef<BudgetCoordinatorMsg>;
  let subs: Subscription[];
  let reports: NodeJS.Timeout[];
  /** Every grant received, in order, with the share each member held (acknowledged) right after it. */
  let grants: Array<{ holder: string; g: Grant; at: number; held: Map<string, number>; freeAt: number | null }>;
  let held: Map<string, number>;
  let cleanups: Array<() => void>;

  beforeEach(async () => {
    nc = await connect({ servers: NATS_URL });
    kv = await openClusterBucket(nc, uniq('budget'), { leaseTtlMs: TTL, replicas: 1 });
    subjects = makeSubjects(`${uniq('t')}.`);
    metrics = new Metrics();
    subs = [];
    reports = [];
    grants = [];
    held = new Map();
    cleanups = [];
    const { log } = captureLogger();
    system = startActorSystem('budget-coordinator-test', log);
    coordinator = spawn('coord:1');
  });
  afterEach(async () => {
    reports.forEach((t) => clearInterval(t));
    cleanups.forEach((f) => f());
    stopActorSystem(system);
    subs.forEach((s) => s.unsubscribe());
    await kv.destroy().catch(() => undefined);
    await nc.close();
  });

  function spawn(holder: string, sys = system): ActorRef<BudgetCoordinatorMsg> {
    return spawnBudgetCoordinator(sys, {
      subjects,
      nc,
      intake: new NatsIntake({ nc, log: system.log, metrics }),
      kv,
      log: system.log,
      metrics,
      holder,
      instance: holder,
      global: GLOBAL,
      leaseTtlMs: TTL,
    });
  }
  const status = (ref = coordinator) => query<BudgetCoordinatorMsg, BudgetStatus>(ref, (replyTo) => ({ type: 'status', replyTo }), 2000);
  const tick = (ref = coordinator) => dispatch<BudgetCoordinatorMsg>(ref, { type: 'tick' });
  /** Ticks until `cond` holds. */
  const tickUntil = (cond: () => boolean | Promise<boolean>, what: string, ref = coordinator) =>
    waitFor(
      async () => {
        if (await cond()) return true;
        tick(ref);
        return false;
      },
      4000,
      15,
      what,
    );

  /** A fake member: reports demand every 100 ms and acknowledges every grant (with `freeAt` when it is a decrease). */
  const member = async (holder: string, demand: number | (() => number), freeAt: (g: Grant) => number | null = () => null): Promise<void> => {
    subs.push(
      nc.subscribe(subjects.budgetGrant(holder), {
        callback: (err, m) => {
          if (err) return;
          const g = JSON.parse(new TextDecoder().decode(m.data)) as Grant;
          const before = held.get(holder);
          held.set(holder, g.share);
          // Like a real member: only a smaller share leaves sends (made under the larger one) to wait out.
          const free = before !== undefined && g.share < before ? freeAt(g) : null;
          grants.push({ holder, g, at: Date.now(), held: new Map(held), freeAt: free });
          m.respond(encodeJson({ ok: true, share: g.share, free_at: free }));
        },
      }),
    );
    const report = () =>
      nc.publish(
        subjects.budgetDemand,
        encodeJson({
          holder,
          instance: holder,
          demand: typeof demand === 'number' ? demand : demand(),
          share: held.get(holder) ?? 1,
          at: Date.now(),
          granted: held.has(holder),
        }),
      );
    report();
    reports.push(setInterval(report, 100));
    await nc.flush();
  };
  const latest = (holder: string) => [...grants].reverse().find((x) => x.holder === holder)?.g;
  const sumHeld = (h: Map<string, number>) => [...h.values()].reduce((a, b) => a + b, 0);

  it('elected through the KV lease, it splits the limit between the members and never grants more than it', async () => {
    await member('a:1', 50);
    await member('b:1', 50);
    await tickUntil(async () => (await status()).leader, 'elected');
    assert.equal((await leaseHolder(kv, COORDINATOR_KEY))?.holder, 'coord:1');
    await tickUntil(() => (latest('a:1')?.share ?? 0) >= 9 && (latest('b:1')?.share ?? 0) >= 9, 'both raised');
    for (const x of grants) assert.ok(sumHeld(x.held) <= GLOBAL.count, `shares held ${JSON.stringify([...x.held])} above the limit`);
    // One floor share stays free for a process that joins.
    assert.ok(latest('a:1')!.share + latest('b:1')!.share <= GLOBAL.count - 1);
    const g = latest('a:1')!;
    assert.equal(g.coordinator, 'coord:1');
    assert.equal(g.window_ms, GLOBAL.windowMs);
    assert.equal(g.expires_at - g.issued_at, coordinatorTiming(TTL, GLOBAL.windowMs).grantLifeMs);
    const rev = (await kv.get(COORDINATOR_KEY))!.revision;
    assert.ok(g.lease_revision > 0 && g.lease_revision <= rev, 'the grant names a revision of the coordinator lease');
    const s = await status();
    assert.deepEqual(s.processes.map((p) => p.holder).sort(), ['a:1', 'b:1']);
    assert.equal(s.capacity, GLOBAL.count);
    // A report that does not match the schema is counted and ignored.
    nc.publish(subjects.budgetDemand, encodeJson({ holder: 'x', demand: -1 }));
    await nc.flush();
    await waitFor(
      async () => /nats_bad_payloads_total\{[^}]*code="BAD_PAYLOAD"[^}]*\} 1/.test(await metrics.registry.metrics()),
      2000,
      10,
      'the bad report counted',
    );
    assert.deepEqual((await status()).processes.map((p) => p.holder).sort(), ['a:1', 'b:1']);
  });

  it('a newcomer is raised only after the shrunk member’s sends have left its window (free_at)', async () => {
    // a says its sends under a larger share leave its window 150 ms after it acknowledged a smaller one.
    await member('a:1', 50, () => Date.now() + 150);
    await tickUntil(() => (latest('a:1')?.share ?? 0) >= 18, 'a alone takes what is free');
    const aBefore = latest('a:1')!.share;
    await member('b:1', 50);
    await tickUntil(() => (latest('b:1')?.share ?? 0) >= 9, 'b raised');
    const decrease = grants.find((x) => x.holder === 'a:1' && x.g.share < aBefore)!;
    const raise = grants.find((x) => x.holder === 'b:1' && x.g.share > 1)!;
    assert.ok(decrease, 'a was shrunk first');
    assert.ok(decrease.at <= raise.at);
    assert.ok(
      raise.g.issued_at >= decrease.freeAt! + 50,
      `b raised at ${raise.g.issued_at}, a's sends under its old share left its window at ${decrease.freeAt}`,
    );
    for (const x of grants) assert.ok(sumHeld(x.held) <= GLOBAL.count, `shares held ${JSON.stringify([...x.held])} above the limit`);
  });

  it('a member shrinking step by step frees its room step by step: the other grows before the last step is free', async () => {
    // A draining process shrinks tick after tick; a single wait after the latest shrink held everyone back until it ended.
    let aDemand = 50;
    await member(
      'a:1',
      () => aDemand,
      () => Date.now() + 400,
    );
    await member('b:1', 50);
    await tickUntil(() => (latest('a:1')?.share ?? 0) >= 9 && (latest('b:1')?.share ?? 0) >= 9, 'both raised');
    const aStart = latest('a:1')!.share;
    const bStart = latest('b:1')!.share;
    aDemand = 6;
    await tickUntil(() => latest('a:1')!.share === 6, 'a shrunk to 6');
    const first = grants.find((x) => x.holder === 'a:1' && x.g.share === 6)!;
    aDemand = 3;
    await tickUntil(() => latest('a:1')!.share === 3, 'a shrunk to 3');
    const second = grants.find((x) => x.holder === 'a:1' && x.g.share === 3)!;
    assert.ok(second.freeAt! > first.freeAt! + 50, 'the two shrinks free at different times');
    await tickUntil(() => latest('b:1')!.share >= 19 - 3, 'b takes the rest');
    const bUp = grants.find((x) => x.holder === 'b:1' && x.g.share > bStart)!;
    assert.ok(bUp.g.issued_at >= first.freeAt! + 50, 'not before a held at most 6');
    assert.ok(bUp.g.issued_at < second.freeAt!, `b first raised at ${bUp.g.issued_at}, before a's last shrink is free (${second.freeAt})`);
    // What a may still hold at each of b's raises (its old share until each free_at) plus b's share fits.
    for (const x of grants.filter((g) => g.holder === 'b:1' && g.g.share > bStart)) {
      const aMay = x.g.issued_at < first.freeAt! + 50 ? aStart : x.g.issued_at < second.freeAt! + 50 ? 6 : 3;
      assert.ok(aMay + x.g.share <= GLOBAL.count - 1, `b at ${x.g.share} while a may hold ${aMay}`);
    }
  });

  it('a bot-wide flood lowers the rate for the whole cluster; later grants carry it and fit in it', async () => {
    await member('a:1', 50);
    await tickUntil(() => (latest('a:1')?.share ?? 0) >= 18, 'a raised');
    dispatch<BudgetCoordinatorMsg>(coordinator, { type: 'flood', until: Date.now() + 1000, from: 'a:1' });
    const s = await status();
    assert.ok(s.rate < 100, `rate ${s.rate}/s after a flood`);
    assert.ok(s.capacity < GLOBAL.count);
    await tickUntil(() => (latest('a:1')?.rate ?? 100) < 100, 'a grant with the lowered rate');
    await tickUntil(() => latest('a:1')!.share <= s.capacity, 'a shrunk to the lowered capacity');
  });

  it('a second coordinator waits for the lease; stepDown hands it over', async () => {
    await member('a:1', 10);
    await tickUntil(async () => (await status()).leader, 'first elected');
    // Another process: its own actor system (the actor's name is fixed).
    const other = startActorSystem('budget-coordinator-test-2', system.log);
    cleanups.push(() => stopActorSystem(other));
    const second = spawn('coord:2', other);
    for (let i = 0; i < 5; i++) tick(second);
    assert.equal((await status(second)).leader, false, 'one coordinator at a time');
    await query(coordinator, (replyTo: ReplyTo<void>): BudgetCoordinatorMsg => ({ type: 'stepDown', replyTo }), 2000);
    assert.equal((await status()).leader, false);
    assert.equal(await leaseHolder(kv, COORDINATOR_KEY), undefined, 'the lease was deleted, not left to expire');
    await tickUntil(async () => (await status(second)).leader, 'second elected', second);
    await tickUntil(() => latest('a:1')?.coordinator === 'coord:2', 'grants from the second', second);
  });

  it('renewals failing (an election): it grants until the fence time, then nothing, keeps the lease, and resumes on the next renewal', async () => {
    const { fenceAfterMs } = coordinatorTiming(TTL, GLOBAL.windowMs);
    await member('a:1', 10);
    await tickUntil(() => latest('a:1')?.coordinator === 'coord:1', 'granting');
    const since = (await status()).since;
    // Every KV write fails the way it does while JetStream elects a leader.
    const update = kv.update.bind(kv);
    let failing = true;
    kv.update = (...args: Parameters<KV['update']>) => (failing ? Promise.reject(Object.assign(new Error('503'), { code: '503' })) : update(...args));
    const failedAt = Date.now();
    const n = grants.length;
    await tickUntil(() => grants.slice(n).some((x) => x.g.issued_at >= failedAt + 300), 'grants go on after a renewal failed');
    // Then they stop: the last one was issued before the fence time (counted from before the failures).
    await waitFor(() => grants.length > 0 && Date.now() - grants[grants.length - 1]!.at > 600, 5_000, 20, 'grants stopped');
    const last = grants[grants.length - 1]!.g;
    assert.ok(last.issued_at < failedAt + fenceAfterMs, `last grant ${last.issued_at - failedAt} ms after the failures began; fence ${fenceAfterMs} ms`);
    const fenced = await status();
    assert.equal(fenced.leader, true, 'the lease stays ours');
    assert.equal((await leaseHolder(kv, COORDINATOR_KEY))?.holder, 'coord:1');
    failing = false;
    await tickUntil(() => latest('a:1')!.issued_at > last.issued_at, 'granting again after a successful renewal');
    assert.equal((await status()).since, since, 'no new election: the same lease, renewed');
    assert.ok(latest('a:1')!.lease_revision > last.lease_revision);
  });
});
