import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { createTestDb, NATS_URL, uniq, waitFor, type TestDb } from '../helpers/services';
import { dropBucket } from '../helpers/pipeline';
import { dropStream, isolatedAdsEnv } from '../helpers/isolation';

const ROOT = resolve(__dirname, '../..');

/** Every live descendant of `pid` (from /proc), depth first. */
function descendants(pid: number): number[] {
  const parent = new Map<number, number>();
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      // "pid (comm) state ppid …": comm may hold spaces, so read after the last ')'.
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      parent.set(Number(d), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]));
    } catch {
      // gone meanwhile
    }
  }
  const out: number[] = [];
  const walk = (p: number): void => {
    for (const [child, pp] of parent) {
      if (pp !== p) continue;
      out.push(child);
      walk(child);
    }
  };
  walk(pid);
  return out;
}

function alive(pid: number): boolean {
  try {
    const state = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return state.slice(state.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

describe('npm start: a signal to the npm process reaches the worker (real processes)', function () {
  this.timeout(60_000);
  let tdb: TestDb;
  const bucket = uniq('npm');
  const ads = isolatedAdsEnv();
  before(async () => {
    tdb = await createTestDb('npmstart');
  });
  after(async () => {
    await dropBucket(bucket);
    await dropStream(ads.VIEWS_STREAM);
    await tdb?.drop();
  });

  const cases = [
    { signal: 'SIGTERM', group: false, what: 'SIGTERM to npm (what a supervisor sends)' },
    { signal: 'SIGINT', group: false, what: 'SIGINT to npm' },
    { signal: 'SIGINT', group: true, what: 'Ctrl-C (SIGINT to the whole process group: npm relays it, the worker gets it twice)' },
  ] as const;
  for (const { signal, group, what } of cases) {
    it(`${what} stops the whole system gracefully; no process of the project is left`, async () => {
      const npm = spawn('npm', ['start', '--silent'], {
        detached: group,
        cwd: ROOT,
        env: {
          PATH: process.env.PATH ?? '',
          HOME: process.env.HOME ?? '/tmp',
          DATABASE_URL: tdb.url,
          NATS_URL,
          TELEGRAM_SANDBOX: '1',
          TELEGRAM_SANDBOX_PORT: '0',
          METRICS_PORT: '0',
          GATEWAY_PORT: '0',
          ROLE: 'all',
          CLUSTER_BUCKET: bucket,
          NATS_SUBJECT_PREFIX: `${bucket}.`,
          INSTANCE_ID: uniq('npm'),
          ...ads,
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      const lines: string[] = [];
      const onData = (b: Buffer): void => void lines.push(...b.toString('utf8').split('\n').filter(Boolean));
      npm.stdout.on('data', onData);
      npm.stderr.on('data', onData);
      const exited = new Promise<number | null>((r) =>
        npm.once('exit', (code) => {
          r(code);
        }),
      );
      await waitFor(() => lines.some((l) => l.includes('delivery pipeline running')), 30_000, 50, 'the system to start');
      const tree = descendants(npm.pid!);
      assert.ok(tree.length >= 1, 'npm started the worker');
      assert.ok(tree.every(alive));

      if (group) process.kill(-npm.pid!, signal);
      else npm.kill(signal);
      const code = await exited;
      await waitFor(() => tree.every((p) => !alive(p)), 10_000, 50, 'every descendant to exit');
      assert.equal(code, 0, lines.slice(-5).join('\n'));
      assert.ok(
        lines.some((l) => /"msg":"shutting down/.test(l) && l.includes(signal)),
        'the worker itself saw the signal',
      );
      assert.ok(
        lines.some((l) => /"msg":"stopped/.test(l)),
        'and finished its shutdown',
      );
    });
  }
});
