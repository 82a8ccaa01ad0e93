import { strict as assert } from 'node:assert';
import { Metrics } from '../../../src/metrics';
import { sendMetrics } from '../../../src/outbox/send-metrics';

describe('outbox/send-metrics', () => {
  it('declares the sender metrics once per registry: every shard’s sender shares them', async () => {
    const metrics = new Metrics();
    const a = sendMetrics(metrics);
    const b = sendMetrics(metrics);
    assert.equal(a.sent, b.sent);
    a.sent.inc({ shard: '3' });
    b.throttled.inc({ shard: '3', scope: 'chat' });
    const text = await metrics.registry.metrics();
    assert.match(text, /telegram_sent_total\{shard="3"\} 1/);
    assert.match(text, /telegram_rate_limited_total\{shard="3",scope="chat"\} 1/);
  });
});
