import { queueTotals } from '../../../src/outbox/chat-queues';
import type { SenderStatus } from './sender';
import type { SenderState } from './sender-work';

/** What a sender's status answers at `now`: its queues, sends on the wire, 429s and the chats whose rate they lowered. */
export function senderStatus(state: SenderState, now: number): SenderStatus {
  const { queued, waitingRetry, rateLimited } = queueTotals(state.chats.values(), now);
  const t = state.counts.throttled;
  const lowered = state.limiter
    .lowered()
    .sort((a, b) => a.rate / a.ceiling - b.rate / b.ceiling)
    .slice(0, 20);
  return {
    shard: state.shard,
    chats: state.chats.size,
    queued,
    inFlight: state.inFlight,
    rateLimited,
    lowered,
    waitingRetry,
    sent: state.counts.sent,
    failed: state.counts.failed,
    retried: state.counts.retried,
    throttled: t.chat + t.group + t.global,
    throttledByScope: { ...t },
    draining: state.draining !== null,
  };
}
