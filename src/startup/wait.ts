import type { Logger } from '../log';
import { StartupError, describeError } from '../errors';

/** Something start-up needs from outside, named as the operator configures it. */
export interface Dependency {
  /** The environment variable to look at, e.g. DATABASE_URL. */
  variable: string;
  /** Where we try to connect, secrets masked (redactUrl). */
  address: string;
}

export interface WaitOptions {
  log: Logger;
  /** Epoch ms after which start-up gives up (start + STARTUP_TIMEOUT_MS). */
  deadline: number;
  /** The first failure is reported only after this long (ms): for a server we have just started ourselves. Default 0. */
  quietForMs?: number;
  /** A still-failing dependency is reported this often (ms). Default 5 000. */
  reportEveryMs?: number;
  /** One attempt may take this long before it counts as failed (ms). Default 4 000. */
  attemptTimeoutMs?: number;
  /** Pause between attempts (ms). Default 1 000. */
  retryEveryMs?: number;
  /** Aborted (a signal during start-up): stop waiting at once. */
  signal?: AbortSignal;
  /** Called with the result of an attempt that finished after it was given up (e.g. to close a late connection). */
  discardLate?: (late: unknown) => void;
}

/**
 * Runs `attempt` until it succeeds, so that start-up never hangs in silence: the first
 * failure is logged at once (an attempt that hangs counts as failed after
 * `attemptTimeoutMs`), then every `reportEveryMs`, each line naming the variable and the
 * address. Past `deadline` it throws a StartupError (code STARTUP_TIMEOUT) with the last error.
 */
export async function waitUntilReachable<T>(dep: Dependency, attempt: () => Promise<T>, opts: WaitOptions): Promise<T> {
  const reportEvery = opts.reportEveryMs ?? 5_000;
  const attemptTimeout = opts.attemptTimeoutMs ?? 4_000;
  const retryEvery = opts.retryEveryMs ?? 1_000;
  const started = Date.now();
  let lastReport = -Infinity;
  let failures = 0;
  let lastReason = 'not tried';
  for (;;) {
    if (opts.signal?.aborted) throw new Error(`start-up aborted while waiting for ${dep.variable}`);
    const remaining = opts.deadline - Date.now();
    if (remaining <= 0)
      throw new StartupError(
        'STARTUP_TIMEOUT',
        dep.variable,
        `cannot reach ${dep.address} after ${Date.now() - started} ms (${lastReason}); gave up (STARTUP_TIMEOUT_MS)`,
      );
    let timer: NodeJS.Timeout | undefined;
    // An object, not a boolean: the flag is set in the timer's callback.
    const cut = { timedOut: false };
    const run = attempt();
    try {
      const result = await Promise.race([
        run,
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () => {
              cut.timedOut = true;
              reject(new Error(`no answer within ${Math.min(attemptTimeout, Math.max(remaining, 0))} ms`));
            },
            Math.max(0, Math.min(attemptTimeout, remaining)),
          );
        }),
      ]);
      if (failures > 0)
        opts.log.info({ variable: dep.variable, address: dep.address, waitedMs: Date.now() - started }, `${dep.variable}: ${dep.address} reachable`);
      return result;
    } catch (e) {
      if (cut.timedOut)
        run.then(
          (late) => opts.discardLate?.(late),
          () => undefined,
        );
      failures++;
      const now = Date.now();
      // An attempt cut short by the deadline says less than the error before it.
      const reason = cut.timedOut && remaining < attemptTimeout && failures > 1 ? lastReason : describeError(e);
      lastReason = reason;
      if (now >= opts.deadline) {
        throw new StartupError(
          'STARTUP_TIMEOUT',
          dep.variable,
          `cannot reach ${dep.address} after ${now - started} ms (${reason}); gave up (STARTUP_TIMEOUT_MS)`,
          { cause: e },
        );
      }
      if (now - lastReport >= reportEvery && now - started >= (opts.quietForMs ?? 0)) {
        lastReport = now;
        opts.log.warn(
          { variable: dep.variable, address: dep.address, err: reason, attempts: failures, waitedMs: now - started, giveUpInMs: opts.deadline - now },
          `${dep.variable}: cannot reach ${dep.address} (${reason}); retrying, giving up in ${Math.ceil((opts.deadline - now) / 1000)} s (STARTUP_TIMEOUT_MS)`,
        );
      }
      await new Promise<void>((r) => {
        const t = setTimeout(done, Math.max(0, Math.min(retryEvery, opts.deadline - Date.now())));
        function done(): void {
          clearTimeout(t);
          opts.signal?.removeEventListener('abort', done);
          r();
        }
        opts.signal?.addEventListener('abort', done);
      });
    } finally {
      if (timer) clearTimeout(timer);
    }
  }
}
