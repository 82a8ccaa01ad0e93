/**
 * `npm run cli -- top`: a live view for operators. Every second it asks the cluster for
 * its status (notify.cluster.status over NATS) and the outbox for its backlog per shard,
 * and draws one frame: per process its shards, in-memory queue, send rate against its
 * budget share, 429s and failures; then the whole backlog with a progress bar and an
 * estimated time to drain. Plain text (no colours, no cursor moves) when stdout is not a
 * terminal. Rendering is a pure function of two snapshots, tested without services.
 */

/** What top needs of one process (a structural subset of the cluster's ProcessStatus). */
export interface TopProcess {
  instance: string;
  holder: string;
  owned: number[];
  queued: number;
  inFlight: number;
  sent: number;
  failed: number;
  throttled: number;
  /** Chats waiting out a 429 now (a per-chat limit); absent from older workers. */
  rateLimitedChats?: number;
  /** 429s by the scope they were attributed to; absent from older workers. */
  throttledByScope?: { chat: number; group: number; global: number };
  /** Chats whose rate a 429 lowered (the lowest 20). */
  lowered?: unknown[];
  budget: { share: number; mode: string };
}

/** One observation: the cluster status plus the outbox backlog. */
export interface TopSnapshot {
  /** Epoch ms when taken. */
  at: number;
  processes: TopProcess[];
  shardCount: number;
  /** shard → holder. */
  map: Record<number, string>;
  /** Budget window (ms) the shares are per; from the coordinator, else the configured global rate. */
  windowMs: number;
  /** The bot-wide rate now and its configured ceiling, per second (from the coordinator). */
  botRate?: { now: number; ceiling: number };
  /** Rows pending or claimed, per shard. */
  backlogByShard: Map<number, number>;
  /** created_at of the oldest pending/claimed row per shard (epoch ms). */
  oldestByShard: Map<number, number>;
}

export interface RenderOptions {
  tty: boolean;
  width: number;
  /** Rows sent since top started (for the progress bar). */
  sentSinceStart: number;
}

const BAR_FULL = '█';
const BAR_EMPTY = '░';

/** A bar of `width` cells filled to `fraction` (0..1); ASCII when not a terminal. */
export function bar(fraction: number, width: number, tty: boolean): string {
  const f = Math.max(0, Math.min(1, Number.isFinite(fraction) ? fraction : 0));
  const full = Math.round(f * width);
  return tty ? BAR_FULL.repeat(full) + BAR_EMPTY.repeat(width - full) : `[${'#'.repeat(full)}${'.'.repeat(width - full)}]`;
}

/** "3m 20s", "45s", "2h 05m". */
export function duration(ms: number): string {
  if (!Number.isFinite(ms)) return '∞';
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h ${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

/** Sends per second of each process between two snapshots (by holder). */
export function rates(prev: TopSnapshot | undefined, cur: TopSnapshot): Map<string, number> {
  const out = new Map<string, number>();
  for (const p of cur.processes) {
    const before = prev?.processes.find((q) => q.holder === p.holder);
    const dt = prev ? (cur.at - prev.at) / 1000 : 0;
    out.set(p.holder, before && dt > 0 ? Math.max(0, p.sent - before.sent) / dt : 0);
  }
  return out;
}

/** "12 = 10/1/1, 3 chats lowered": 429s in total, by scope, and what they changed. */
function throttledText(p: TopProcess): string {
  const scope = p.throttledByScope ? ` = ${p.throttledByScope.chat}/${p.throttledByScope.group}/${p.throttledByScope.global}` : '';
  const notes = [p.rateLimitedChats ? `${p.rateLimitedChats} waiting` : '', p.lowered?.length ? `${p.lowered.length} lowered` : ''].filter(Boolean);
  return `${p.throttled}${scope}${notes.length ? `, ${notes.join(', ')}` : ''}`;
}

/** One frame of text (lines). `rate` is per holder, messages/s, smoothed by the caller. */
export function renderFrame(s: TopSnapshot, rate: Map<string, number>, o: RenderOptions): string[] {
  const lines: string[] = [];
  const sum = (xs: Iterable<number>): number => [...xs].reduce((a, b) => a + b, 0);
  const totalBacklog = sum(s.backlogByShard.values());
  const oldest = Math.min(...s.oldestByShard.values());
  lines.push(`shop-notify top — ${new Date(s.at).toISOString()} — ${s.processes.length} process(es), ${s.shardCount} shards`);
  lines.push('');
  if (s.botRate)
    lines.push(
      `bot rate ${s.botRate.now.toFixed(1)}/s of ${s.botRate.ceiling.toFixed(1)}/s configured${s.botRate.now < s.botRate.ceiling ? ' (lowered after 429s)' : ''}`,
      '',
    );
  const head = ['process', 'shards', 'backlog', 'queued', 'in flight', 'rate/s', 'share/s', 'rate vs share', '429s chat/group/bot', 'failed', 'oldest'];
  const barWidth = 12;
  const rows = s.processes.map((p) => {
    const backlog = sum(p.owned.map((sh) => s.backlogByShard.get(sh) ?? 0));
    const olds = p.owned.map((sh) => s.oldestByShard.get(sh)).filter((x): x is number => x !== undefined);
    const shareRate = s.windowMs > 0 ? (p.budget.share * 1000) / s.windowMs : 0;
    const r = rate.get(p.holder) ?? 0;
    return [
      p.instance,
      String(p.owned.length),
      String(backlog),
      String(p.queued),
      String(p.inFlight),
      r.toFixed(1),
      `${shareRate.toFixed(1)}${p.budget.mode === 'granted' ? '' : ` (${p.budget.mode})`}`,
      bar(shareRate > 0 ? r / shareRate : 0, barWidth, o.tty),
      throttledText(p),
      String(p.failed),
      olds.length ? duration(s.at - Math.min(...olds)) : '-',
    ];
  });
  const unowned = Array.from({ length: s.shardCount }, (_, i) => i).filter((i) => !(i in s.map));
  if (unowned.length) {
    const backlog = sum(unowned.map((sh) => s.backlogByShard.get(sh) ?? 0));
    rows.push(['(no owner)', String(unowned.length), String(backlog), '-', '-', '-', '-', '', '-', '-', '-']);
  }
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const fmt = (r: string[]): string => r.map((c, i) => (i === 0 || i === 7 ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0))).join('  ');
  lines.push(fmt(head));
  for (const r of rows) lines.push(fmt(r));
  lines.push('');
  const totalRate = sum(rate.values());
  const done = o.sentSinceStart;
  const eta = totalBacklog === 0 ? 0 : totalRate > 0 ? (totalBacklog / totalRate) * 1000 : Infinity;
  const width = Math.max(10, Math.min(40, o.width - 60));
  lines.push(
    `backlog ${totalBacklog}  ${bar(done + totalBacklog > 0 ? done / (done + totalBacklog) : 1, width, o.tty)}  ${done} sent since start, ${totalRate.toFixed(1)}/s, ` +
      `${totalBacklog === 0 ? 'drained' : `ETA ${duration(eta)}`}${Number.isFinite(oldest) ? `, oldest waiting ${duration(s.at - oldest)}` : ''}`,
  );
  return lines;
}
