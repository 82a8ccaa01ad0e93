import assert from 'node:assert/strict';
import { harness, insertLegacy, rowsByStatus, type Harness } from '../helpers/pipeline';
import { waitFor } from '../helpers/services';

/**
 * The pipeline fenced and at once resumed while sends are in flight: what the shard owner
 * does when its watchdog finds a lease renewal late and the next renewal succeeds (a
 * process frozen, or starved of CPU, for longer than its fence time). The fence's drain
 * waits for the sends in flight (the sandbox answers each after 300 ms); the resume comes
 * before that. Before the fix the resumed shards' new senders reloaded the rows the old
 * ones still held and the claim took later rows of the same chats past them (or the new
 * sender's name was still taken and the shard manager crashed, losing every sender).
 * Each chat's buffer holds two rows (chat rate 2/s, CHAT_BUFFER_SECONDS 1), so claims top
 * chats up all the time, as in production.
 */
describe('pipeline fenced and resumed while sends are in flight (MariaDB + sandbox)', function () {
  this.timeout(90_000);
  let h: Harness;

  afterEach(async () => {
    await h?.close();
  });

  it('every row delivered, repeats bounded by what the fenced senders held, per-chat order kept, over 8 fence/resume cycles', async () => {
    h = await harness({ sandbox: { globalRate: 300, chatRate: 10, latency: { minMs: 300 } }, env: { TELEGRAM_CHAT_RATE: '2', CHAT_BUFFER_SECONDS: '1' } });
    const chats = Array.from({ length: 20 }, (_, i) => 40_000 + i);
    const perChat = 16;
    const rows = [];
    for (let n = 0; n < perChat; n++) for (const c of chats) rows.push({ chat: c, text: `${c}-${n}` });
    await insertLegacy(h, rows);
    const p = await h.start();
    const all = Array.from({ length: 64 }, (_, i) => i);
    for (let cycle = 0; cycle < 8; cycle++) {
      // A request just reached the sandbox: its answer is 300 ms away, so the fence's drain waits for it.
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => {
          h.sandbox.off('delivered', on);
          reject(
            new Error(
              `cycle ${cycle}: nothing sent for 10 s (last crash: ${JSON.stringify(
                h.logs
                  .lines()
                  .filter((l) => l.msg === 'actor crashed')
                  .slice(-1),
              )})`,
            ),
          );
        }, 10_000);
        const on = (): void => {
          clearTimeout(timer);
          h.sandbox.off('delivered', on);
          resolve();
        };
        h.sandbox.on('delivered', on);
      });
      const fenced = p.fence(all);
      const resumed = p.own(all);
      const [f, o] = await Promise.all([fenced, resumed]);
      assert.deepEqual(o.owned, all, `cycle ${cycle}: every shard owned again`);
      assert.ok(f.released >= 0);
    }
    await waitFor(async () => (await rowsByStatus(h)).sent === rows.length, 60_000, 100, 'all rows sent');
    const d = h.sandbox.delivered();
    assert.equal(new Set(d.map((x) => x.text)).size, rows.length, 'every row delivered');
    if (d.length !== rows.length) {
      const seen = new Set<string>();
      console.log(JSON.stringify(d.filter((x) => (seen.has(x.text!) ? true : (seen.add(x.text!), false))).map((x) => [x.text, x.at])));
      console.log(
        JSON.stringify(
          h.logs
            .lines()
            .filter((l) => Number(l.level) >= 40 || /retr|recover/.test(String(l.msg)))
            .slice(0, 15),
        ),
      );
    }
    // At least once across a fence: a row may go twice, but only one a fenced sender held (each chat's buffer
    // holds two), never the crash or overtaking this test was written for. Exactly once held in most runs; the
    // repeats seen (4–9 of 320, in about one run of nine) are not explained yet and are printed above.
    assert.ok(d.length - rows.length <= 2 * chats.length, `${d.length - rows.length} repeats for ${rows.length} rows`);
    for (const c of chats) {
      const seq = h.sandbox.delivered(c).map((x) => Number(x.text!.split('-')[1]));
      assert.deepEqual(
        seq,
        [...seq].sort((a, b) => a - b),
        `chat ${c} in order`,
      );
    }
    const owned = await p.status();
    assert.equal(owned.shards.length, 64, 'a sender for every shard');
  });
});
