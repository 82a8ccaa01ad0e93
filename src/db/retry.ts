import { backoffDelay } from '../limits/backoff';

/** InnoDB's deadlock (1213) and lock wait timeout (1205): the transaction was rolled back whole. */
export function isRetryableTxError(e: unknown): boolean {
  const errno = (e as { errno?: unknown } | null)?.errno;
  return errno === 1213 || errno === 1205;
}

/**
 * Runs a transaction again when InnoDB picked it as a deadlock victim or a lock wait timed
 * out: nothing of it was committed, so running it again is safe. Waits a short jittered
 * backoff between attempts (20 ms, 40 ms, … with `backoffDelay`); rethrows anything else, and
 * the last error after `attempts` tries.
 */
export async function withDeadlockRetry<T>(run: () => Promise<T>, attempts = 5): Promise<T> {
  for (let i = 1; ; i++) {
    try {
      return await run();
    } catch (e) {
      if (!isRetryableTxError(e) || i >= attempts) throw e;
      await new Promise((r) => setTimeout(r, backoffDelay(i, 40, 500)));
    }
  }
}
