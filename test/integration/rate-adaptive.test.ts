import assert from 'node:assert/strict';
import { harness, insertLegacy, rowsByStatus, type Harness } from '../helpers/pipeline';
import { waitFor } from '../helpers/services';

/**
 * A Telegram stricter than configured (issue 9): the sandbox enforces a lower limit than
 * the pipeline is told; the effective rate must converge below the server's limit, with
 * few 429s, and nothing lost.
 */
describe('adaptive limits against a stricter server (sandbox over HTTP)', function () {
  this.timeout(90_000);
  let h: Harness;

  afterEach(async () => {
    await h?.close();
  });

  it('global: server at 80/s while told 120/s → the bot rate settles below 80/s, few 429s, all delivered once', async () => {
    h = await harness({ sandbox: { globalRate: 80, chatRate: 10 }, env: { TELEGRAM_GLOBAL_RATE: '120' } });
    const n = 1200;
    await insertLegacy(
      h,
      Array.from({ length: n }, (_, i) => ({ chat: 20_000 + (i % 600), text: `s${i}` })),
    );
    const started = Date.now();
    const pipeline = await h.start();
    await waitFor(async () => (await rowsByStatus(h)).sent === n, 80_000, 200, 'all sent');
    const wallS = (Date.now() - started) / 1000;
    const stats = h.sandbox.stats();
    const d = h.sandbox.delivered();
    assert.equal(new Set(d.map((x) => x.text)).size, n, 'every row once');
    assert.equal(d.length, n, 'no duplicates');
    const rate = (pipeline.gate.limit.count / pipeline.gate.limit.windowMs) * 1000;
    // The second half of the run: the rate the pipeline settled at.
    const half = d.slice(Math.floor(n / 2));
    const settled = ((half.length - 1) / (half[half.length - 1]!.at - half[0]!.at)) * 1000;
    const r429 = stats.rateLimited;
    console.log(
      `      stricter global: ${n} in ${wallS.toFixed(1)} s; 429s ${JSON.stringify(r429)} (${((r429.global * 100) / n).toFixed(2)} % of sends); gate now ${rate.toFixed(1)}/s; second half ${settled.toFixed(1)}/s of the server's 80/s`,
    );
    assert.equal(r429.chat + r429.group, 0, 'no chat was blamed: the chats were far below their own limit');
    assert.ok(rate <= 80, `the effective bot rate (${rate.toFixed(1)}/s) is below the server's`);
    assert.ok(settled >= 0.9 * 80, `settled at ${settled.toFixed(1)}/s`);
    assert.ok(r429.global <= 0.01 * n, `${r429.global} × 429 for ${n} sends (target ≤ 1 %)`);
  });
});
