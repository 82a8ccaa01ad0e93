import { strict as assert } from 'node:assert';
import { createTestDb, waitFor, type TestDb } from '../helpers/services';
import { adsHarness, adsTestEnv, type AdsHarness } from '../helpers/ads';
import { startAds, startGatewayRole, type RunningAds } from '../../src/roles/ads';
import { Subjects } from '../../src/nats/subjects';
import { encodeJson } from '../../src/nats/codec';

describe('ads: unread-count cache', function () {
  this.timeout(30_000);
  let tdb: TestDb;
  let h: AdsHarness;
  let ads: RunningAds;
  let gw: { port: number; stop(): Promise<void> };

  before(async () => {
    tdb = await createTestDb('ads_unread');
    h = await adsHarness(adsTestEnv());
    ads = await startAds({ parent: h.system, db: tdb.db, nc: h.nc, config: h.config, log: h.logs.log, metrics: h.metrics, parts: { unread: true } });
    gw = await startGatewayRole({ db: tdb.db, nc: h.nc, config: h.config, log: h.logs.log, metrics: h.metrics, port: 0 });
  });
  after(async () => {
    await gw.stop();
    await ads.stop();
    await h.cleanup();
    await tdb.drop();
  });

  const unread = async (user: number): Promise<number> => {
    const r = await fetch(`http://127.0.0.1:${gw.port}/users/${user}/unread`);
    const text = await r.text();
    assert.equal(r.status, 200, text);
    return (JSON.parse(text) as { unread: number }).unread;
  };
  const lookups = async (result: string): Promise<number> =>
    (await h.metrics.registry.getSingleMetric('ads_unread_lookups_total')!.get()).values
      .filter((v) => v.labels.result === result)
      .reduce((s, v) => s + v.value, 0);
  const insertMessage = async (recipient: number, isRead = 0): Promise<number> =>
    Number((await tdb.db('messages').insert({ sender_id: 99, recipient_id: recipient, body: 'hi', is_read: isRead }))[0]);
  const publish = (subject: string, payload: unknown): void =>
    h.nc.publish(subject, typeof payload === 'string' ? new TextEncoder().encode(payload) : encodeJson(payload));

  it('a miss loads from the database; created/read events keep the cached count current', async () => {
    const user = 1001;
    for (let i = 0; i < 3; i++) await insertMessage(user);
    await insertMessage(user, 1);
    assert.equal(await unread(user), 3);
    assert.equal(await lookups('miss'), 1);

    const id = await insertMessage(user);
    publish(Subjects.messagesCreated(h.config.subjectPrefix), { id, sender_id: 99, recipient_id: user });
    await waitFor(async () => (await unread(user)) === 4, 5_000, 20, 'created applied');
    // A created event for a message the load already counted is skipped.
    publish(Subjects.messagesCreated(h.config.subjectPrefix), { id: id - 1, sender_id: 99, recipient_id: user });
    await tdb.db('messages').where({ recipient_id: user }).limit(2).update({ is_read: 1 });
    publish(Subjects.messagesRead(h.config.subjectPrefix), { recipient_id: user, count: 2 });
    await waitFor(async () => (await unread(user)) === 2, 5_000, 20, 'read applied');
    assert.equal(await lookups('miss'), 1, 'served from the cache since');
    // The cache agrees with the database.
    const [row] = await tdb.db('messages').where({ recipient_id: user, is_read: 0 }).count<Array<{ n: number | string }>>({ n: '*' });
    assert.equal(Number(row!.n), await unread(user));
  });

  it('answers over NATS request too', async () => {
    const user = 1002;
    await insertMessage(user);
    const m = await h.nc.request(Subjects.adsUnreadGet(h.config.subjectPrefix), encodeJson({ user_id: user }), { timeout: 2_000 });
    assert.deepEqual(m.json(), { ok: true, user_id: user, unread: 1 });
  });

  it('bad event and request payloads are counted and logged, never crash the cache', async () => {
    const p = h.config.subjectPrefix;
    const bad: Array<[string, unknown]> = [
      [Subjects.messagesCreated(p), 'not json'],
      [Subjects.messagesCreated(p), { id: -1, sender_id: 1, recipient_id: 1 }],
      [Subjects.messagesCreated(p), { id: 1, sender_id: 1, recipient_id: 1, extra: true }],
      [Subjects.messagesCreated(p), { id: '1', sender_id: 1, recipient_id: 1 }],
      [Subjects.messagesRead(p), { recipient_id: 1 }],
      [Subjects.messagesRead(p), { recipient_id: 1, count: 0 }],
      [Subjects.messagesRead(p), '\u0000'],
    ];
    for (const [s, payload] of bad) publish(s, payload);
    const r = await h.nc.request(Subjects.adsUnreadGet(p), encodeJson({ user_id: 'x' }), { timeout: 2_000 });
    assert.equal(r.json<{ ok: boolean; error: { code: string } }>().error.code, 'BAD_PAYLOAD');
    const rejected = async (): Promise<number> =>
      (await h.metrics.registry.getSingleMetric('nats_bad_payloads_total')!.get()).values.reduce((s, v) => s + v.value, 0);
    await waitFor(async () => (await rejected()) === bad.length + 1, 5_000, 20, 'all rejected');
    assert.ok(h.logs.lines().some((l) => l.msg === 'bad NATS payload rejected'));
    assert.equal(await unread(1001), 2, 'still serving');
  });
});
