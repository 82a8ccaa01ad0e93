import assert from 'node:assert/strict';
import { connect, type NatsConnection } from 'nats';
import { loadAdsConfig } from '../../src/config/ads';
import { ensureViewsStream } from '../../src/ads/views-stream';
import type { AppError } from '../../src/errors';
import { adsTestEnv } from '../helpers/ads';
import { NATS_URL, uniq } from '../helpers/services';

describe('JetStream streams: NATS_REPLICAS and the start-up check of existing streams', function () {
  this.timeout(20_000);
  let nc: NatsConnection;
  let stream: string;
  beforeEach(async () => {
    nc = await connect({ servers: NATS_URL });
    stream = uniq('views');
  });
  afterEach(async () => {
    await (await nc.jetstreamManager()).streams.delete(stream).catch(() => undefined);
    await nc.close();
  });

  it('creates the views stream with NATS_REPLICAS replicas', async () => {
    const c = loadAdsConfig(adsTestEnv({ VIEWS_STREAM: stream, NATS_SUBJECT_PREFIX: `${stream}.`, NATS_REPLICAS: '1' }));
    const jsm = await nc.jetstreamManager();
    await ensureViewsStream(jsm, c);
    assert.equal((await jsm.streams.info(stream)).config.num_replicas, 1);
    await ensureViewsStream(jsm, c); // idempotent
  });

  it('an existing views stream with replicas 1 while NATS_REPLICAS=3: a start-up error naming both values and the migration step', async () => {
    const jsm = await nc.jetstreamManager();
    await ensureViewsStream(jsm, loadAdsConfig(adsTestEnv({ VIEWS_STREAM: stream, NATS_SUBJECT_PREFIX: `${stream}.` })));
    const c3 = loadAdsConfig(adsTestEnv({ VIEWS_STREAM: stream, NATS_SUBJECT_PREFIX: `${stream}.`, NATS_REPLICAS: '3' }));
    await assert.rejects(ensureViewsStream(jsm, c3), (e: AppError) => {
      assert.equal(e.code, 'NATS_STREAM_MISMATCH');
      assert.match(e.message, /replicas 1 but NATS_REPLICAS asks for 3/);
      assert.match(e.message, new RegExp(`nats stream edit ${stream} --replicas=3`));
      return true;
    });
    assert.equal((await jsm.streams.info(stream)).config.num_replicas, 1, 'nothing changed behind the operator');
  });

  it('other subjects (NATS_SUBJECT_PREFIX) or another max age are refused too, not silently applied', async () => {
    const jsm = await nc.jetstreamManager();
    await ensureViewsStream(jsm, loadAdsConfig(adsTestEnv({ VIEWS_STREAM: stream, NATS_SUBJECT_PREFIX: `${stream}.` })));
    await assert.rejects(
      ensureViewsStream(jsm, loadAdsConfig(adsTestEnv({ VIEWS_STREAM: stream, NATS_SUBJECT_PREFIX: `${stream}x.` }))),
      /subjects .* but NATS_SUBJECT_PREFIX asks for/,
    );
    await assert.rejects(
      ensureViewsStream(jsm, loadAdsConfig(adsTestEnv({ VIEWS_STREAM: stream, NATS_SUBJECT_PREFIX: `${stream}.`, VIEW_STREAM_MAX_AGE: '1d' }))),
      /max_age 604800000 ms but VIEW_STREAM_MAX_AGE asks for 86400000 ms/,
    );
  });

  it('NATS_REPLICAS is validated at start-up', () => {
    assert.throws(() => loadAdsConfig(adsTestEnv({ NATS_REPLICAS: '7' })), /NATS_REPLICAS: expected an integer between 1 and 5, got 7/);
  });
});
