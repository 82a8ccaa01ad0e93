import type { Metrics } from '../metrics';

/** The metrics a shard's sender keeps: what Telegram accepted, failed, retried, throttled, and how long it took. */
export function sendMetrics(metrics: Metrics) {
  return {
    sent: metrics.counter('telegram_sent_total', 'Notifications Telegram accepted (all parts)', ['shard']),
    failed: metrics.counter('telegram_failed_total', 'Notifications that failed for good', ['shard', 'code']),
    retried: metrics.counter('telegram_retries_total', 'Transient failures retried', ['shard']),
    throttled: metrics.counter('telegram_rate_limited_total', '429 answers received, by the scope they were attributed to', ['shard', 'scope']),
    heldBack: metrics.counter(
      'sender_held_back_total',
      "Sends held back right before dispatch: a lease (the shard's, or the row's claim) this process could not vouch for",
      ['shard', 'lease'],
    ),
    calls: metrics.counter('telegram_calls_total', 'Telegram API calls', ['method', 'result']),
    latency: metrics.histogram(
      'notification_delivery_seconds',
      'From claim to accepted, per notification',
      [],
      [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
    ),
    age: metrics.histogram(
      'notification_age_seconds',
      'From created_at to accepted, per notification',
      [],
      [0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 3600],
    ),
    callLatency: metrics.histogram(
      'telegram_call_seconds',
      'Telegram API call latency',
      ['method'],
      [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 15],
    ),
  };
}

export type SendMetrics = ReturnType<typeof sendMetrics>;
