import { singleProcess } from '../../src/outbox/send-guard';
import { strict as assert } from 'node:assert';
import { connect, type NatsConnection } from 'nats';
import { loadConfig } from '../../src/config/core';
import { Metrics } from '../../src/metrics';
import { TelegrafClient } from '../../src/telegram/client';
import { noHandoff, type HandoffStore } from '../../src/cluster/handoff';
import { pipelineShared, preparePipeline, type PipelineOptions } from '../../src/roles/pipeline';
import { createTestDb, captureLogger, uniq, NATS_URL, type TestDb } from '../helpers/services';
import { TEST_TOKEN as TOKEN } from '../helpers/pipeline';

/**
 * The pipeline takes the cluster's ports at construction (issue 12 item 2): no setter is
 * called after it runs, so what its actors are given is what they keep.
 */
describe('pipeline role: the cluster ports are passed at construction', () => {
  let tdb: TestDb;
  let nc: NatsConnection;
  let base: PipelineOptions;
  before(async () => {
    tdb = await createTestDb('ports');
    nc = await connect({ servers: NATS_URL });
    const config = loadConfig({ DATABASE_URL: tdb.url, NATS_URL, TELEGRAM_BOT_TOKEN: TOKEN, INSTANCE_ID: uniq('p'), NATS_SUBJECT_PREFIX: `${uniq('pp')}.` });
    base = {
      config,
      log: captureLogger('warn').log,
      metrics: new Metrics(),
      db: tdb.db,
      nc,
      telegram: new TelegrafClient({ token: TOKEN, apiRoot: 'http://127.0.0.1:9/', timeoutMs: 1_000 }),
    };
  });
  after(async () => {
    await nc.close();
    await tdb.drop();
  });

  it('a cluster hears every bot-wide flood and keeps the chat windows; the gate is left to its coordinator', async () => {
    const floods: Array<[number, number]> = [];
    const handoff: HandoffStore = { save: () => Promise.resolve(new Set()), load: () => Promise.resolve(new Map()) };
    const shared = pipelineShared(base.config);
    const prepared = await preparePipeline({
      ...base,
      shared,
      cluster: { announceFlood: (until, at) => void floods.push([until, at]), handoff, shardLease: singleProcess },
    });
    const deps = prepared.deps();
    assert.equal(deps.handoff, handoff);
    assert.equal(deps.gate, shared.gate, 'the gate the cluster budget steers');
    const before = { ...shared.gate.limit };
    deps.onBotFlood(2_000_000_000_000, 1_999_999_999_000);
    assert.deepEqual(floods, [[2_000_000_000_000, 1_999_999_999_000]]);
    assert.deepEqual(shared.gate.limit, before, 'in a cluster the coordinator, not this process, lowers the bot rate');
    shared.gate.stop();
    await prepared.service.stop();
  });

  it('alone, it keeps no windows across handoffs and lowers its own gate after a flood', async () => {
    const prepared = await preparePipeline(base);
    const deps = prepared.deps();
    assert.equal(deps.handoff, noHandoff);
    const before = deps.gate.limit.count;
    deps.onBotFlood(Date.now() + 1_000, Date.now());
    assert.ok(deps.gate.limit.count < before, `gate lowered from ${before} to ${deps.gate.limit.count}`);
    deps.gate.stop();
    await prepared.service.stop();
  });
});
