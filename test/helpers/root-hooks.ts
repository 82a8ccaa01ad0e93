import { connect } from 'nats';
import { assignedViewsStreams } from './processes';
import { NATS_URL } from './services';

/**
 * Mocha root hooks (loaded by .mocharc.json): after the whole run, drop the views streams
 * that test workers were given, so repeated runs leave nothing behind on the shared server.
 */
export const mochaHooks = {
  async afterAll(): Promise<void> {
    if (assignedViewsStreams.size === 0) return;
    const nc = await connect({ servers: NATS_URL }).catch(() => undefined);
    if (!nc) return;
    try {
      const jsm = await nc.jetstreamManager();
      for (const s of assignedViewsStreams) await jsm.streams.delete(s).catch(() => undefined);
    } finally {
      await nc.close();
    }
  },
};
