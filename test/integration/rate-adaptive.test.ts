import assert from 'node:assert/strict';
import { harness, insertLegacy, rowsByStatus, type Harness } from '../helpers/pipeline';
import { waitFor } from '../helpers/services';

/**
 * A Telegram stricter than configured (issue 9): the sandbox enforces a lower limit than
 * the pipeline is told; the effective rate must settle just below the server's limit
 * (0.95–1 ×) within 10 s, with ≤ 1 % 429s, and nothing lost.
 */
describe('adaptive limits against a stricter server (sandbox over HTTP)', function () {
  this.timeout(120_000);
  let h: Harness;

  afterEach(async () => {
    await h?.close();
  });

  it('global: server at 80/s while told 120/s → the bot rate settles at 0.95–1 × 80/s within 10 s, ≤ 1 % 429s, all delivered once', async () => {
    h = await harness({ sandbox: { globalRate: 80, chatRate: 10 }, env: { TELEGRAM_GLOBAL_RATE: '120' } });
    // 25 s at the server's rate: the sends in flight when the first 429 comes (a cold start's first window goes out
    // before any answer says the server is stricter; ~8–12 at 120/s on this machine under load) are a fixed cost, and
    // the target is a share of the whole run.
    const n = 2000;
    await insertLegacy(
      h,
      Array.from({ length: n }, (_, i) => ({ chat: 20_000 + (i % 600), text: `s${i}` })),
    );
    const started = Date.now();
    const pipeline = await h.start();
    // The effective rate (the gate's) over the run: when it last stood outside 0.95–1 × the server's rate.
    const server = 80;
    const inBand = (): boolean => {
      const r = (pipeline.gate.limit.count / pipeline.gate.limit.windowMs) * 1000;
      return r >= 0.95 * server && r <= server;
    };
    let lastOutside = Date.now();
    await waitFor(
      async () => {
        if (!inBand()) lastOutside = Date.now();
        return (await rowsByStatus(h)).sent === n;
      },
      100_000,
      50,
      'all sent',
    );
    const wallS = (Date.now() - started) / 1000;
    const stats = h.sandbox.stats();
    const d = h.sandbox.delivered();
    assert.equal(new Set(d.map((x) => x.text)).size, n, 'every row once');
    assert.equal(d.length, n, 'no duplicates');
    const rate = (pipeline.gate.limit.count / pipeline.gate.limit.windowMs) * 1000;
    const settledAfter = (lastOutside - d[0]!.at) / 1000;
    // The second half of the run: the rate the pipeline delivered at.
    const half = d.slice(Math.floor(n / 2));
    const settled = ((half.length - 1) / (half[half.length - 1]!.at - half[0]!.at)) * 1000;
    const r429 = stats.rateLimited;
    console.log(
      `      stricter global: ${n} in ${wallS.toFixed(1)} s; 429s ${JSON.stringify(r429)} (${((r429.global * 100) / n).toFixed(2)} % of sends); gate now ${rate.toFixed(1)}/s, in 0.95–1 × ${server}/s from ${settledAfter.toFixed(1)} s after the first delivery; second half delivered ${settled.toFixed(1)}/s`,
    );
    assert.equal(r429.chat + r429.group, 0, 'no chat was blamed: the chats were far below their own limit');
    // Issue 9's targets: the effective rate settles at ≥ 0.95 of the server's real rate (never above it) within 10 s,
    // and 429s stay ≤ 1 % of sends over the run.
    assert.ok(inBand(), `the effective bot rate (${rate.toFixed(1)}/s) within 0.95–1 × the server's`);
    assert.ok(settledAfter <= 10, `settled ${settledAfter.toFixed(1)} s after the first delivery`);
    assert.ok(r429.global <= 0.01 * n, `${r429.global} × 429 for ${n} sends (target ≤ 1 %)`);
    // What was delivered also depends on the CPU (sends cannot catch up a window a busy machine let pass):
    // 0.95–0.97 of the server's rate on this 2-core machine under other load; a floor that catches a rate stuck low.
    assert.ok(settled >= 0.9 * server, `delivered at ${settled.toFixed(1)}/s in the second half`);
  });
});
