import type { Metrics } from '../metrics';
import type { BufferBook } from './buffer-book';
import type { GlobalGate } from '../limits/global-gate';
import type { WindowLimit } from '../limits/window';

/** Read at scrape time from live state: queue depth and sends on the wire per shard, the gate. */
export function registerPipelineGauges(
  metrics: Metrics,
  { book, gate, settings }: { book: BufferBook; gate: GlobalGate; settings: { chatLimit: WindowLimit; groupLimit: WindowLimit } },
  lowered: Map<number, number>,
): void {
  metrics.gauge('sender_queue_depth', 'Claimed rows waiting in memory, per shard', ['shard'], (g) => {
    g.reset();
    for (const [shard, n] of book.byShard()) g.set({ shard: String(shard) }, n);
  });
  metrics.gauge('sender_in_flight', 'Telegram calls on the wire, per shard', ['shard'], (g) => {
    g.reset();
    for (const [shard, n] of book.inFlightByShard()) g.set({ shard: String(shard) }, n);
  });
  metrics.gauge('gate_waiting_chats', 'Chats ready to send, waiting for a global slot', [], (g) => g.set(gate.waiting));
  metrics.gauge('gate_limit_per_window', 'Sends per window this process may make now (its cluster share)', [], (g) => g.set(gate.limit.count));
  metrics.gauge(
    'telegram_effective_rate',
    'Sends per second this process may make now, by scope (global: its gate; chat/group: the lowest lowered chat, else the configured rate)',
    ['scope'],
    (g) => {
      g.set({ scope: 'global' }, (gate.limit.count / gate.limit.windowMs) * 1000);
      let chat = (settings.chatLimit.count / settings.chatLimit.windowMs) * 1000;
      let group = (settings.groupLimit.count / settings.groupLimit.windowMs) * 1000;
      for (const [id, r] of lowered)
        if (id < 0) group = Math.min(group, r);
        else chat = Math.min(chat, r);
      g.set({ scope: 'chat' }, chat);
      g.set({ scope: 'group' }, group);
    },
  );
  metrics.gauge('telegram_lowered_chats', 'Chats whose rate a 429 lowered below the configured one', ['scope'], (g) => {
    let chat = 0;
    for (const id of lowered.keys()) if (id > 0) chat++;
    g.set({ scope: 'chat' }, chat);
    g.set({ scope: 'group' }, lowered.size - chat);
  });
  metrics.gauge('gate_paused_until_seconds', 'Bot-wide pause after a flood 429 (epoch seconds; 0 = none)', [], (g) => g.set(gate.pausedUntilMs / 1000));
}
