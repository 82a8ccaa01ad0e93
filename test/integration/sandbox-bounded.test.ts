import assert from 'node:assert/strict';
import { TelegramSandbox } from '../../sandbox/server';

describe('TelegramSandbox: the delivered log is bounded (HTTP)', () => {
  let sandbox: TelegramSandbox;
  afterEach(() => sandbox?.stop());

  it('keeps the newest maxDelivered entries, seq keeps counting and waitForDelivered counts every delivery', async () => {
    sandbox = new TelegramSandbox({ maxDelivered: 5, globalRate: 1000, chatRate: 1000 });
    const { apiRoot } = await sandbox.start();
    for (let i = 1; i <= 12; i++) {
      const r = (await fetch(`${apiRoot}bot1:x/sendMessage`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ chat_id: 100 + i, text: `m${i}` }),
      }).then((x) => x.json())) as { ok: boolean };
      assert.equal(r.ok, true);
    }
    await sandbox.waitForDelivered(12, 1_000);
    const log = sandbox.delivered();
    assert.ok(log.length >= 5 && log.length <= 6, `kept ${log.length}`);
    assert.equal(log.at(-1)!.seq, 12);
    assert.equal(log.at(-1)!.text, 'm12');
    assert.ok(log[0]!.seq >= 7, 'the oldest entries were dropped');
    assert.equal(sandbox.stats().accepted.messages, 12, 'counters still count everything');
  });
});
