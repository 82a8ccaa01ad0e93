import { strict as assert } from 'node:assert';
import type { NatsConnection } from 'nats';
import { createTestDb, NATS_URL, uniq, waitFor, captureLogger, type TestDb } from '../helpers/services';
import { adsTestEnv, insertAds, lcg, spawnWorker, viewCounts, type WorkerProcess } from '../helpers/ads';
import { connectNats } from '../../src/nats/connection';
import { loadAdsConfig, type AdsConfig } from '../../src/config/ads';
import { ensureViewsConsumer, ensureViewsStream, visitorHash } from '../../src/ads/views-stream';
import { Subjects } from '../../src/nats/subjects';
import { encodeJson } from '../../src/nats/codec';

/** Real child processes (test/fixtures/ads-worker.ts): SIGKILL, two counters, two bump actors. */
describe('ads: several processes', function () {
  this.timeout(90_000);
  let tdb: TestDb;
  let nc: NatsConnection;
  const workers: WorkerProcess[] = [];
  const streams: string[] = [];

  before(async () => {
    tdb = await createTestDb('ads_procs');
    nc = await connectNats({ url: NATS_URL, name: uniq('ads-procs') }, captureLogger().log);
  });
  after(async () => {
    for (const w of workers) if (w.proc.exitCode === null) w.proc.kill('SIGKILL');
    const jsm = await nc.jetstreamManager();
    for (const s of streams) await jsm.streams.delete(s).catch(() => undefined);
    await nc.drain();
    await tdb.drop();
  });

  const start = (env: Record<string, string>): WorkerProcess => {
    const w = spawnWorker({ DATABASE_URL: tdb.url, NATS_URL, INSTANCE_ID: uniq('w'), LOG_LEVEL: 'debug', ...env });
    workers.push(w);
    return w;
  };
  const ready = (w: WorkerProcess): Promise<unknown> => w.waitLine((l) => l.event === 'ready', 30_000, 'ready');
  const stopGracefully = async (w: WorkerProcess): Promise<Record<string, unknown>> => {
    w.proc.kill('SIGTERM');
    const line = await w.waitLine((l) => l.event === 'stopped', 30_000, 'stopped');
    await w.exited;
    return line;
  };

  /** Publishes `n` views (300 visitors, the given ads), some as second copies with another msgID; returns the exact expected counts. */
  async function publishViews(c: AdsConfig, adIds: number[], n: number, seed: number): Promise<Map<number, number>> {
    const js = nc.jetstream();
    const rnd = lcg(seed);
    const seen = new Map<number, Set<string>>(adIds.map((id) => [id, new Set()]));
    const ts = Date.now();
    const acks: Array<Promise<unknown>> = [];
    for (let i = 0; i < n; i++) {
      const ad = adIds[Math.floor(rnd() * adIds.length)]!;
      const visitor = visitorHash('s', `10.1.${Math.floor(rnd() * 300)}`);
      seen.get(ad)!.add(visitor);
      // A unique msgID: repeats reach the counters (dedup must happen in the database).
      acks.push(js.publish(Subjects.adsView(c.subjectPrefix, ad), encodeJson({ ad_id: ad, visitor, ts: ts + i }), { msgID: `${seed}-${i}` }));
      if (acks.length >= 256) await Promise.all(acks.splice(0));
    }
    await Promise.all(acks);
    return new Map([...seen].map(([id, s]) => [id, s.size]));
  }

  async function consumerIdle(c: AdsConfig): Promise<boolean> {
    const info = await (await nc.jetstreamManager()).consumers.info(c.viewsStream, c.viewsConsumer);
    return info.num_pending === 0 && info.num_ack_pending === 0;
  }

  async function setupStream(env: Record<string, string>): Promise<AdsConfig> {
    const c = loadAdsConfig(env);
    streams.push(c.viewsStream);
    const jsm = await nc.jetstreamManager();
    await ensureViewsStream(jsm, c);
    await ensureViewsConsumer(jsm, c);
    return c;
  }

  it('SIGKILL of a counter between receiving and flushing: after a restart the counts are exact', async () => {
    const adIds = await insertAds(tdb.db, 20);
    const env = adsTestEnv({ ADS_PARTS: 'views', VIEW_ACK_WAIT_MS: '2000', VIEW_FLUSH_MAX: '20000' });
    const c = await setupStream(env);
    const w1 = start({ ...env, VIEW_FLUSH_MS: '600000' });
    await ready(w1);
    const expected = await publishViews(c, adIds, 1_000, 7);
    // Every distinct view is in w1's memory, none in the database.
    await waitFor(
      async () => {
        let sum = 0;
        for (const ad of adIds) {
          const m = await nc.request(Subjects.adsPending(c.subjectPrefix), encodeJson({ ad_id: ad }), { timeout: 1_000 });
          sum += m.json<{ pending: number }>().pending;
        }
        return sum === [...expected.values()].reduce((a, b) => a + b, 0);
      },
      15_000,
      50,
      'w1 holding every view',
    );
    assert.ok(
      [...(await viewCounts(tdb.db, adIds)).values()].every((v) => v === 0),
      'nothing flushed yet',
    );
    w1.proc.kill('SIGKILL');
    await w1.exited;

    const w2 = start({ ...env, VIEW_FLUSH_MS: '100' });
    await ready(w2);
    await waitFor(
      async () => (await consumerIdle(c)) && [...(await viewCounts(tdb.db, adIds)).values()].reduce((a, b) => a + b, 0) > 0,
      30_000,
      50,
      'redelivered views flushed',
    );
    assert.deepEqual(await viewCounts(tdb.db, adIds), expected);
    await stopGracefully(w2);
    assert.deepEqual(await viewCounts(tdb.db, adIds), expected);
  });

  it('two counter processes on the same stream: exact counts', async () => {
    const adIds = await insertAds(tdb.db, 20);
    const env = adsTestEnv({ ADS_PARTS: 'views', VIEW_FLUSH_MS: '50', VIEW_FLUSH_MAX: '200' });
    const c = await setupStream(env);
    const a = start(env);
    const b = start(env);
    await Promise.all([ready(a), ready(b)]);
    const expected = await publishViews(c, adIds, 3_000, 11);
    await waitFor(async () => consumerIdle(c), 30_000, 50, 'stream consumed');
    const [sa, sb] = await Promise.all([stopGracefully(a), stopGracefully(b)]);
    assert.ok(Number(sa.deliveries) > 0 && Number(sb.deliveries) > 0, `both consumed: ${Number(sa.deliveries)} + ${Number(sb.deliveries)}`);
    assert.equal(Number(sa.deliveries) + Number(sb.deliveries) >= 3_000, true);
    assert.deepEqual(await viewCounts(tdb.db, adIds), expected);
    assert.equal(
      Number(sa.counted) + Number(sb.counted),
      [...expected.values()].reduce((x, y) => x + y, 0),
      'each view counted by exactly one process',
    );
  });

  it('two processes running the bump actor: each eligible ad bumped once per interval; a restart inside the interval does not bump again', async () => {
    const day = new Date(Date.now() - 86_400_000);
    const eligible = await insertAds(tdb.db, 10, { auto_bump: 1, is_active: 1, created_at: day });
    const inactive = await insertAds(tdb.db, 3, { auto_bump: 1, is_active: 0, created_at: day });
    const manualOnly = await insertAds(tdb.db, 3, { auto_bump: 0, is_active: 1, created_at: day });
    const recent = await insertAds(tdb.db, 3, { auto_bump: 1, is_active: 1, created_at: day });
    await tdb
      .db('advertisements')
      .whereIn('id', recent)
      .update({ bumped_at: tdb.db.raw('NOW(3)') });
    await tdb.db('bump_runs').delete();
    await tdb.db('ads_leases').delete();
    const env = adsTestEnv({ ADS_PARTS: 'bump', BUMP_INTERVAL: '6s', BUMP_CHECK_MS: '100', BUMP_LEASE_MS: '1000' });
    const bumped = async (ids: number[]): Promise<Array<string | null>> =>
      (
        await tdb
          .db('advertisements')
          .whereIn('id', ids)
          .orderBy('id')
          .select<Array<{ b: string | null }>>(tdb.db.raw("DATE_FORMAT(bumped_at, '%Y-%m-%d %H:%i:%s.%f') AS b"))
      ).map((r) => r.b);
    const timerRuns = async (): Promise<Array<{ bumped: number; finished_at: Date | null }>> =>
      tdb.db('bump_runs').where({ trigger: 'timer' }).orderBy('id').select('bumped', 'finished_at');

    const a = start(env);
    const b = start(env);
    await Promise.all([ready(a), ready(b)]);
    await waitFor(async () => (await timerRuns()).some((r) => r.finished_at !== null), 15_000, 20, 'first timer run');
    const first = await timerRuns();
    assert.equal(first.length, 1, 'one run for both processes');
    assert.equal(first[0]!.bumped, eligible.length);
    const afterFirst = await bumped(eligible);
    assert.ok(
      afterFirst.every((x) => x !== null && x === afterFirst[0]),
      'every eligible ad bumped, at the run start',
    );
    assert.ok(
      (await bumped([...inactive, ...manualOnly])).every((x) => x === null),
      'inactive and auto-bump-off ads untouched',
    );

    // Restart inside the interval: stop both, start a fresh process; it takes the lease, finds the run done, waits.
    await Promise.all([stopGracefully(a), stopGracefully(b)]);
    const c2 = start(env);
    await ready(c2);
    await c2.waitLine((l) => l.msg === 'bump not due', 10_000, 'restarted process decided the run is not due');
    assert.equal((await timerRuns()).length, 1, 'no second run inside the interval');
    assert.deepEqual(await bumped(eligible), afterFirst);

    // A second process joins; the next interval bumps every eligible ad once more (the recent ones too, now due).
    const d = start(env);
    await ready(d);
    await waitFor(async () => (await timerRuns()).filter((r) => r.finished_at !== null).length === 2, 20_000, 50, 'second timer run');
    const runs = await timerRuns();
    assert.equal(runs.length, 2);
    assert.equal(runs[1]!.bumped, eligible.length + recent.length);
    const afterSecond = await bumped([...eligible, ...recent]);
    assert.ok(afterSecond.every((x) => x === afterSecond[0] && x !== afterFirst[0]));
    await Promise.all([stopGracefully(c2), stopGracefully(d)]);
    assert.equal((await timerRuns()).length, 2);
  });
});
