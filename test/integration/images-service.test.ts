import { strict as assert } from 'node:assert';
import { connect, RequestStrategy, type NatsConnection } from 'nats';
import { spawnFetcher, type FetcherMessage } from '../../actors/image-fetcher';
import { startActorSystem, stopActorSystem, query, type ActorRef, type ActorSystem } from '../../src/runtime/actor';
import { ImagesService, type ImagesReply } from '../../src/roles/images';
import { Subjects } from '../../src/nats/subjects';
import type { FetchResult } from '../../src/images/cache';
import { encodeJson } from '../../src/nats/codec';
import { startImageServer, type ImageServer } from '../helpers/image-server';
import { captureLogger, uniq, waitFor, NATS_URL } from '../helpers/services';

const dec = new TextDecoder();

describe('images: NATS stats and invalidation', () => {
  let srv: ImageServer;
  let nc: NatsConnection;
  let system: ActorSystem;
  const procs: Array<{ instance: string; fetcher: ActorRef<FetcherMessage>; service: ImagesService }> = [];

  before(async () => {
    srv = await startImageServer();
    nc = await connect({ servers: NATS_URL });
  });
  after(async () => {
    await nc.drain();
    await srv.close();
  });
  beforeEach(() => {
    const { log } = captureLogger();
    system = startActorSystem('images-service-test', log);
    // Two "processes": each its own fetcher and subscriptions (here on one connection).
    for (let i = 0; i < 2; i++) {
      const instance = uniq(`img${i}-`);
      const fetcher = spawnFetcher(
        system,
        {
          config: {
            allowedHosts: ['127.0.0.1'],
            cacheMaxBytes: 1_000_000,
            cacheTtlMs: 60_000,
            fetchTimeoutMs: 2_000,
            maxBytes: 1_000_000,
            fetchConcurrency: 4,
          },
        },
        { name: `fetcher-${i}` },
      );
      const service = new ImagesService({ nc, fetcher, instanceId: instance, log });
      service.start();
      procs.push({ instance, fetcher, service });
    }
  });
  afterEach(async () => {
    for (const p of procs.splice(0)) await p.service.stop();
    stopActorSystem(system);
  });

  const fetchVia = (f: ActorRef<FetcherMessage>, url: string, productId?: number): Promise<FetchResult> =>
    query<FetcherMessage, FetchResult>(
      f,
      (replyTo) => (productId === undefined ? { type: 'fetch', url, replyTo } : { type: 'fetch', url, productId, replyTo }),
      5_000,
    );
  const request = async (subject: string, body?: unknown): Promise<ImagesReply> =>
    JSON.parse(dec.decode((await nc.request(subject, body === undefined ? new Uint8Array() : encodeJson(body), { timeout: 2_000 })).data)) as ImagesReply;
  async function requestAll(subject: string, body: unknown): Promise<ImagesReply[]> {
    const out: ImagesReply[] = [];
    // Both services here share one connection and answer; collect until 2 replies (or timeout).
    for await (const m of await nc.requestMany(subject, encodeJson(body), { strategy: RequestStrategy.Count, maxWait: 2_000, maxMessages: procs.length }))
      out.push(JSON.parse(dec.decode(m.data)) as ImagesReply);
    return out;
  }

  it('stats per instance', async () => {
    const [p0] = procs;
    await fetchVia(p0!.fetcher, srv.url('/png/4000/svc-stats'));
    const r = await request(Subjects.imagesCacheStats(p0!.instance));
    assert.ok(r.ok && 'stats' in r);
    assert.equal(r.instance, p0!.instance);
    assert.equal(r.stats.entries, 1);
    assert.equal(r.stats.bytes, 4000);
    assert.equal(r.stats.downloads, 1);
  });

  it('stats from every instance at once', async () => {
    const replies = await requestAll(Subjects.imagesCacheStatsAll, {});
    assert.deepEqual(replies.map((r) => r.instance).sort(), procs.map((p) => p.instance).sort());
  });

  it('invalidate is applied by every process: by URL and by product', async () => {
    const url = srv.url('/png/1000/svc-inv');
    for (const p of procs) await fetchVia(p.fetcher, url, 77);
    const replies = await requestAll(Subjects.imagesCacheInvalidate, { url });
    assert.equal(replies.length, 2);
    assert.ok(replies.every((r) => r.ok && 'removed' in r && r.removed === 1));

    for (const p of procs) await fetchVia(p.fetcher, url, 77);
    assert.equal(srv.hits('/png/1000/svc-inv'), 4, 'both downloaded again');
    // Fire-and-forget broadcast (no reply subject): still applied everywhere.
    nc.publish(Subjects.imagesCacheInvalidate, encodeJson({ product_id: 77 }));
    await waitFor(
      async () => {
        for (const p of procs) {
          const r = await request(Subjects.imagesCacheStats(p.instance));
          if (!(r.ok && 'stats' in r && r.stats.entries === 0)) return false;
        }
        return true;
      },
      5_000,
      20,
      'both caches empty',
    );
  });

  it('bad payloads get a precise error reply', async () => {
    const p0 = procs[0]!;
    const bad = async (body: unknown): Promise<string> => {
      const replies = await requestAll(Subjects.imagesCacheInvalidate, body);
      const r = replies.find((x) => x.instance === p0.instance);
      assert.ok(r && !r.ok, JSON.stringify(replies));
      return `${r.error.code}: ${r.error.message}`;
    };
    assert.match(await bad({ url: 'x', product_id: 1 }), /^BAD_PAYLOAD: give exactly one/);
    assert.match(await bad({}), /^BAD_PAYLOAD: give exactly one/);
    assert.match(await bad({ product_id: 'seven' }), /^BAD_PAYLOAD: \/product_id must be integer/);
    assert.match(await bad({ urls: 'x' }), /^BAD_PAYLOAD: .*unknown field "urls"/);
    assert.match(await bad({ url: 'relative.png' }), /^BAD_PAYLOAD: \/url must be an absolute URL/);
    const r = await request(Subjects.imagesCacheStats(p0.instance), { verbose: true });
    assert.ok(!r.ok && r.error.code === 'BAD_PAYLOAD');
  });
});
