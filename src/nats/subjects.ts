/**
 * Every NATS subject of the system, in one place. Each entry says the pattern, the
 * payload, who publishes and who subscribes. Payload schemas live in payloads.ts and
 * are validated on receipt; nothing from the wire is trusted.
 */
export const Subjects = {
  // ---- Delivery pipeline -------------------------------------------------------

  /**
   * `notify.enqueue` — request/reply (service endpoint `enqueue`, queue group: any one
   * worker answers). Payload: EnqueueRequest JSON. Reply: EnqueueReply, sent only after
   * the row is committed. Publishers: bot instances, the ads gateway, the CLI.
   */
  enqueue: 'notify.enqueue',

  /**
   * `notify.wake.<shard>` — event, published after an enqueue commit so the owner of the
   * shard claims at once instead of at its next poll. Payload: WakeEvent.
   * Subscribers: the worker(s) owning the shard.
   */
  wake: (shard: number): string => `notify.wake.${shard}`,
  wakeAll: 'notify.wake.*',

  /**
   * `notify.outcome.sent` / `notify.outcome.failed` — event per finished notification.
   * Payload: OutcomeEvent. Publisher: the outcome writer after its batch committed.
   * Subscribers: anyone (`nats sub 'notify.outcome.>'`).
   */
  outcome: (status: 'sent' | 'failed'): string => `notify.outcome.${status}`,
  outcomeAll: 'notify.outcome.>',

  /**
   * `notify.recipient.changed` — event: a recipient was marked unreachable or cleared.
   * Payload: RecipientChanged. Every worker updates its recipient cache.
   */
  recipientChanged: 'notify.recipient.changed',

  /**
   * `notify.status.<instance>` — request (service endpoint `status`): this worker's
   * shards, queue depths, in-flight, counters and rate-limit waits. Empty payload.
   */
  status: (instance: string): string => `notify.status.${instance}`,

  /** Service name every worker registers (`nats micro ls`). */
  workerService: 'notify-worker',
} as const;
