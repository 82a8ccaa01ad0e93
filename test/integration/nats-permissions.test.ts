import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { connect, Events, nkeyAuthenticator, type NatsConnection, type Status } from 'nats';
import { TelegramSandbox } from '../../sandbox/server';
import { encodeJson } from '../../src/nats/codec';
import type { EnqueueReply } from '../../src/nats/payloads';
import { createTestDb, waitFor, type TestDb } from '../helpers/services';
import { startWorker, type Worker } from '../helpers/processes';
import { TEST_TOKEN } from '../helpers/pipeline';
import { insertAds, viewCounts } from '../helpers/ads';
import { loadAdsConfig } from '../../src/config/ads';
import { ensureViewsConsumer, ensureViewsStream } from '../../src/ads/views-stream';
import { openClusterBucket } from '../../src/cluster/kv';
import { nk } from '../helpers/nats-jwt';
import { freePort, renderDeployConf, startPrivateNats, type PrivateNats } from '../helpers/nats-private';

const run = promisify(execFile);
const PREFIX = 'perm1.';
const PASSWORDS = {
  NOTIFY_PRODUCER_PASSWORD: 'producer-pw-0123',
  NOTIFY_GATEWAY_PASSWORD: 'gateway-pw-0123',
  NOTIFY_WORKER_PASSWORD: 'worker-pw-0123',
  NOTIFY_SITE_PASSWORD: 'site-pw-0123',
};
const API_TOKEN = 'perm-test-token-0123456789';

/** Resolves with the permissions-violation status the server sends for `subject`. */
function permissionDenied(nc: NatsConnection, subject: string, timeoutMs = 5_000): Promise<{ operation: string; subject: string }> {
  return new Promise((res, rej) => {
    const timer = setTimeout(() => {
      rej(new Error(`no permissions violation for ${subject} within ${timeoutMs} ms`));
    }, timeoutMs);
    void (async () => {
      for await (const s of nc.status() as AsyncIterable<Status & { permissionContext?: { operation: string; subject: string } }>) {
        if (s.type === Events.Error && s.permissionContext?.subject === subject) {
          clearTimeout(timer);
          res(s.permissionContext);
          return;
        }
      }
    })();
  });
}

describe('deploy/nats-server.conf: one NATS user per role on a real nats-server', function () {
  this.timeout(90_000);
  let tdb: TestDb;
  let nats: PrivateNats;
  let sandbox: TelegramSandbox;
  let worker: Worker;
  let gateway: Worker;
  let gatewayPort: number;
  let allGatewayPort: number;
  let keyDir: string;
  let seedFile: string;
  let common: Record<string, string>;

  before(async () => {
    tdb = await createTestDb('perm');
    keyDir = mkdtempSync(join(tmpdir(), 'nkey-'));
    const operator = nk.createUser();
    seedFile = join(keyDir, 'operator.nk');
    writeFileSync(seedFile, new TextDecoder().decode(operator.getSeed()) + '\n', { mode: 0o600 });
    const storeDir = mkdtempSync(join(tmpdir(), 'js-'));
    nats = await startPrivateNats(renderDeployConf(storeDir, PREFIX), { ...PASSWORDS, NOTIFY_OPERATOR_NKEY: operator.getPublicKey() }, storeDir);
    sandbox = new TelegramSandbox({ globalRate: 300, chatRate: 10 });
    await sandbox.start();
    common = {
      DATABASE_URL: tdb.url,
      NATS_URL: nats.url,
      NATS_SUBJECT_PREFIX: PREFIX,
      VIEWS_STREAM: 'ADS_VIEWS',
      SHARD_LEASE_TTL_MS: '3000',
      VIEW_FLUSH_MS: '100',
    };
    // ROLE=all: the worker user must also cover the in-process gateway.
    allGatewayPort = await freePort();
    worker = startWorker({
      ...common,
      ROLE: 'all',
      GATEWAY_HOST: '127.0.0.1',
      GATEWAY_PORT: String(allGatewayPort),
      ADS_API_TOKEN: API_TOKEN,
      INSTANCE_ID: 'perm-worker',
      NATS_USER: 'worker',
      NATS_PASSWORD: PASSWORDS.NOTIFY_WORKER_PASSWORD,
      TELEGRAM_BOT_TOKEN: TEST_TOKEN,
      TELEGRAM_API_ROOT: sandbox.apiRoot,
      TELEGRAM_GLOBAL_RATE: '300',
      TELEGRAM_CHAT_RATE: '10',
    });
    await worker.waitForLine(/shards acquired/, 45_000);
    gatewayPort = await freePort();
    gateway = startWorker({
      ...common,
      ROLE: 'gateway',
      INSTANCE_ID: 'perm-gateway',
      MIGRATE_ON_START: 'false',
      NATS_USER: 'gateway',
      NATS_PASSWORD: PASSWORDS.NOTIFY_GATEWAY_PASSWORD,
      GATEWAY_HOST: '127.0.0.1',
      GATEWAY_PORT: String(gatewayPort),
      ADS_API_TOKEN: API_TOKEN,
    });
    await gateway.waitForLine(/ads gateway listening/, 45_000);
  });
  after(async () => {
    worker?.kill('SIGKILL');
    gateway?.kill('SIGKILL');
    await Promise.all([worker?.exited, gateway?.exited]);
    await sandbox?.stop();
    await nats?.stop();
    if (keyDir) rmSync(keyDir, { recursive: true, force: true });
    await tdb?.drop();
  });

  const cli = async (...args: string[]): Promise<{ out: string; code: number }> => {
    try {
      const r = await run(process.execPath, ['--import', 'tsx', resolve(__dirname, '../../src/cli.ts'), ...args], {
        env: { PATH: process.env.PATH ?? '', ...common, NATS_NKEY_SEED_FILE: seedFile },
      });
      return { out: r.stdout + r.stderr, code: 0 };
    } catch (e) {
      const err = e as { stdout: string; stderr: string; code: number };
      return { out: err.stdout + err.stderr, code: err.code };
    }
  };
  const producer = (): Promise<NatsConnection> => connect({ servers: nats.url, user: 'producer', pass: PASSWORDS.NOTIFY_PRODUCER_PASSWORD });

  it('a wrong password is refused, and no user may connect without credentials', async () => {
    await assert.rejects(connect({ servers: nats.url, user: 'producer', pass: 'wrong' }), /Authorization Violation/i);
    await assert.rejects(connect({ servers: nats.url }), /Authorization Violation/i);
  });

  it('producer: enqueue works and the worker delivers it', async () => {
    const nc = await producer();
    try {
      const r = (await nc.request(`${PREFIX}notify.enqueue`, encodeJson({ chat_id: 5001, text: 'from a producer' }), { timeout: 5_000 })).json<EnqueueReply>();
      assert.equal(r.ok, true, JSON.stringify(r));
      await waitFor(() => sandbox.delivered(5001).length === 1, 15_000, 50, 'delivery to 5001');
      assert.equal(sandbox.delivered(5001)[0]!.text, 'from a producer');
    } finally {
      await nc.close();
    }
  });

  it('producer: a publish to notify.budget.flood, notify.budget.grant.* or notify.recipient.changed is refused by the server', async () => {
    const nc = await producer();
    try {
      for (const subject of [
        `${PREFIX}notify.budget.flood`,
        `${PREFIX}notify.budget.grant.perm-worker_x`,
        `${PREFIX}notify.recipient.changed`,
        `${PREFIX}notify.wake.3`,
      ]) {
        const denied = permissionDenied(nc, subject);
        nc.publish(
          subject,
          encodeJson({ until: Date.now() + 30 * 86_400_000, instance: 'forged', chat_id: 5001, status: 'migrated', migrated_to_chat_id: 666 }),
        );
        assert.deepEqual(await denied, { operation: 'publish', subject, queue: undefined });
      }
      const deniedSub = permissionDenied(nc, `${PREFIX}notify.outcome.>`);
      nc.subscribe(`${PREFIX}notify.outcome.>`);
      assert.equal((await deniedSub).operation, 'subscription');
      // The connection survives the refusals: enqueue still works, and the forged events had no effect.
      const r = (await nc.request(`${PREFIX}notify.enqueue`, encodeJson({ chat_id: 5001, text: 'still here' }), { timeout: 5_000 })).json<EnqueueReply>();
      assert.equal(r.ok, true);
      await waitFor(() => sandbox.delivered(5001).length === 2, 15_000, 50, 'second delivery to 5001 (not paused, not redirected)');
      assert.equal(sandbox.delivered(666).length, 0);
    } finally {
      await nc.close();
    }
  });

  for (const which of ['gateway process (gateway user)', 'ROLE=all process (worker user)'] as const) {
    it(`${which}: POST /notifications, views (JetStream → worker counter), view counts and unread work`, async () => {
      const base = `http://127.0.0.1:${which.startsWith('gateway') ? gatewayPort : allGatewayPort}`;
      const chat = which.startsWith('gateway') ? 5002 : 5012;
      const post = await fetch(`${base}/notifications`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${API_TOKEN}` },
        body: JSON.stringify({ chat_id: chat, text: 'via the gateway' }),
      });
      assert.equal(post.status, 202, await post.clone().text());
      await waitFor(() => sandbox.delivered(chat).length === 1, 15_000, 50, `delivery to ${chat}`);
      const [adId] = (await insertAds(tdb.db, 1)) as [number];
      const view = await fetch(`${base}/ads/${adId}/views`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ visitor_id: 'v1' }),
      });
      assert.equal(view.status, 202, await view.clone().text());
      await waitFor(async () => (await viewCounts(tdb.db, [adId])).get(adId) === 1, 15_000, 100, 'view counted by the worker');
      const views = await fetch(`${base}/ads/${adId}/views`);
      assert.equal(views.status, 200, await views.clone().text());
      const unread = await fetch(`${base}/users/7/unread`);
      assert.equal(unread.status, 200, await unread.clone().text());
      const bump = await fetch(`${base}/ads/bump`, { method: 'POST', headers: { authorization: `Bearer ${API_TOKEN}` } });
      assert.equal(bump.status, 200, await bump.clone().text());
    });
  }

  it('worker user: JetStream rights cover creating and updating its own stream, consumer and bucket, and nothing else', async () => {
    const nc = await connect({ servers: nats.url, user: 'worker', pass: PASSWORDS.NOTIFY_WORKER_PASSWORD });
    try {
      const jsm = await nc.jetstreamManager();
      // The update paths a config change takes at the next start (VIEW_DUPLICATE_WINDOW, VIEW_ACK_WAIT_MS;
      // another max age, replica count or subject set is a start-up error instead: docs/deploy.md).
      const changed = loadAdsConfig({ NATS_SUBJECT_PREFIX: PREFIX, VIEWS_STREAM: 'ADS_VIEWS', VIEW_DUPLICATE_WINDOW: '3m', VIEW_ACK_WAIT_MS: '45s' });
      await ensureViewsStream(jsm, changed);
      await ensureViewsConsumer(jsm, changed);
      assert.equal((await jsm.streams.info('ADS_VIEWS')).config.duplicate_window, 180 * 1e9);
      assert.equal((await jsm.consumers.info('ADS_VIEWS', 'ads-view-counter')).config.ack_wait, 45 * 1e9);
      await openClusterBucket(nc, 'notify_cluster', { leaseTtlMs: 3_000, replicas: 1 });
      const refused = /permissions violation/i;
      await assert.rejects(jsm.streams.delete('ADS_VIEWS'), refused);
      await assert.rejects(jsm.streams.purge('ADS_VIEWS'), refused);
      await assert.rejects(jsm.streams.delete('KV_notify_cluster'), refused);
      await assert.rejects(jsm.streams.add({ name: 'OTHER', subjects: ['other.>'] }), refused);
      await assert.rejects(jsm.consumers.delete('ADS_VIEWS', 'ads-view-counter'), refused);
    } finally {
      await nc.close();
    }
  });

  it('site user: a single-view JetStream event is counted by the worker; unread over NATS answers; the control plane stays closed to it', async () => {
    const nc = await connect({ servers: nats.url, user: 'site', pass: PASSWORDS.NOTIFY_SITE_PASSWORD });
    try {
      const [adId] = (await insertAds(tdb.db, 1)) as [number];
      const ack = await nc.jetstream().publish(`${PREFIX}ads.views.${adId}`, encodeJson({ ad_id: adId, visitor: 'ab'.repeat(16), ts: Date.now() }));
      assert.equal(ack.stream, 'ADS_VIEWS');
      await waitFor(async () => (await viewCounts(tdb.db, [adId])).get(adId) === 1, 15_000, 100, 'the site view counted');
      const unread = (await nc.request(`${PREFIX}ads.unread.get`, encodeJson({ user_id: 9 }), { timeout: 5_000 })).json<{ ok: boolean }>();
      assert.equal(unread.ok, true);
      const denied = permissionDenied(nc, `${PREFIX}notify.budget.flood`);
      nc.publish(`${PREFIX}notify.budget.flood`, encodeJson({ until: Date.now() + 60_000, instance: 'site' }));
      assert.equal((await denied).operation, 'publish');
    } finally {
      await nc.close();
    }
  });

  it('operator (NKEY seed file): the CLI status, enqueue, retry-failed and recipient --clear work', async () => {
    const status = await cli('status');
    assert.equal(status.code, 0, status.out);
    assert.match(status.out, /1 member\(s\), 64 shards/);
    const enq = await cli('enqueue', '5003', 'from', 'the', 'operator');
    assert.equal(enq.code, 0, enq.out);
    await waitFor(() => sandbox.delivered(5003).length === 1, 15_000, 50, 'delivery to 5003');
    const retry = await cli('retry-failed', '--chat', '5003');
    assert.equal(retry.code, 0, retry.out);
    const clear = await cli('recipient', '5003', '--clear');
    assert.equal(clear.code, 0, clear.out);
    // Service discovery (what `nats micro info` does) with the same seed.
    const nc = await connect({ servers: nats.url, authenticator: nkeyAuthenticator(new TextEncoder().encode(readFileSync(seedFile, 'utf8').trim())) });
    try {
      const infos = [];
      for await (const i of await nc.services.client().info('notify-worker')) infos.push(i);
      assert.deepEqual(
        infos.map((i) => i.metadata?.instance),
        ['perm-worker'],
      );
    } finally {
      await nc.close();
    }
  });

  it('no process was refused anything it needs (no NATS_PERMISSION in the worker and gateway logs)', () => {
    const refused = [...worker.lines, ...gateway.lines].filter((l) => l.includes('NATS_PERMISSION') || /permissions violation/i.test(l));
    assert.deepEqual(refused, []);
  });
});
