import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { resolve } from 'node:path';
import { promisify } from 'node:util';
import { TelegramSandbox } from '../../sandbox/server';
import { createTestDb, waitFor, uniq, NATS_URL, type TestDb } from '../helpers/services';
import { startWorker, type Worker } from '../helpers/processes';
import { dropBucket, TEST_TOKEN } from '../helpers/pipeline';

const run = promisify(execFile);

describe('operator CLI (npm run cli) against a running worker', function () {
  this.timeout(60_000);
  let tdb: TestDb;
  let sandbox: TelegramSandbox;
  let worker: Worker;
  let env: Record<string, string>;

  before(async () => {
    tdb = await createTestDb('cli');
    sandbox = new TelegramSandbox({ globalRate: 300, chatRate: 10 });
    await sandbox.start();
    const bucket = uniq('cli');
    env = {
      DATABASE_URL: tdb.url,
      NATS_URL,
      NATS_SUBJECT_PREFIX: `${bucket}.`,
      CLUSTER_BUCKET: bucket,
      SHARD_LEASE_TTL_MS: '3000',
      INSTANCE_ID_FOR_TEST: `cli-${bucket}`,
    };
    worker = startWorker({
      ...env,
      TELEGRAM_BOT_TOKEN: TEST_TOKEN,
      TELEGRAM_API_ROOT: sandbox.apiRoot,
      INSTANCE_ID: `cli-${bucket}`,
      ROLE: 'worker',
      TELEGRAM_GLOBAL_RATE: '300',
      TELEGRAM_CHAT_RATE: '10',
    });
    await worker.waitForLine(/shards acquired/);
  });
  after(async () => {
    worker?.kill('SIGKILL');
    await worker?.exited;
    await dropBucket(env.CLUSTER_BUCKET!);
    await sandbox?.stop();
    await tdb?.drop();
  });

  const cli = async (...args: string[]): Promise<{ stdout: string; code: number }> => {
    try {
      const r = await run(process.execPath, ['--import', 'tsx', resolve(__dirname, '../../src/cli.ts'), ...args], {
        env: { PATH: process.env.PATH ?? '', ...env },
      });
      return { stdout: r.stdout, code: 0 };
    } catch (e) {
      const err = e as { stdout: string; stderr: string; code: number };
      return { stdout: err.stdout + err.stderr, code: err.code };
    }
  };

  it('status shows the member, its 64 shards and the budget', async () => {
    const { stdout, code } = await cli('status');
    assert.equal(code, 0, stdout);
    assert.match(stdout, /1 member\(s\), 64 shards/);
    assert.match(stdout, /cli-.*\s64\s+0-63/);
    assert.match(stdout, /\(as cli-\S+ sees it\)/, 'says which process answered');
    assert.match(stdout, /^bot rate: [\d.]+\/s of [\d.]+\/s configured/m, 'the budget');
  });

  it('a peer on the bus answering the status round with nonsense is left out: the status still shows the worker and the budget', async () => {
    const { connect } = await import('nats');
    const nc = await connect({ servers: NATS_URL });
    const liar = `liar-${env.CLUSTER_BUCKET}`;
    const answers = [
      'not json',
      JSON.stringify({ instance: liar, takeovers: [] }),
      JSON.stringify({ instance: liar, holder: liar, owned: 'all', takeovers: [] }),
      // Well formed but for the relayed split, which the CLI would print (rate.toFixed of a string threw).
      JSON.stringify({
        instance: liar,
        holder: liar,
        owned: [],
        budget: { share: 1, mode: 'granted', demand: 0 },
        queued: 0,
        inFlight: 0,
        sent: 0,
        failed: 0,
        throttled: 0,
        takeovers: [],
        coordinating: { leader: true, rate: 'fast' },
      }),
    ];
    const sub = nc.subscribe(`${env.NATS_SUBJECT_PREFIX}notify.status.all`, {
      callback: (_e, m) => {
        for (const a of answers) nc.publish(m.reply!, new TextEncoder().encode(a));
      },
    });
    try {
      const { stdout, code } = await cli('status');
      assert.equal(code, 0, stdout);
      assert.match(stdout, /cli-.*\s64\s+0-63/, 'the real worker is listed');
      assert.doesNotMatch(stdout, /liar-/, 'the nonsense answers are not');
      assert.match(stdout, /^bot rate: [\d.]+\/s/m);
      assert.ok(
        worker.lines.some((l) => l.includes('a notify.status.all answer that is not a process status')),
        'the worker says it left answers out',
      );
    } finally {
      sub.unsubscribe();
      await nc.close();
    }
  });

  it('the worker is a NATS service: $SRV.INFO lists it with its shards (what `nats micro info` shows)', async () => {
    const { connect } = await import('nats');
    const nc = await connect({ servers: NATS_URL });
    try {
      const infos = [];
      for await (const i of await nc.services.client().info('notify-worker')) infos.push(i);
      const mine = infos.find((i) => i.metadata?.instance === env.INSTANCE_ID_FOR_TEST);
      assert.ok(mine, 'our worker answered $SRV.INFO');
      assert.equal(mine.metadata?.shards, '0-63');
      assert.deepEqual(mine.endpoints.map((e) => e.name).sort(), ['cluster', 'enqueue', 'status']);
    } finally {
      await nc.close();
    }
  });

  it('enqueue delivers; recipient shows and clears an unreachable chat; retry-failed re-sends', async () => {
    const ok = await cli('enqueue', '4242', 'hello', 'from', 'the', 'cli');
    assert.equal(ok.code, 0, ok.stdout);
    assert.match(ok.stdout, /enqueued: id \d+, shard \d+/);
    await sandbox.waitForDelivered(1, 10_000);
    assert.equal(sandbox.delivered(4242)[0]!.text, 'hello from the cli');

    const bad = await cli('enqueue', '4242', 'x', '--parse-mode', 'LaTeX');
    assert.equal(bad.code, 1);
    assert.match(bad.stdout, /rejected: BAD_PAYLOAD/);

    sandbox.setChat({ chatId: 4343, state: 'blocked' });
    await cli('enqueue', '4343', 'are you there');
    await waitFor(
      async () => (await tdb.db('telegram_notifications').where({ telegram_id: 4343, status: 'failed' }).first()) !== undefined,
      10_000,
      100,
      'failed',
    );
    await waitFor(async () => (await tdb.db('telegram_recipients').where({ chat_id: 4343 }).first())?.status === 'blocked', 5_000, 100, 'marked');
    const shown = await cli('recipient', '4343');
    assert.match(shown.stdout, /recipient: blocked since .*bot was blocked by the user/);
    assert.match(shown.stdout, /failed 1/);

    sandbox.setChat({ chatId: 4343, state: 'ok' });
    const cleared = await cli('recipient', '4343', '--clear');
    assert.match(cleared.stdout, /cleared/);
    const retried = await cli('retry-failed', '--chat', '4343');
    assert.match(retried.stdout, /1 failed notification\(s\) back to pending/);
    await waitFor(() => sandbox.delivered(4343).length === 1, 10_000, 100, 'delivered after clear + retry');
  });
});
