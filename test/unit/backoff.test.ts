import assert from 'node:assert/strict';
import { backoffDelay } from '../../src/limits/backoff';

const zero = (): number => 0;
const one = (): number => 1;

describe('limits/backoff', () => {
  it('attempt k lies in [base·2^(k-1)/2, base·2^(k-1)]', () => {
    const base = 1000;
    for (let k = 1; k <= 8; k++) {
      const exp = base * 2 ** (k - 1);
      assert.equal(backoffDelay(k, base, 1e9, zero), exp / 2, `attempt ${k}, random 0`);
      assert.equal(backoffDelay(k, base, 1e9, one), exp, `attempt ${k}, random 1`);
      assert.equal(
        backoffDelay(k, base, 1e9, () => 0.5),
        (exp * 3) / 4,
        `attempt ${k}, random 0.5`,
      );
    }
  });

  it('grows with the attempt number', () => {
    for (let k = 1; k < 10; k++) {
      assert.ok(backoffDelay(k + 1, 50, 1e9, zero) > backoffDelay(k, 50, 1e9, zero));
      // Equal jitter: the next attempt's shortest wait is the previous one's longest.
      assert.equal(backoffDelay(k + 1, 50, 1e9, zero), backoffDelay(k, 50, 1e9, one));
    }
  });

  it('caps at max: [max/2, max]', () => {
    assert.equal(backoffDelay(20, 1000, 300_000, zero), 150_000);
    assert.equal(backoffDelay(20, 1000, 300_000, one), 300_000);
    assert.equal(backoffDelay(5000, 1000, 300_000, one), 300_000, 'huge attempt numbers stay finite');
    assert.equal(backoffDelay(5000, 1000, 300_000, zero), 150_000);
  });

  it('treats attempt 0 or less as the first', () => {
    assert.equal(backoffDelay(0, 1000, 300_000, one), 1000);
    assert.equal(backoffDelay(-3, 1000, 300_000, zero), 500);
  });

  it('returns whole milliseconds within bounds for Math.random', () => {
    for (let i = 0; i < 1000; i++) {
      const k = 1 + (i % 12);
      const d = backoffDelay(k, 50, 400);
      const exp = Math.min(400, 50 * 2 ** (k - 1));
      assert.ok(Number.isInteger(d));
      assert.ok(d >= exp / 2 - 0.5 && d <= exp, `attempt ${k}: ${d}`);
    }
  });
});
