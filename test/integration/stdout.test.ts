import assert from 'node:assert/strict';
import { TelegramSandbox } from '../../sandbox/server';
import { createTestDb, NATS_URL, uniq, waitFor, type TestDb } from '../helpers/services';
import { startWorker, type Worker } from '../helpers/processes';
import { dropBucket, TEST_TOKEN } from '../helpers/pipeline';
import { dropStream, isolatedAdsEnv } from '../helpers/isolation';

describe('stdout: JSON lines only, and a closed stdout is a graceful shutdown (real process)', function () {
  this.timeout(90_000);
  let tdb: TestDb;
  let sandbox: TelegramSandbox;
  let worker: Worker | undefined;
  const bucket = uniq('out');
  const ads = isolatedAdsEnv();

  before(async () => {
    tdb = await createTestDb('stdout');
    sandbox = new TelegramSandbox({ globalRate: 300, chatRate: 1 });
    await sandbox.start();
  });
  after(async () => {
    worker?.kill('SIGKILL');
    await worker?.exited;
    await dropBucket(bucket);
    await dropStream(ads.VIEWS_STREAM);
    await sandbox?.stop();
    await tdb?.drop();
  });

  /** Rows of the outbox matching a SQL condition. */
  const count = async (where: string): Promise<number> => {
    const [row] = await tdb.db('telegram_notifications').whereRaw(where).count<Array<{ n: number }>>({ n: '*' });
    return row?.n ?? 0;
  };

  it('the reader of stdout exits under load: rows are released, the process exits 0, nothing crashes', async () => {
    const rows = Array.from({ length: 2000 }, (_, i) => ({ telegram_id: 5000 + (i % 100), message_text: `load-${i}` }));
    for (let i = 0; i < rows.length; i += 500) await tdb.db('telegram_notifications').insert(rows.slice(i, i + 500));
    worker = startWorker({
      DATABASE_URL: tdb.url,
      NATS_URL,
      TELEGRAM_BOT_TOKEN: TEST_TOKEN,
      TELEGRAM_API_ROOT: sandbox.apiRoot,
      TELEGRAM_GLOBAL_RATE: '300',
      TELEGRAM_CHAT_RATE: '1',
      ROLE: 'worker',
      LOG_LEVEL: 'debug',
      CLAIM_LEASE_MS: '120000',
      CLUSTER_BUCKET: bucket,
      NATS_SUBJECT_PREFIX: `${bucket}.`,
      INSTANCE_ID: uniq('out'),
      ...ads,
    });
    await worker.waitForLine(/delivery pipeline running/);
    await sandbox.waitForDelivered(100, 30_000);
    for (const l of worker.lines) assert.doesNotThrow(() => JSON.parse(l), `not a JSON line: ${l}`);
    const claimed = await count("status = 'claimed'");
    assert.ok(claimed > 0, 'rows are claimed and waiting while stdout closes');

    // The reader goes away (what `npm start | head` does): the next write gets EPIPE.
    worker.proc.stdout!.destroy();
    const code = await worker.exited;
    assert.equal(code, 0, `exit code; stderr/stdout seen:\n${worker.lines.slice(-5).join('\n')}`);
    assert.ok(!worker.lines.some((l) => /EPIPE|Uncaught|at .*\(.*\.ts:\d+/.test(l) && !l.startsWith('{')), 'no crash printed on stderr');

    const sent = await count("status = 'sent'");
    const pendingFree = await count("status = 'pending' AND claimed_by IS NULL");
    const stillClaimed = await count("status = 'claimed'");
    assert.equal(stillClaimed, 0, 'every claim was released at shutdown (not left to the 120 s lease)');
    assert.equal(sent + pendingFree, 2000);
    await waitFor(() => sandbox.stats().hanging === 0, 5_000);
    assert.equal(sandbox.stats().accepted.messages, sent, 'every accepted send was recorded as sent');
  });
});
