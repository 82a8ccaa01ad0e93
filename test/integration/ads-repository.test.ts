import { strict as assert } from 'node:assert';
import { AdsRepository } from '../../src/ads/repository';
import { DbLeaseSingleton } from '../../src/ads/singleton';
import { createDb } from '../../src/db/knex';
import { insertAds } from '../helpers/ads';
import { createTestDb, uniq, waitFor, type TestDb } from '../helpers/services';

/**
 * The repository methods the gateway and the bump lease use, on a real MariaDB. The bump,
 * view and unread methods are covered through the actors (ads-views, ads-unread, ads-processes).
 */
describe('ads repository: gateway reads and the database lease', () => {
  let tdb: TestDb;
  let repo: AdsRepository;

  before(async () => {
    tdb = await createTestDb('ads_repo');
    repo = new AdsRepository(tdb.db);
  });
  after(async () => {
    await tdb.drop();
  });

  it('ping, adExists and viewsCount answer from the database', async () => {
    await repo.ping();
    const [id] = await insertAds(tdb.db, 1, { views_count: 42 });
    assert.equal(await repo.adExists(id!), true);
    assert.equal(await repo.viewsCount(id!), 42);
    const [inactive] = await insertAds(tdb.db, 1, { is_active: 0 });
    assert.equal(await repo.adExists(inactive!), true, 'an inactive ad exists');
    assert.equal(await repo.viewsCount(inactive!), 0);
    const missing = id! + inactive! + 1_000;
    assert.equal(await repo.adExists(missing), false);
    assert.equal(await repo.viewsCount(missing), undefined);
  });

  it('takeLease: the first owner holds it and renews it, another is refused until it expires', async () => {
    const name = uniq('lease');
    assert.equal(await repo.takeLease(name, 'a', 60_000), 'a');
    assert.equal(await repo.takeLease(name, 'b', 60_000), 'a', 'held: b is refused');
    assert.equal(await repo.takeLease(name, 'a', 300), 'a', 'the owner renews (here with a short TTL)');
    assert.equal(await repo.takeLease(name, 'b', 60_000), 'a', 'still held right after the renewal');
    // Expiry is by the database clock: poll until b gets it, which must happen once 300 ms have passed.
    await waitFor(async () => (await repo.takeLease(name, 'b', 60_000)) === 'b', 5_000, 50, 'b takes the expired lease');
    assert.equal(await repo.takeLease(name, 'a', 60_000), 'b', 'a lost it');
  });

  it('releaseLease deletes only the holder’s lease', async () => {
    const name = uniq('lease');
    assert.equal(await repo.takeLease(name, 'a', 60_000), 'a');
    await repo.releaseLease(name, 'b');
    assert.equal(await repo.takeLease(name, 'b', 60_000), 'a', 'a non-holder’s release changes nothing');
    await repo.releaseLease(name, 'a');
    assert.equal(await repo.takeLease(name, 'b', 60_000), 'b', 'free at once after the holder releases');
    const rows = await tdb.db('ads_leases').where({ name }).select('owner');
    assert.deepEqual(
      rows.map((r: { owner: string }) => r.owner),
      ['b'],
    );
  });

  it('DbLeaseSingleton: one leader; after release() it never writes the lease back and the other takes over', async () => {
    const name = uniq('bump');
    const a = new DbLeaseSingleton(repo, name, 'a', 60_000);
    const b = new DbLeaseSingleton(repo, name, 'b', 60_000);
    assert.equal(await a.isLeader(), true);
    assert.equal(await b.isLeader(), false);
    await Promise.all([a.release(), a.release()]);
    assert.equal(await a.isLeader(), false, 'released: not leader, and no write');
    assert.equal((await tdb.db('ads_leases').where({ name }).first('owner')) === undefined, true, 'row deleted');
    assert.equal(await b.isLeader(), true);
  });

  it('DbLeaseSingleton never throws: a failing database reports to onError and is not leader', async () => {
    const closed = createDb({ url: tdb.url, poolMax: 1 });
    await closed.destroy();
    const errors: unknown[] = [];
    const s = new DbLeaseSingleton(new AdsRepository(closed), uniq('bump'), 'a', 60_000, (e) => errors.push(e));
    assert.equal(await s.isLeader(), false);
    assert.equal(errors.length, 1);
    await s.release();
    assert.equal(errors.length, 2, 'the failed release is reported, not thrown');
  });
});
