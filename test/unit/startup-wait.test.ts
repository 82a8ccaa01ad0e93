import assert from 'node:assert/strict';
import { waitUntilReachable } from '../../src/startup/wait';
import { StartupError } from '../../src/errors';
import { captureLogger } from '../helpers/services';

const dep = { variable: 'NATS_URL', address: 'nats://127.0.0.1:1' };

describe('startup: waitUntilReachable', () => {
  it('retries until the attempt succeeds; the first failure is reported at once, recovery once', async () => {
    const { log, lines } = captureLogger('info');
    let n = 0;
    const r = await waitUntilReachable(
      dep,
      () => (++n < 4 ? Promise.reject(Object.assign(new Error('CONNECTION_REFUSED'), { code: 'CONNECTION_REFUSED' })) : Promise.resolve('up')),
      { log, deadline: Date.now() + 5_000, retryEveryMs: 10, reportEveryMs: 60_000 },
    );
    assert.equal(r, 'up');
    assert.equal(n, 4);
    assert.deepEqual(
      lines().map((l) => [l.level, l.variable, l.msg]),
      [
        [40, 'NATS_URL', 'NATS_URL: cannot reach nats://127.0.0.1:1 (CONNECTION_REFUSED); retrying, giving up in 5 s (STARTUP_TIMEOUT_MS)'],
        [30, 'NATS_URL', 'NATS_URL: nats://127.0.0.1:1 reachable'],
      ],
    );
  });

  it('an attempt that hangs counts as failed after attemptTimeoutMs; what it yields later goes to discardLate', async () => {
    const { log } = captureLogger('info');
    const late: unknown[] = [];
    let n = 0;
    const r = await waitUntilReachable(
      dep,
      () =>
        ++n === 1
          ? new Promise((res) =>
              setTimeout(() => {
                res('late connection');
              }, 100),
            )
          : Promise.resolve('second'),
      {
        log,
        deadline: Date.now() + 5_000,
        attemptTimeoutMs: 30,
        retryEveryMs: 10,
        discardLate: (x) => late.push(x),
      },
    );
    assert.equal(r, 'second');
    await new Promise((res) => setTimeout(res, 150));
    assert.deepEqual(late, ['late connection']);
  });

  it('past the deadline: STARTUP_TIMEOUT naming the variable, with the last real error', async () => {
    const { log } = captureLogger('info');
    await assert.rejects(
      waitUntilReachable(dep, () => Promise.reject(new Error('Access denied for user')), { log, deadline: Date.now() + 200, retryEveryMs: 20 }),
      (e: unknown) => e instanceof StartupError && e.code === 'STARTUP_TIMEOUT' && e.variable === 'NATS_URL' && /Access denied for user/.test(e.message),
    );
  });

  it('quietForMs holds the first report back (a server we just started); an abort stops the wait at once', async () => {
    const { log, lines } = captureLogger('info');
    const ac = new AbortController();
    const t0 = Date.now();
    setTimeout(() => {
      ac.abort();
    }, 100);
    await assert.rejects(
      waitUntilReachable(dep, () => Promise.reject(new Error('refused')), {
        log,
        deadline: Date.now() + 60_000,
        retryEveryMs: 1_000,
        quietForMs: 4_000,
        signal: ac.signal,
      }),
      /start-up aborted while waiting for NATS_URL/,
    );
    assert.ok(Date.now() - t0 < 1_000, 'the abort ended the pause between attempts');
    assert.deepEqual(lines(), [], 'nothing reported within quietForMs');
  });
});
