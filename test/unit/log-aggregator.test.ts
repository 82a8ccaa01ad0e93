import assert from 'node:assert/strict';
import { LogAggregator } from '../../src/log-aggregator';
import { natsStatusLog } from '../../src/nats/connection';
import { outcomeLog } from '../../src/outbox/outcome-log';
import { captureLogger, waitFor } from '../helpers/services';

describe('LogAggregator: one line per kind per window, with counts', () => {
  it('logs the first at once, counts the rest into one line at the end of the window', async () => {
    const { log, lines } = captureLogger('info');
    const agg = new LogAggregator(log, { windowMs: 200 }).define('failed', 'warn', (n) => `${n} failed`);
    for (let i = 0; i < 5; i++) agg.note('failed', { reason: i < 4 ? 'blocked' : 'chat not found', example: { chatId: i } });
    assert.equal(lines().length, 1, 'only the first, at once');
    assert.equal(lines()[0]!.count, 1);
    await waitFor(() => lines().length === 2, 2_000);
    const second = lines()[1]!;
    assert.equal(second.level, 40);
    assert.equal(second.count, 4);
    assert.deepEqual(second.byReason, { blocked: 3, 'chat not found': 1 });
    assert.equal(second.msg, '4 failed (mostly blocked)');
    assert.deepEqual((second.examples as unknown[]).length, 3);
    const gap = Date.parse(String(second.time)) - Date.parse(String(lines()[0]!.time));
    assert.ok(gap >= 190, `window respected (${gap} ms)`);
    agg.stop();
    assert.equal(lines().length, 2, 'nothing left to write');
  });

  it('stop() writes what is still counted', () => {
    const { log, lines } = captureLogger('info');
    const agg = new LogAggregator(log, { windowMs: 60_000 }).define('split', 'info', (n) => `${n} split`);
    agg.note('split', { reason: '2 parts' });
    agg.note('split', { reason: '3 parts' });
    agg.note('split', { reason: '3 parts' });
    agg.stop();
    assert.deepEqual(
      lines().map((l) => [l.count, l.msg]),
      [
        [1, '1 split (2 parts)'],
        [2, '2 split (3 parts)'],
      ],
    );
  });

  it('outcomeLog sorts outcomes into failed / unreachable / fallback / several messages, with chat ids', () => {
    const { log, lines } = captureLogger('info');
    const o = outcomeLog(log, { windowMs: 60_000 });
    o.outcome({ id: 1, kind: 'failed', at: 0, attempts: 1, retryCount: 0, code: 'TG_PERMANENT', reason: 'Forbidden: bot was blocked by the user' }, 77);
    o.recipient(77, 'blocked', null);
    o.outcome({ id: 2, kind: 'sent', at: 0, attempts: 2, retryCount: 0, progress: { done: 1, total: 1, plain: true } }, 78);
    o.outcome({ id: 3, kind: 'sent', at: 0, attempts: 1, retryCount: 0, progress: { done: 3, total: 3 } }, 79);
    o.outcome({ id: 4, kind: 'sent', at: 0, attempts: 1, retryCount: 0 }, 80);
    o.outcome({ id: 5, kind: 'release' }, undefined);
    const got = lines().map((l) => [l.level, l.kind, (l.examples as Array<{ chatId?: number }>)[0]!.chatId]);
    assert.deepEqual(got, [
      [40, 'notification failed', 77],
      [40, 'recipient unreachable', 77],
      [30, 'plain-text fallback', 78],
      [30, 'split', 79],
    ]);
    assert.match(String(lines()[0]!.msg), /1 notification failed \(TG_PERMANENT: Forbidden: bot was blocked by the user\)/);
  });
});

describe('natsStatusLog: an outage is one line when it starts and one when it ends', () => {
  it('disconnect, 40 reconnect attempts with errors, reconnect → two lines at info or above', () => {
    const { log, lines } = captureLogger('info');
    let t = 1_000;
    const on = natsStatusLog(log, () => t);
    on('pingTimer', undefined);
    on('disconnect', '127.0.0.1:4222');
    for (let i = 0; i < 40; i++) {
      t += 300;
      on('reconnecting', undefined);
      on('error', 'connection refused');
      on('disconnect', '127.0.0.1:4222');
    }
    on('reconnect', '127.0.0.1:4222');
    on('error', 'permissions violation');
    assert.deepEqual(
      lines().map((l) => [l.level, l.msg]),
      [
        [40, 'NATS connection lost; reconnecting (one line again when it is back)'],
        [30, 'NATS connection restored after 12.0 s'],
        [40, 'nats connection error'],
      ],
    );
  });
});
