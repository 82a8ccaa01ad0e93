import { connect, type NatsConnection } from 'nats';
import { loadConfig, type Config } from '../../src/config/core';
import { Metrics } from '../../src/metrics';
import { TelegrafClient } from '../../src/telegram/client';
import { TelegramSandbox } from '../../sandbox/server';
import type { SandboxOptions } from '../../sandbox/types';
import { startPipeline, type Pipeline } from '../../src/roles/pipeline';
import type { PipelineSettings } from '../../actors/pipeline/deps';
import type { Planner } from '../../src/outbox/plan';
import { makeSubjects, type SubjectSet } from '../../src/nats/subjects';
import { createTestDb, captureLogger, uniq, waitFor, NATS_URL, type TestDb } from './services';

export const TEST_TOKEN = '123456:TEST-token-abcdefghijklmnopqrstuvwxyz';

export interface Harness {
  tdb: TestDb;
  sandbox: TelegramSandbox;
  nc: NatsConnection;
  config: Config;
  logs: ReturnType<typeof captureLogger>;
  pipeline: Pipeline | undefined;
  /** This harness's subjects (with its own prefix). */
  readonly subjects: SubjectSet;
  start(settings?: Partial<PipelineSettings>, env?: Record<string, string>, planner?: Planner, metrics?: Metrics): Promise<Pipeline>;
  stopPipeline(): Promise<void>;
  close(): Promise<void>;
}

/** A fresh DB, a sandbox on a random port and a NATS connection; the pipeline starts on demand. */
export async function harness(opts: { sandbox?: SandboxOptions; env?: Record<string, string> } = {}): Promise<Harness> {
  const tdb = await createTestDb('pl');
  const sandbox = new TelegramSandbox(opts.sandbox ?? { globalRate: 300, chatRate: 10 });
  const { apiRoot } = await sandbox.start();
  const nc = await connect({ servers: NATS_URL });
  const logs = captureLogger(process.env.TEST_LOG_LEVEL ?? 'info');
  // Subjects of this harness only: other tests' workers on the same NATS never answer ours.
  const prefix = uniq('h');
  const h: Harness = {
    tdb,
    sandbox,
    nc,
    logs,
    pipeline: undefined,
    subjects: makeSubjects(`${prefix}.`),
    config: undefined as unknown as Config,
    async start(settings, env, planner, metrics) {
      h.config = loadConfig({
        DATABASE_URL: tdb.url,
        NATS_URL,
        TELEGRAM_BOT_TOKEN: TEST_TOKEN,
        TELEGRAM_API_ROOT: apiRoot,
        TELEGRAM_GLOBAL_RATE: String(opts.sandbox?.globalRate ?? 300),
        TELEGRAM_CHAT_RATE: String(opts.sandbox?.chatRate ?? 10),
        INSTANCE_ID: uniq('w'),
        NATS_SUBJECT_PREFIX: `${prefix}.`,
        OUTBOX_POLL_MS: '100',
        RETRY_BASE_MS: '50',
        RETRY_MAX_MS: '400',
        ...opts.env,
        ...env,
      });
      const telegram = new TelegrafClient({ token: TEST_TOKEN, apiRoot, timeoutMs: h.config.telegramRequestTimeoutMs });
      h.pipeline = await startPipeline({
        ownAllShards: true,
        config: h.config,
        log: logs.log,
        metrics: metrics ?? new Metrics(),
        db: tdb.db,
        nc,
        telegram,
        settings,
        ...(planner ? { planner } : {}),
      });
      return h.pipeline;
    },
    async stopPipeline() {
      await h.pipeline?.stop();
      h.pipeline = undefined;
    },
    async close() {
      await h.stopPipeline().catch(() => undefined);
      await nc.close().catch(() => undefined);
      await sandbox.stop().catch(() => undefined);
      await tdb.drop().catch(() => undefined);
    },
  };
  return h;
}

/** Inserts rows the way legacy producers do: telegram_id and message_text only. */
export async function insertLegacy(h: Harness, rows: Array<{ chat: number; text: string }>): Promise<number[]> {
  const ids: number[] = [];
  for (let i = 0; i < rows.length; i += 500) {
    const chunk = rows.slice(i, i + 500);
    const [first] = await h.tdb.db('telegram_notifications').insert(chunk.map((r) => ({ telegram_id: r.chat, message_text: r.text })));
    for (let k = 0; k < chunk.length; k++) ids.push(Number(first) + k);
  }
  return ids;
}

export async function rowsByStatus(h: Harness): Promise<Record<string, number>> {
  const rows = await h.tdb.db('telegram_notifications').select('status').count<Array<{ status: string; n: number | string }>>({ n: '*' }).groupBy('status');
  return Object.fromEntries(rows.map((r) => [r.status, Number(r.n)]));
}

/** Resolves once the sandbox saw no new request for a poll interval (requests on the wire have landed). */
export async function waitForSandboxIdle(sandbox: TelegramSandbox, timeoutMs = 5_000): Promise<void> {
  let last = -1;
  await waitFor(
    () => {
      const n = sandbox.stats().requests;
      const settled = n === last;
      last = n;
      return settled;
    },
    timeoutMs,
    200,
    'sandbox idle',
  );
}

/** Deletes a test's cluster KV bucket (its stream) so runs leave nothing behind on the NATS server. */
export async function dropBucket(bucket: string, url = NATS_URL): Promise<void> {
  const nc = await connect({ servers: url });
  try {
    const jsm = await nc.jetstreamManager();
    await jsm.streams.delete(`KV_${bucket}`).catch(() => undefined);
  } finally {
    await nc.close();
  }
}
