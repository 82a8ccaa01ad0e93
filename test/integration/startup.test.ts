import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:net';
import { createTestDb, NATS_URL, ROOT_DATABASE_URL, uniq, type TestDb } from '../helpers/services';
import { startWorker, type Worker } from '../helpers/processes';
import { isolatedAdsEnv } from '../helpers/isolation';
import { freePort } from '../helpers/ports';

async function occupiedPort(): Promise<{ port: number; server: Server }> {
  const server = createServer();
  await new Promise<void>((r) =>
    server.listen(0, '0.0.0.0', () => {
      r();
    }),
  );
  return { port: (server.address() as { port: number }).port, server };
}

/** The JSON lines of a worker (stdout and stderr), parsed; a line that is not JSON fails the test. */
function jsonLines(w: Worker): Array<Record<string, unknown>> {
  return w.lines.map((l) => {
    try {
      return JSON.parse(l) as Record<string, unknown>;
    } catch {
      throw new Error(`not a JSON line: ${l}`);
    }
  });
}

/** The start-up failure line (level 60); stdout and stderr may arrive in either order. */
function fatalLine(w: Worker): Record<string, unknown> {
  const fatal = jsonLines(w).find((l) => l.level === 60);
  assert.ok(fatal, `a fatal line; got:\n${w.lines.join('\n')}`);
  return fatal;
}

describe('start-up: never hangs in silence, never starts half-way (real processes)', function () {
  this.timeout(60_000);
  let tdb: TestDb;
  const workers: Worker[] = [];
  const start = (env: Record<string, string>): Worker => {
    // None of these gets as far as the ads role; isolated anyway, so a regression cannot touch shared streams.
    const w = startWorker({ ROLE: 'worker', NATS_SUBJECT_PREFIX: `${uniq('st')}.`, CLUSTER_BUCKET: uniq('st'), ...isolatedAdsEnv(), ...env });
    workers.push(w);
    return w;
  };

  before(async () => {
    tdb = await createTestDb('startup');
  });
  after(async () => {
    for (const w of workers) w.kill('SIGKILL');
    await Promise.all(workers.map((w) => w.exited));
    await tdb?.drop();
  });

  it('NATS on a closed port: a line naming NATS_URL and the address within 5 s, repeated every 5 s, then exit 1 after STARTUP_TIMEOUT_MS', async () => {
    const port = await freePort();
    const t0 = Date.now();
    const w = start({ DATABASE_URL: tdb.url, NATS_URL: `nats://127.0.0.1:${port}`, TELEGRAM_SANDBOX: '1', STARTUP_TIMEOUT_MS: '7000' });
    const first = await w.waitForLine(/cannot reach/, 5_000);
    assert.ok(Date.now() - t0 < 5_000 + 1_000, 'reported within 5 s (plus process start)');
    assert.match(first, /"variable":"NATS_URL"/);
    assert.ok(first.includes(`nats://127.0.0.1:${port}`), first);
    const code = await w.exited;
    const elapsed = Date.now() - t0;
    assert.equal(code, 1);
    assert.ok(elapsed >= 7_000 && elapsed < 15_000, `exited after ${elapsed} ms`);
    const lines = jsonLines(w);
    const reports = lines.filter((l) => l.level === 40 && l.variable === 'NATS_URL' && /cannot reach/.test(String(l.msg)));
    assert.equal(reports.length, 2, 'once at the first failure, once 5 s later (7 s budget)');
    const gap = Date.parse(String(reports[1]!.time)) - Date.parse(String(reports[0]!.time));
    assert.ok(gap >= 4_900 && gap < 6_000, `repeated after ${gap} ms`);
    const fatal = fatalLine(w);
    assert.equal(fatal.code, 'STARTUP_TIMEOUT');
    assert.equal(fatal.variable, 'NATS_URL');
  });

  it('SIGTERM while waiting for NATS stops at once (exit 130), not after STARTUP_TIMEOUT_MS', async () => {
    const port = await freePort();
    const w = start({ DATABASE_URL: tdb.url, NATS_URL: `nats://127.0.0.1:${port}`, TELEGRAM_SANDBOX: '1', STARTUP_TIMEOUT_MS: '60000' });
    await w.waitForLine(/cannot reach/, 5_000);
    const t0 = Date.now();
    w.kill('SIGTERM');
    assert.equal(await w.exited, 130);
    assert.ok(Date.now() - t0 < 3_000, `stopped after ${Date.now() - t0} ms`);
  });

  it('wrong database password: a line naming DATABASE_URL with the password masked, then exit 1', async () => {
    const url = ROOT_DATABASE_URL.replace('//root@', '//root:Wr0ngSecretPw@').replace(/\/[^/]*$/, `/${tdb.name}`);
    const t0 = Date.now();
    const w = start({ DATABASE_URL: url, NATS_URL, TELEGRAM_SANDBOX: '1', STARTUP_TIMEOUT_MS: '2000' });
    const first = await w.waitForLine(/"variable":"DATABASE_URL"/, 5_000);
    assert.ok(Date.now() - t0 < 6_000);
    assert.match(first, /Access denied/);
    assert.ok(first.includes(`root:***@127.0.0.1:3306/${tdb.name}`), first);
    assert.equal(await w.exited, 1);
    assert.ok(!w.lines.some((l) => l.includes('Wr0ngSecretPw')), 'the password appears nowhere');
    const fatal = fatalLine(w);
    assert.equal(fatal.code, 'STARTUP_TIMEOUT');
    assert.equal(fatal.variable, 'DATABASE_URL');
  });

  for (const variable of ['GATEWAY_PORT', 'METRICS_PORT'] as const) {
    it(`${variable} in use: exit 1 naming ${variable}, before any migration runs`, async () => {
      const fresh = await createTestDb('startup_port', { migrate: false });
      const { port, server } = await occupiedPort();
      try {
        const w = start({
          ROLE: 'all',
          DATABASE_URL: fresh.url,
          NATS_URL,
          TELEGRAM_SANDBOX: '1',
          GATEWAY_PORT: '0',
          METRICS_HOST: '0.0.0.0',
          [variable]: String(port),
        });
        assert.equal(await w.exited, 1);
        const fatal = fatalLine(w);
        assert.equal(fatal.code, 'PORT_IN_USE');
        assert.equal(fatal.variable, variable);
        assert.match(String(fatal.msg), new RegExp(`${variable}: port 0\\.0\\.0\\.0:${port} is already in use`));
        const [tables] = (await fresh.db.raw('SHOW TABLES')) as [unknown[]];
        assert.deepEqual(tables, [], 'no migration ran');
      } finally {
        server.close();
        await fresh.drop();
      }
    });
  }

  it('no TELEGRAM_BOT_TOKEN with an explicit DATABASE_URL: refuses (exit 2) naming both variables; a pending row stays untouched', async () => {
    const [id] = await tdb.db('telegram_notifications').insert({ telegram_id: 4242, message_text: 'must not go to a sandbox' });
    const before = (await tdb.db('telegram_notifications').where({ id }).first()) as Record<string, unknown>;
    const w = start({ DATABASE_URL: tdb.url, NATS_URL });
    assert.equal(await w.exited, 2);
    const fatal = fatalLine(w);
    assert.equal(fatal.code, 'CONFIG_INVALID');
    assert.match(String(fatal.msg), /TELEGRAM_BOT_TOKEN/);
    assert.match(String(fatal.msg), /DATABASE_URL/);
    assert.match(String(fatal.msg), /TELEGRAM_SANDBOX=1/);
    const after = (await tdb.db('telegram_notifications').where({ id }).first()) as Record<string, unknown>;
    assert.deepEqual(after, before);
    assert.equal(after.status, 'pending');
  });
});
