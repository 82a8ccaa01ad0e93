import assert from 'node:assert/strict';
import type { NatsConnection } from 'nats';
import type { TelegramSandbox } from '../../sandbox/server';
import type { ClusterStatus } from '../../src/roles/cluster';
import type { Worker } from './processes';
import { TEST_TOKEN } from './pipeline';
import { NATS_URL, waitFor, type TestDb } from './services';

/**
 * What the tests that run several real worker processes in one cluster share: reading the
 * cluster's status over NATS, waiting for a balanced shard map, and cleaning up after each test.
 */

/** The cluster's status as `npm run cli -- status` reads it (the subject under the test's prefix `<bucket>.`). */
export async function clusterStatusOf(nc: NatsConnection, bucket: string): Promise<ClusterStatus> {
  const m = await nc.request(`${bucket}.notify.cluster.status`, new Uint8Array(), { timeout: 5_000 });
  return JSON.parse(new TextDecoder().decode(m.data)) as ClusterStatus;
}

/** Waits until exactly `n` of this test's processes hold all 64 shards, ⌊64/n⌋ or ⌈64/n⌉ each, and the answering process sees all 64; the status then. */
export async function waitBalanced(nc: NatsConnection, bucket: string, n: number, timeoutMs = 30_000): Promise<ClusterStatus> {
  let last: ClusterStatus | undefined;
  await waitFor(
    async () => {
      last = await clusterStatusOf(nc, bucket).catch(() => undefined);
      const counts = last?.processes.filter((p) => p.instance.endsWith(bucket)).map((p) => p.owned.length) ?? [];
      // The map is the answering process's last view: right after the others took their shards it may lag a tick.
      const viewed = Object.keys(last?.map ?? {}).length === 64;
      return (
        viewed && counts.length === n && counts.reduce((a, b) => a + b, 0) === 64 && counts.every((c) => c === Math.floor(64 / n) || c === Math.ceil(64 / n))
      );
    },
    timeoutMs,
    200,
    `${n} processes with balanced shards`,
  );
  return last!;
}

/** After each test: SIGKILL the workers, drop the cluster's buckets, close NATS, stop the sandbox, drop the database. */
export async function cleanUpCluster(c: { workers: Worker[]; nc?: NatsConnection; bucket?: string; sandbox?: TelegramSandbox; tdb?: TestDb }): Promise<void> {
  for (const w of c.workers.splice(0)) {
    w.kill('SIGKILL');
    await w.exited;
  }
  const jsm = await c.nc?.jetstreamManager().catch(() => undefined);
  if (c.bucket) for (const s of [`KV_${c.bucket}`, `KV_${c.bucket}_handoff`]) await jsm?.streams.delete(s).catch(() => undefined);
  await c.nc?.close().catch(() => undefined);
  await c.sandbox?.stop();
  await c.tdb?.drop();
}

/**
 * A cluster test worker's environment: this test's database, sandbox, bucket and subject prefix, the
 * instance `<name>-<bucket>`, 300/s bot-wide and 10/s per chat, a 200 ms poll, 5 s claim leases; `env` overrides.
 */
export function clusterWorkerEnv(
  c: { tdb: TestDb; sandbox: TelegramSandbox; bucket: string; name: string },
  env: Record<string, string> = {},
): Record<string, string> {
  return {
    DATABASE_URL: c.tdb.url,
    NATS_URL,
    TELEGRAM_BOT_TOKEN: TEST_TOKEN,
    TELEGRAM_API_ROOT: c.sandbox.apiRoot,
    TELEGRAM_GLOBAL_RATE: '300',
    TELEGRAM_CHAT_RATE: '10',
    INSTANCE_ID: `${c.name}-${c.bucket}`,
    OUTBOX_POLL_MS: '200',
    CLAIM_LEASE_MS: '5000',
    CLUSTER_BUCKET: c.bucket,
    NATS_SUBJECT_PREFIX: `${c.bucket}.`,
    ROLE: 'worker',
    ...env,
  };
}

/**
 * Every one of `n` rows delivered exactly once, and each chat's deliveries in row order; `seq`
 * reads a delivery's place in its chat's order from its text (the tests number their rows).
 */
export function assertExactlyOnceInOrder(sandbox: TelegramSandbox, n: number, seq: (text: string) => number): void {
  const d = sandbox.delivered();
  assert.equal(new Set(d.map((x) => x.text)).size, n, 'every row delivered');
  assert.equal(d.length, n, 'none twice');
  const byChat = new Map<number, number[]>();
  for (const x of d) byChat.set(x.chatId, [...(byChat.get(x.chatId) ?? []), seq(x.text!)]);
  for (const [chat, got] of byChat)
    assert.deepEqual(
      got,
      [...got].sort((a, b) => a - b),
      `chat ${chat} in order`,
    );
}
