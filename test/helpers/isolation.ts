import { connect } from 'nats';
import { NATS_URL, uniq } from './services';

/**
 * Env that keeps a started worker's ads role off the shared defaults: its own views stream
 * and consumer (otherwise it would join the `ADS_VIEWS` stream of whoever runs `npm start`
 * against the same NATS server). The caller sets its own NATS_SUBJECT_PREFIX, which every
 * subject takes. Drop the stream afterwards.
 */
export function isolatedAdsEnv(): { VIEWS_STREAM: string; VIEWS_CONSUMER: string } {
  return { VIEWS_STREAM: uniq('ADSV'), VIEWS_CONSUMER: uniq('counter') };
}

/** Deletes a JetStream stream (missing is fine). */
export async function dropStream(name: string, url = NATS_URL): Promise<void> {
  const nc = await connect({ servers: url });
  try {
    const jsm = await nc.jetstreamManager();
    await jsm.streams.delete(name).catch(() => undefined);
  } finally {
    await nc.close();
  }
}
