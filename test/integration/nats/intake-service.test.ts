import { strict as assert } from 'node:assert';
import { connect, type NatsConnection, type ServiceInfo } from 'nats';
import { Type } from '@sinclair/typebox';
import { decoder } from '../../../src/nats/codec';
import { NatsIntake, requestValidated } from '../../../src/nats/intake';
import { Metrics } from '../../../src/metrics';
import { NATS_URL, captureLogger, uniq } from '../../helpers/services';

const decodePing = decoder(Type.Object({ n: Type.Integer({ minimum: 0, maximum: 100 }) }, { additionalProperties: false }), { maxBytes: 256 });
const decodePong = decoder(Type.Object({ doubled: Type.Integer() }, { additionalProperties: false }));

/** The worker's `notify-worker` endpoints go through the intake: what `nats micro info` lists, served like `serve`. */
describe('the NATS intake: micro service endpoints (real nats-server)', () => {
  let nc: NatsConnection;
  before(async () => {
    nc = await connect({ servers: NATS_URL });
  });
  after(async () => {
    await nc.close();
  });

  const infos = async (name: string): Promise<ServiceInfo[]> => {
    const out: ServiceInfo[] = [];
    try {
      for await (const i of await nc.services.client().info(name)) out.push(i);
    } catch (e) {
      // No service of that name answers at all: "no responders".
      if ((e as { code?: string }).code !== '503') throw e;
    }
    return out;
  };

  it('lists the endpoints and metadata, decodes and counts like serve, and drain() stops the service', async () => {
    const metrics = new Metrics();
    const intake = new NatsIntake({ nc, log: captureLogger().log, metrics });
    const name = uniq('svc');
    const subject = uniq('svc.double.');
    const metadata: Record<string, string> = { shards: '' };
    const service = await intake.addService({ name, version: '0.1.0', metadata });
    intake.serveEndpoint(service, 'double', subject, decodePing, (p) => ({ doubled: p.n * 2 }), { metadata: { reply: 'Pong' } });
    // Metadata is kept by reference: a later change shows in discovery.
    metadata.shards = '0-3';

    assert.deepEqual(await requestValidated(nc, subject, { n: 21 }, decodePong, 2_000), { doubled: 42 });
    await assert.rejects(requestValidated(nc, subject, { n: 'x' }, decodePong, 2_000), (e: { code?: string }) => e.code === 'BAD_PAYLOAD');
    const bad = await metrics.registry.getSingleMetric('nats_bad_payloads_total')!.get();
    assert.deepEqual(
      bad.values.map((v) => [v.labels.subject, v.labels.code, v.value]),
      [[subject, 'BAD_PAYLOAD', 1]],
    );

    const [info] = await infos(name);
    assert.ok(info, 'the service answers $SRV.INFO');
    assert.deepEqual(
      info.endpoints.map((e) => e.name),
      ['double'],
    );
    assert.equal(info.metadata?.shards, '0-3');

    await intake.drain();
    await intake.drain();
    assert.deepEqual(await infos(name), [], 'a drained intake stopped its service');
    await assert.rejects(intake.addService({ name: uniq('svc'), version: '0.1.0' }), (e: { code?: string }) => e.code === 'UNAVAILABLE');
  });
});
