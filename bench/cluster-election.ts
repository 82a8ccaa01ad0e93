/**
 * `npx tsx bench/cluster-election.ts` — how long an R3 KV bucket cannot be written after the
 * node leading it is SIGKILLed (nats-server as installed, three nodes on loopback).
 *
 * Each run: a bucket made like the cluster bucket (R3, history 1, reads from the stream
 * leader, request timeout 1.5 s as for the default 6 s lease TTL); its stream leader moved to
 * the JetStream meta leader (the worst case bench:cluster's leader kill makes); one client
 * (connected to every node, the worker's reconnect settings) writes a key every
 * BENCH_ELECTION_EVERY_MS (default 50) with no pause between a failure and the next try, as a lease
 * renewer retrying often would. Reported per run: kill → first successful write, the failed
 * writes by kind (503 / timeout / other), and kill → the stream leader seen on /jsz. The node is
 * restarted and the cluster settles before the next run. BENCH_ELECTION_RUNS (default 6).
 */
import os from 'node:os';
import { connect, type KV } from 'nats';
import { NatsCluster } from '../test/helpers/nats-cluster';
import { isUnavailable } from '../src/cluster/kv';
import { table } from './lib';

const RUNS = Number(process.env.BENCH_ELECTION_RUNS ?? 6);
const EVERY_MS = Number(process.env.BENCH_ELECTION_EVERY_MS ?? 50);

async function main(): Promise<void> {
  const load0 = os.loadavg();
  const cluster = await NatsCluster.start();
  const nc = await connect({ servers: cluster.urls.split(','), maxReconnectAttempts: -1, reconnectTimeWait: 250, pingInterval: 5_000 });
  const rows: Array<Array<string | number>> = [];
  try {
    for (let run = 1; run <= RUNS; run++) {
      const bucket = `el${Date.now().toString(36)}`;
      const kv: KV = await nc.jetstream({ timeout: 1_500 }).views.kv(bucket, { ttl: 18_000, history: 1, replicas: 3 });
      (kv as unknown as { direct: boolean }).direct = false;
      await kv.put('k', new Uint8Array([1]));
      const meta = await cluster.waitForMetaLeader();
      const victim = await cluster.moveStreamLeader(nc, `KV_${bucket}`, meta);
      const bothLed = victim === meta ? 'meta + bucket' : 'bucket only';
      // Settle: the writes go through before the kill.
      for (let i = 0; i < 10; i++) await kv.put('k', new Uint8Array([i]));
      const killedAt = Date.now();
      const killing = cluster.kill(victim);
      const failed = { unavailable: 0, timeout: 0, other: 0 };
      let firstOk = 0;
      let leaderAt = 0;
      const watchLeader = (async () => {
        while (!leaderAt && Date.now() - killedAt < 60_000) {
          const l = await cluster.streamLeader(`KV_${bucket}`).catch(() => undefined);
          if (l && l !== victim) leaderAt = Date.now();
          else await sleep(50);
        }
      })();
      while (!firstOk && Date.now() - killedAt < 60_000) {
        const t = Date.now();
        try {
          await kv.put('k', new Uint8Array([run]));
          firstOk = Date.now();
        } catch (e) {
          if (isUnavailable(e)) failed.unavailable++;
          else if (/timeout/i.test((e as { code?: string }).code ?? (e as Error).message)) failed.timeout++;
          else failed.other++;
          await sleep(Math.max(0, EVERY_MS - (Date.now() - t)));
        }
      }
      await killing;
      await watchLeader;
      rows.push([
        run,
        bothLed,
        firstOk ? ((firstOk - killedAt) / 1000).toFixed(2) : 'none in 60 s',
        leaderAt ? ((leaderAt - killedAt) / 1000).toFixed(2) : '-',
        failed.unavailable,
        failed.timeout,
        failed.other,
        os.loadavg()[0]!.toFixed(2),
      ]);
      console.log(rows[rows.length - 1]!.join('  '));
      await cluster.restart(victim);
      await cluster.waitForMetaLeader(30_000);
      await kv.destroy().catch(() => undefined);
      await sleep(2_000);
    }
  } finally {
    await nc.close().catch(() => undefined);
    await cluster.stop();
  }
  console.log(`\nR3 KV bucket, its leader SIGKILLed; writes every ${EVERY_MS} ms; load average before ${load0.map((x) => x.toFixed(2)).join(' ')}\n`);
  console.log(
    table(
      ['run', 'killed node led', 'kill → first write, s', 'kill → leader on /jsz, s', 'failed: 503', 'failed: timeout', 'failed: other', 'load (1 min)'],
      rows,
    ),
  );
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

void main().then(
  () => process.exit(0),
  (e: unknown) => {
    console.error(e);
    process.exit(1);
  },
);
