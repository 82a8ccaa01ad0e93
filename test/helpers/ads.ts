import { spawn as spawnProcess, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import type { NatsConnection } from 'nats';
import { connectNats } from '../../src/nats/connection';
import { loadAdsConfig, type AdsConfig } from '../../src/config/ads';
import { Metrics } from '../../src/metrics';
import { startActorSystem, stopActorSystem, type ActorSystem } from '../../src/runtime/actor';
import type { Knex } from '../../src/db/knex';
import { NATS_URL, captureLogger, uniq } from './services';

/** Env for a test: unique subject prefix, stream and consumer names; fast timers. */
export function adsTestEnv(overrides: Record<string, string> = {}): Record<string, string> {
  return {
    NATS_SUBJECT_PREFIX: `${uniq('t')}.`,
    VIEWS_STREAM: uniq('ADSV'),
    VIEWS_CONSUMER: uniq('counter'),
    VIEW_FLUSH_MS: '100',
    VIEW_HASH_SALT: 'test-salt',
    BUMP_CHECK_MS: '100',
    BUMP_LEASE_MS: '1000',
    ADS_API_TOKEN: 'test-token-0123456789abcdef',
    RATE_LIMIT_MAX: '100000',
    // Tests simulate many visitors from 127.0.0.1; the per-IP cap has its own test (gateway-edge).
    VIEW_VISITORS_PER_IP: '100000',
    ...overrides,
  };
}

export interface AdsHarness {
  env: Record<string, string>;
  config: AdsConfig;
  nc: NatsConnection;
  metrics: Metrics;
  system: ActorSystem;
  logs: ReturnType<typeof captureLogger>;
  cleanup(): Promise<void>;
}

export async function adsHarness(env: Record<string, string>): Promise<AdsHarness> {
  const logs = captureLogger('debug');
  const config = loadAdsConfig(env);
  const nc = await connectNats({ url: NATS_URL, name: uniq('ads-test') }, logs.log);
  const metrics = new Metrics();
  const system = startActorSystem(uniq('ads'), logs.log);
  return {
    env,
    config,
    nc,
    metrics,
    system,
    logs,
    async cleanup() {
      stopActorSystem(system);
      try {
        const jsm = await nc.jetstreamManager();
        await jsm.streams.delete(config.viewsStream).catch(() => undefined);
      } finally {
        await nc.drain().catch(() => undefined);
      }
    },
  };
}

/** Inserts `n` ads; returns their ids. */
export async function insertAds(db: Knex, n: number, fields: Record<string, unknown> = {}): Promise<number[]> {
  const ids: number[] = [];
  for (let i = 0; i < n; i++) {
    const [id] = await db('advertisements').insert({ owner_id: 1, title: `ad ${i}`, ...fields });
    ids.push(Number(id));
  }
  return ids;
}

export interface WorkerProcess {
  proc: ChildProcess;
  lines: Array<Record<string, unknown>>;
  stderr: () => string;
  /** Resolves with the first (past or future) stdout JSON line matching `pred`. */
  waitLine(pred: (l: Record<string, unknown>) => boolean, timeoutMs?: number, what?: string): Promise<Record<string, unknown>>;
  exited: Promise<number | null>;
}

/** Runs test/fixtures/ads-worker.ts in a real child process (`node --import tsx`). */
export function spawnWorker(env: Record<string, string>): WorkerProcess {
  const proc = spawnProcess(process.execPath, ['--import', 'tsx', join(__dirname, '..', 'fixtures', 'ads-worker.ts')], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: Array<Record<string, unknown>> = [];
  const waiters: Array<() => void> = [];
  let buf = '';
  let err = '';
  proc.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    buf += chunk;
    let i: number;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      try {
        lines.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        lines.push({ raw: line });
      }
      for (const w of waiters.splice(0)) w();
    }
  });
  proc.stderr.setEncoding('utf8').on('data', (c: string) => (err += c));
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  return {
    proc,
    lines,
    stderr: () => err,
    exited,
    waitLine(pred, timeoutMs = 15_000, what = 'a log line') {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}; stderr: ${err.slice(-2000)}`)), timeoutMs);
        const check = (): void => {
          const hit = lines.find(pred);
          if (hit) {
            clearTimeout(timer);
            resolve(hit);
          } else waiters.push(check);
        };
        void exited.then((code) => {
          if (!lines.find(pred)) {
            clearTimeout(timer);
            reject(new Error(`worker exited (${code}) before ${what}; stderr: ${err.slice(-2000)}`));
          }
        });
        check();
      });
    },
  };
}

/** Deterministic pseudo-random numbers for reproducible traffic. */
export function lcg(seed: number): () => number {
  let x = seed >>> 0;
  return () => {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    return x / 2 ** 32;
  };
}

/** views_count per ad id. */
export async function viewCounts(db: Knex, ids: number[]): Promise<Map<number, number>> {
  const rows = await db('advertisements').whereIn('id', ids).select<Array<{ id: number | string; views_count: number | string }>>('id', 'views_count');
  return new Map(rows.map((r) => [Number(r.id), Number(r.views_count)]));
}
