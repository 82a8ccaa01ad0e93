import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createConnection } from 'mysql2/promise';
import { answers, findBinary, INSTALL_COMMAND, startEmbedded } from '../../src/startup/embedded';
import { StartupError } from '../../src/errors';
import { captureLogger, createTestDb, NATS_URL, uniq, type TestDb } from '../helpers/services';
import { startWorker, type Worker } from '../helpers/processes';
import { dropBucket } from '../helpers/pipeline';
import { dropStream, isolatedAdsEnv } from '../helpers/isolation';
import { freePort } from '../helpers/ports';

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('embedded servers for a laptop (real mariadbd and nats-server on private ports)', function () {
  this.timeout(120_000);
  const dirs: string[] = [];
  const workers: Worker[] = [];
  const tmp = (): string => {
    const d = mkdtempSync(join(tmpdir(), 'nc-embedded-'));
    dirs.push(d);
    return d;
  };
  const cleanups: Array<() => Promise<void>> = [];
  after(async () => {
    for (const w of workers) w.kill('SIGKILL');
    await Promise.all(workers.map((w) => w.exited));
    for (const c of cleanups) await c();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  it('DATABASE_URL and NATS_URL unset, nothing on the ports: starts both with data under the data dir, creates shop_notify, stops them on SIGTERM', async () => {
    const [dbPort, natsPort] = [await freePort(), await freePort()];
    const dataDir = tmp();
    // Not the shared 3306/4222: the default ports are moved for the test.
    const w = startWorker({
      EMBEDDED_MARIADB_PORT: String(dbPort),
      EMBEDDED_NATS_PORT: String(natsPort),
      EMBEDDED_DATA_DIR: dataDir,
      ROLE: 'all',
      GATEWAY_PORT: '0',
      INSTANCE_ID: uniq('emb'),
    });
    workers.push(w);
    await w.waitForLine(/"msg":"ready"/, 90_000);
    const started = w.lines
      .filter((l) => l.includes('started embedded'))
      .map((l) => JSON.parse(l) as { server: string; pid: number; port: number; logFile: string });
    assert.deepEqual(
      started.map((s) => [s.server, s.port]),
      [
        ['mariadbd', dbPort],
        ['nats-server', natsPort],
      ],
    );
    assert.ok(started.every((s) => s.logFile.startsWith(dataDir) && alive(s.pid)));
    assert.ok(!w.lines.some((l) => l.includes('cannot reach')), 'no "cannot reach" warning for servers we started ourselves');
    const conn = await createConnection({ host: '127.0.0.1', port: dbPort, user: 'root', database: 'shop_notify' });
    try {
      const [rows] = (await conn.query('SELECT COUNT(*) AS n FROM knex_migrations')) as unknown as [Array<{ n: number }>];
      assert.ok((rows[0]?.n ?? 0) > 0, 'migrated');
    } finally {
      await conn.end();
    }
    w.kill('SIGTERM');
    assert.equal(await w.exited, 0);
    assert.ok(
      started.every((s) => !alive(s.pid)),
      'both servers stopped with us',
    );
    assert.equal(await answers(dbPort), false);
    assert.equal(await answers(natsPort), false);
  });

  it('explicit URLs: never starts anything', async () => {
    let tdb: TestDb | undefined;
    try {
      tdb = await createTestDb('embedded');
      const [dbPort, natsPort] = [await freePort(), await freePort()];
      const bucket = uniq('emb');
      const ads = isolatedAdsEnv();
      cleanups.push(
        () => dropBucket(bucket),
        () => dropStream(ads.VIEWS_STREAM),
      );
      const w = startWorker({
        ...ads,
        DATABASE_URL: tdb.url,
        NATS_URL,
        TELEGRAM_SANDBOX: '1',
        EMBEDDED_MARIADB_PORT: String(dbPort),
        EMBEDDED_NATS_PORT: String(natsPort),
        EMBEDDED_DATA_DIR: tmp(),
        ROLE: 'worker',
        CLUSTER_BUCKET: bucket,
        NATS_SUBJECT_PREFIX: `${bucket}.`,
        INSTANCE_ID: bucket,
      });
      workers.push(w);
      await w.waitForLine(/"msg":"ready"/, 30_000);
      assert.ok(!w.lines.some((l) => l.includes('started embedded')), 'no embedded server');
      assert.equal(await answers(dbPort), false);
      assert.equal(await answers(natsPort), false);
      w.kill('SIGTERM');
      assert.equal(await w.exited, 0);
    } finally {
      await tdb?.drop();
    }
  });

  it('not installed: the error names the variable and the one command that installs them', async () => {
    const { log } = captureLogger();
    const port = await freePort();
    await assert.rejects(
      startEmbedded({ log, mariadb: true, nats: false, mariadbPort: port, natsPort: 1, dataDir: tmp(), env: { PATH: tmp() }, searchDirs: [] }),
      (e: unknown) => {
        assert.ok(e instanceof StartupError);
        assert.equal(e.code, 'DEPENDENCY_MISSING');
        assert.equal(e.variable, 'DATABASE_URL');
        assert.ok(e.message.includes(INSTALL_COMMAND), e.message);
        return true;
      },
    );
    await assert.rejects(
      startEmbedded({ log, mariadb: false, nats: true, mariadbPort: 1, natsPort: port, dataDir: tmp(), env: { PATH: '' }, searchDirs: [] }),
      /NATS_URL: nothing answers .* nats-server is not installed/,
    );
  });

  it('findBinary searches the PATH, then the extra directories, executables only', () => {
    const a = tmp();
    const b = tmp();
    writeFileSync(join(a, 'nats-server'), '#!/bin/sh\n');
    writeFileSync(join(b, 'nats-server'), '#!/bin/sh\n');
    chmodSync(join(b, 'nats-server'), 0o755);
    assert.equal(findBinary(['nats-server'], a, [b]), join(b, 'nats-server'), 'a non-executable file is skipped');
    chmodSync(join(a, 'nats-server'), 0o755);
    assert.equal(findBinary(['nats-server'], a, [b]), join(a, 'nats-server'));
    assert.equal(findBinary(['nope'], a, [b]), undefined);
  });
});
