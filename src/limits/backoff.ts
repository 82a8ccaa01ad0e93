/**
 * Exponential backoff with "equal jitter": half the delay is fixed, half random, so
 * retries spread out but never come back almost at once.
 * attempt 1 → [base/2, base], attempt 2 → [base, 2·base], … capped at max.
 */
export function backoffDelay(attempt: number, baseMs: number, maxMs: number, random: () => number = Math.random): number {
  const exp = Math.min(maxMs, baseMs * 2 ** Math.max(0, attempt - 1));
  return Math.round(exp / 2 + random() * (exp / 2));
}
