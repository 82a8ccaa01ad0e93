import { harness, insertLegacy, rowsByStatus } from '../test/helpers/pipeline';
import { waitFor } from '../test/helpers/services';
(async () => {
  const h = await harness({ sandbox: { globalRate: 300, chatRate: 10 } });
  await insertLegacy(h, Array.from({ length: 50 }, (_, i) => ({ chat: 100 + (i % 5), text: `g${i}` })));
  await h.start();
  await waitFor(async () => (await rowsByStatus(h)).sent === 50, 20_000, 100, 'sent');
  await h.close();
  setTimeout(() => {
    const hs = (process as unknown as { _getActiveHandles(): Array<{ constructor: { name: string }; _idleTimeout?: number; _onTimeout?: { toString(): string } }> })._getActiveHandles();
    for (const x of hs) console.log(x.constructor.name, x._idleTimeout ?? '', String(x._onTimeout ?? '').slice(0, 200));
    process.exit(0);
  }, 500);
})();
