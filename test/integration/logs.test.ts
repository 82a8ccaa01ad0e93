import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TelegramSandbox } from '../../sandbox/server';
import { createTestDb, uniq, waitFor, type TestDb } from '../helpers/services';
import { startWorker, type Worker } from '../helpers/processes';
import { TEST_TOKEN } from '../helpers/pipeline';
import { freePort } from '../helpers/ports';

/** A private nats-server with JetStream; resolves once it accepts connections. */
async function startNats(port: number, storeDir: string): Promise<ChildProcess> {
  const p = spawn('/usr/sbin/nats-server', ['-a', '127.0.0.1', '-p', String(port), '-js', '-sd', storeDir], { stdio: ['ignore', 'ignore', 'pipe'] });
  let out = '';
  p.stderr.on('data', (b: Buffer) => (out += b.toString()));
  await waitFor(() => /Server is ready/.test(out), 10_000, 20, 'nats-server ready');
  return p;
}

async function stopNats(p: ChildProcess): Promise<void> {
  if (p.exitCode !== null) return;
  const gone = new Promise((r) => p.once('exit', r));
  p.kill('SIGTERM');
  await gone;
}

const BLOCKED = Array.from({ length: 20 }, (_, i) => 6001 + i);
const SLOW = [6101, 6102, 6103];

describe('logs speak when it matters, once (real worker, private nats-server, sandbox over HTTP)', function () {
  this.timeout(120_000);
  let tdb: TestDb;
  let sandbox: TelegramSandbox;
  let nats: ChildProcess | undefined;
  let worker: Worker | undefined;
  const store = mkdtempSync(join(tmpdir(), 'nc-logs-'));
  let natsPort: number;

  before(async () => {
    tdb = await createTestDb('logs');
    sandbox = new TelegramSandbox({ globalRate: 300, chatRate: 1, chats: BLOCKED.map((chatId) => ({ chatId, state: 'blocked' as const })) });
    await sandbox.start();
    natsPort = await freePort();
    nats = await startNats(natsPort, store);
    worker = startWorker({
      DATABASE_URL: tdb.url,
      NATS_URL: `nats://127.0.0.1:${natsPort}`,
      TELEGRAM_BOT_TOKEN: TEST_TOKEN,
      TELEGRAM_API_ROOT: sandbox.apiRoot,
      TELEGRAM_GLOBAL_RATE: '300',
      TELEGRAM_CHAT_RATE: '1',
      ROLE: 'worker',
      OUTBOX_POLL_MS: '200',
      INSTANCE_ID: uniq('logs'),
    });
    await worker.waitForLine(/"msg":"ready"/);
  });
  after(async () => {
    worker?.kill('SIGKILL');
    await worker?.exited;
    if (nats) await stopNats(nats);
    await sandbox?.stop();
    await tdb?.drop();
    rmSync(store, { recursive: true, force: true });
  });

  const parsed = (): Array<Record<string, unknown>> => worker!.lines.map((l) => JSON.parse(l) as Record<string, unknown>);
  /** Rows of the outbox matching a SQL condition. */
  const count = async (where: string): Promise<number> => {
    const [row] = await tdb.db('telegram_notifications').whereRaw(where).count<Array<{ n: number }>>({ n: '*' });
    return row?.n ?? 0;
  };

  it('a NATS outage: one warn line when it starts, one info line when it ends, nothing in between', async () => {
    const before = worker!.lines.length;
    await stopNats(nats!);
    await worker!.waitForLine(/NATS connection lost/, 10_000);
    // Keep the server down long enough for ~10 reconnect attempts (250 ms apart).
    const downAt = Date.now();
    await waitFor(() => Date.now() - downAt >= 3_000, 5_000, 100, 'an outage of 3 s');
    nats = await startNats(natsPort, store);
    await worker!.waitForLine(/NATS connection restored/, 20_000);
    const natsLines = parsed()
      .slice(before)
      .filter((l) => l.nats !== undefined && Number(l.level) >= 30);
    assert.deepEqual(
      natsLines.map((l) => l.nats),
      ['disconnect', 'reconnect'],
      JSON.stringify(natsLines),
    );
    assert.ok(Number(natsLines[1]!.outageMs) >= 3_000);
  });

  it('failures, unreachable recipients and plain-text fallbacks: at most one line per kind per 10 s, counts add up; the shutdown line counts the rows it gave back', async () => {
    await tdb
      .db('telegram_notifications')
      .insert([
        ...BLOCKED.map((c) => ({ telegram_id: c, message_text: `to blocked ${c}` })),
        ...[1, 2, 3].map((i) => ({ telegram_id: 6200 + i, message_text: `bad <b>html ${i}`, parse_mode: 'HTML' })),
        ...SLOW.flatMap((c) => Array.from({ length: 20 }, (_, i) => ({ telegram_id: c, message_text: `slow ${c} ${i}` }))),
      ]);
    await waitFor(async () => (await count("status = 'failed'")) === 20, 30_000, 100, '20 failed');
    await waitFor(async () => (await count("telegram_id IN (6201, 6202, 6203) AND status = 'sent'")) === 3, 30_000, 100, 'fallbacks sent');
    await waitFor(async () => (await count(`telegram_id IN (${SLOW.join(',')}) AND status = 'pending'`)) === 0, 30_000, 100, 'slow rows all claimed');

    worker!.kill('SIGTERM');
    assert.equal(await worker!.exited, 0);
    const lines = parsed();
    const byKind = (kind: string): Array<Record<string, unknown>> => lines.filter((l) => l.kind === kind);
    const sum = (ls: Array<Record<string, unknown>>): number => ls.reduce((n, l) => n + Number(l.count), 0);
    for (const kind of ['notification failed', 'recipient unreachable', 'plain-text fallback']) {
      const ls = byKind(kind);
      // The first at once, the rest at the end of its 10 s window or at shutdown: this test runs < 20 s.
      assert.ok(ls.length >= 1 && ls.length <= 3, `${kind}: ${ls.length} lines`);
      for (let i = 1; i < ls.length; i++) {
        const gap = Date.parse(String(ls[i]!.time)) - Date.parse(String(ls[i - 1]!.time));
        const atShutdown = i === ls.length - 1;
        assert.ok(gap >= 9_900 || atShutdown, `${kind}: lines ${gap} ms apart`);
      }
    }
    assert.equal(sum(byKind('notification failed')), 20);
    assert.equal(sum(byKind('recipient unreachable')), 20);
    assert.equal(sum(byKind('plain-text fallback')), 3);
    const failed = byKind('notification failed')[0]!;
    assert.equal(failed.level, 40);
    assert.ok(BLOCKED.includes((failed.examples as Array<{ chatId: number }>)[0]?.chatId ?? 0), 'examples name the chat');
    assert.match(String(failed.msg), /bot was blocked by the user/);

    const stopped = lines.find((l) => String(l.msg).startsWith('stopped'));
    assert.ok(stopped, 'a stopped line');
    const pendingAfter = await count("status = 'pending'");
    assert.ok(pendingAfter > 0, 'rows were still claimed at shutdown');
    assert.equal(stopped.releasedRows, pendingAfter, 'the shutdown line counts exactly the rows it gave back');
    assert.equal(await count("status = 'claimed'"), 0);
  });
});
