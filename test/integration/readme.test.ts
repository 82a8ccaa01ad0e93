import assert from 'node:assert/strict';
import { exec } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { promisify } from 'node:util';
import { connect } from 'nats';
import { createTestDb, NATS_URL, uniq, waitFor, type TestDb } from '../helpers/services';
import { startWorker, type Worker } from '../helpers/processes';
import { dropBucket } from '../helpers/pipeline';
import { freePort } from '../helpers/ports';

const run = promisify(exec);
const ROOT = resolve(__dirname, '../..');

/** The README's "Try it" block: each command with the `# → …` text its output must contain. */
export function tryItExamples(readme: string): Array<{ command: string; expect: string }> {
  const section = readme.split(/^## Try it$/m)[1]?.split(/^## /m)[0];
  assert.ok(section, 'README has a "## Try it" section');
  const block = /```sh\n([\s\S]*?)```/.exec(section)?.[1];
  assert.ok(block, '"Try it" has a sh block');
  const out: Array<{ command: string; expect: string }> = [];
  const lines = block.split('\n').filter((l) => l.trim());
  for (let i = 0; i < lines.length; i++) {
    const l = lines[i]!;
    if (l.startsWith('#')) continue;
    const next = lines[i + 1] ?? '';
    assert.match(next, /^# → /, `"${l}" is followed by its expected output`);
    out.push({ command: l, expect: next.slice('# → '.length) });
  }
  return out;
}

describe("README: every 'Try it' example works on a fresh setup (real system, real CLI, curl)", function () {
  this.timeout(180_000);
  let tdb: TestDb;
  let worker: Worker;
  let env: Record<string, string>;
  let ports: { gateway: number; sandbox: number };
  const examples = tryItExamples(readFileSync(resolve(ROOT, 'README.md'), 'utf8'));

  before(async () => {
    tdb = await createTestDb('readme');
    ports = { gateway: await freePort(), sandbox: await freePort() };
    const p = uniq('rd');
    env = {
      DATABASE_URL: tdb.url,
      NATS_URL,
      TELEGRAM_SANDBOX: '1',
      NATS_SUBJECT_PREFIX: `${p}.`,
      CLUSTER_BUCKET: p,
      VIEWS_STREAM: `V${p}`,
    };
    worker = startWorker({
      ...env,
      ROLE: 'all',
      INSTANCE_ID: p,
      GATEWAY_HOST: '127.0.0.1',
      GATEWAY_PORT: String(ports.gateway),
      TELEGRAM_SANDBOX_PORT: String(ports.sandbox),
    });
    await worker.waitForLine(/"msg":"ready"/, 60_000);
  });
  after(async () => {
    worker?.kill('SIGTERM');
    await worker?.exited;
    await dropBucket(env.CLUSTER_BUCKET!);
    const nc = await connect({ servers: NATS_URL });
    await (await nc.jetstreamManager()).streams.delete(env.VIEWS_STREAM!).catch(() => undefined);
    await nc.close();
    await tdb?.drop();
  });

  it('parses the examples (commands and their expected output)', () => {
    assert.ok(examples.length >= 8, `${examples.length} examples`);
    assert.match(examples[0]!.command, /^npm run cli -- demo$/, 'the demo comes first: it makes the rest work');
  });

  for (const [i, ex] of examples.entries()) {
    it(`${i + 1}. ${ex.command}`, async () => {
      // The README's ports are the defaults; this system runs on free ones.
      const command = ex.command.replace(/localhost:8080/g, `localhost:${ports.gateway}`).replace(/localhost:8081/g, `localhost:${ports.sandbox}`);
      // A read may run before the delivery it shows has happened: reads are retried for a few seconds.
      const retryable = /^curl -s '?localhost/.test(ex.command) || /-- (status|top|recipient)/.test(ex.command);
      let last = '';
      await waitFor(
        async () => {
          const r = await run(command, { cwd: ROOT, env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', ...env }, timeout: 60_000 }).catch(
            (e: unknown) => {
              const err = e as { stdout?: string; stderr?: string; code?: number };
              throw new Error(`exit ${String(err.code)}: ${err.stdout ?? ''}${err.stderr ?? ''}`);
            },
          );
          last = r.stdout;
          return r.stdout.includes(ex.expect);
        },
        retryable ? 8_000 : 0,
        300,
        `output containing ${JSON.stringify(ex.expect)}`,
      ).catch((e: unknown) => {
        throw new Error(`${(e as Error).message}\n--- output ---\n${last}`);
      });
    });
  }
});
