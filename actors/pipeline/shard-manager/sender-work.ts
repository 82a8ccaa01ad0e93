import { dispatch, reply, assertNever, type ActorRef, type ReplyTo } from '../../../src/runtime/actor';
import { describeError } from '../../../src/errors';
import type { Reservation } from '../../../src/limits/window';
import type { ChatLimiter } from '../../../src/limits/chat-limits';
import { partCost } from '../../../src/outbox/plan';
import { insertInOrder, newJob, type Job, type RowLedger } from '../../../src/outbox/chat-queues';
import { asPlainText, splitPart } from '../../../src/outbox/replan';
import type { OutboxRow, Outcome, Progress } from '../../../src/outbox/types';
import type { OutcomeEvent } from '../../../src/nats/payloads';
import { chatRatePerMs, type PipelineDeps } from '../deps';
import { TelegramApiError, TelegramTransient } from '../../../src/telegram/errors';
import { DEFAULTS } from '../../../src/config/core';
import { decide, type Action, type ThrottleScope } from '../../../src/telegram/policy';
import type { DrainResult, SenderMsg, SenderOptions, SendResult, SenderStatus } from './sender';

/**
 * The sender's work on its chats, outside its mailbox code: moving a chat forward (plan,
 * wait for its window, bid for a global slot, send), and carrying out what the policy
 * decided for each answer. The actor (sender.ts) owns the state and the messages and
 * calls these; every asynchronous result comes back to it as a message.
 */
interface Chat {
  id: number;
  queue: Job[];
  /** Not before this instant: a 429's retry_after or a retry backoff. */
  pausedUntil: number;
  pauseKind: 'none' | 'rate' | 'retry';
  phase: 'idle' | 'planning' | 'waiting' | 'bidding' | 'sending';
  cancelBid: (() => void) | undefined;
  /** The row the pending bid was made for (a row with a smaller id may arrive meanwhile). */
  bidRowId: number;
  timer: NodeJS.Timeout | undefined;
}

export interface SenderState {
  shard: number;
  gen: number;
  chats: Map<number, Chat>;
  limiter: ChatLimiter;
  rows: RowLedger;
  inFlight: number;
  counts: { sent: number; failed: number; retried: number; throttled: Record<ThrottleScope, number> };
  draining: { replyTo: ReplyTo<DrainResult>; done: boolean } | null;
  recovering: boolean;
  /** Rows that arrived while recovering; merged after. */
  early: OutboxRow[];
  lastTick: number;
}

export function senderWork(deps: PipelineDeps, opts: SenderOptions) {
  const { settings, gate, recipients, telegram, planner, book, clock, log, metrics } = deps;
  const shardLabel = { shard: String(opts.shard) };
  const m = {
    sent: metrics.counter('telegram_sent_total', 'Notifications Telegram accepted (all parts)', ['shard']),
    failed: metrics.counter('telegram_failed_total', 'Notifications that failed for good', ['shard', 'code']),
    retried: metrics.counter('telegram_retries_total', 'Transient failures retried', ['shard']),
    throttled: metrics.counter('telegram_rate_limited_total', '429 answers received, by the scope they were attributed to', ['shard', 'scope']),
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
  const policyLimits = {
    maxAttempts: settings.maxAttempts,
    retryBaseMs: settings.retryBaseMs,
    retryMaxMs: settings.retryMaxMs,
    maxRetryAfterMs: settings.maxRetryAfterMs ?? DEFAULTS.TELEGRAM_MAX_RETRY_AFTER_MS,
    unauthorizedPauseMs: 60_000,
  };

  const emit = (outcome: Outcome, event?: OutcomeEvent): void => {
    if (!dispatch(opts.outcomes, { type: 'outcome', outcome, event }))
      log.error({ id: outcome.id }, 'outcome writer is stopped: outcome kept in the database lease only');
  };
  const progressOf = (job: Job): Progress | undefined =>
    job.done > 0 || job.plain ? { done: job.done, total: job.parts?.length ?? 0, ...(job.plain ? { plain: true } : {}) } : undefined;
  const notes = (job: Job) => job.notes.join('; ') || undefined;

  const addRows = (state: SenderState, rows: OutboxRow[], self: ActorRef<SenderMsg>): void => {
    const touched = new Set<Chat>();
    const now = clock.now();
    for (const row of rows) {
      if (!state.rows.admit(row.id, row.fetchedAt)) continue;
      let c = state.chats.get(row.chatId);
      if (!c)
        state.chats.set(
          row.chatId,
          (c = { id: row.chatId, queue: [], pausedUntil: 0, pauseKind: 'none', phase: 'idle', cancelBid: undefined, bidRowId: 0, timer: undefined }),
        );
      insertInOrder(c.queue, newJob(row, now));
      book.add(opts.shard, row.chatId, 1);
      touched.add(c);
    }
    for (const c of touched) schedule(state, c, self);
  };

  const finishJob = (state: SenderState, c: Chat, job: Job): void => {
    const i = c.queue.indexOf(job);
    if (i >= 0) c.queue.splice(i, 1);
    book.add(opts.shard, c.id, -1);
    state.rows.finish(job.row.id, clock.now());
  };

  const failJob = (state: SenderState, c: Chat, job: Job, code: string, reason: string): void => {
    state.counts.failed++;
    m.failed.inc({ ...shardLabel, code });
    const now = clock.now();
    emit(
      {
        id: job.row.id,
        kind: 'failed',
        at: now,
        attempts: job.attempts,
        retryCount: job.retryCount,
        code,
        reason,
        notes: notes(job),
        progress: progressOf(job),
      },
      {
        id: job.row.id,
        chat_id: job.row.chatId,
        status: 'failed',
        error_code: code,
        error: reason,
        attempts: job.attempts,
        latency_ms: now - job.row.createdAt,
      },
    );
    finishJob(state, c, job);
  };

  const succeed = (state: SenderState, c: Chat, job: Job): void => {
    const now = clock.now();
    state.counts.sent++;
    m.sent.inc(shardLabel);
    m.latency.observe((now - job.claimedAt) / 1000);
    m.age.observe(Math.max(0, now - job.row.createdAt) / 1000);
    emit(
      {
        id: job.row.id,
        kind: 'sent',
        at: now,
        attempts: job.attempts + 1,
        retryCount: job.retryCount,
        notes: notes(job),
        progress: job.parts && job.parts.length > 1 ? progressOf(job) : undefined,
      },
      { id: job.row.id, chat_id: job.row.chatId, status: 'sent', attempts: job.attempts + 1, latency_ms: now - job.row.createdAt },
    );
    finishJob(state, c, job);
  };

  /** Moves a chat forward: fail what cannot be sent, plan, wait for its window, bid. */
  const schedule = (state: SenderState, c: Chat, self: ActorRef<SenderMsg>): void => {
    if (c.phase !== 'idle' || state.recovering) return;
    const gen = state.gen;
    for (;;) {
      const job = c.queue[0];
      if (!job) {
        state.chats.delete(c.id);
        maybeFinishDrain(state);
        return;
      }
      if (state.draining) {
        maybeFinishDrain(state);
        return;
      }
      const dead = recipients.unreachable(job.row.chatId);
      if (dead) {
        failJob(state, c, job, 'TG_PERMANENT', `recipient ${dead.status} since ${new Date(dead.since).toISOString()}: ${dead.reason} (not sent)`);
        continue;
      }
      if (!job.parts) {
        c.phase = 'planning';
        const rowId = job.row.id;
        planner.plan({ ...job.row, plainText: job.plain }).then(
          (parts) => dispatch(self, { type: 'planned', chatId: c.id, rowId, parts, gen }),
          (e: unknown) => dispatch(self, { type: 'planned', chatId: c.id, rowId, parts: null, error: describeError(e), gen }),
        );
        return;
      }
      if (job.done >= job.parts.length) {
        // Everything was accepted before (e.g. progress recorded, outcome lost): done.
        succeed(state, c, job);
        continue;
      }
      const window = state.limiter.window(c.id);
      const cost = Math.min(partCost(job.parts[job.done]!), window.current.count);
      const now = clock.now();
      const at = Math.max(c.pausedUntil, window.availableAt(now, cost));
      if (at > now) {
        if (at === Infinity) return; // a send of this chat is still settling; its sendDone reschedules
        c.phase = 'waiting';
        c.timer = setTimeout(() => dispatch(self, { type: 'chatReady', chatId: c.id, gen }), Math.min(at - now, 2 ** 31 - 1));
        return;
      }
      c.pauseKind = 'none';
      c.phase = 'bidding';
      c.bidRowId = job.row.id;
      c.cancelBid = gate.request({
        priority: job.row.priority,
        backlogMs: c.queue.length / chatRatePerMs(settings, c.id),
        readySince: now,
        cost,
        grant: (reservation) => {
          if (!dispatch(self, { type: 'granted', chatId: c.id, reservation, gen })) gate.cancel(reservation);
        },
      });
      return;
    }
  };

  const startSend = (state: SenderState, c: Chat, globalRes: Reservation, self: ActorRef<SenderMsg>): void => {
    const job = c.queue[0]!;
    const part = job.parts![job.done]!;
    const window = state.limiter.window(c.id);
    const chatRes = window.reserve(Math.min(partCost(part), window.current.count));
    c.phase = 'sending';
    state.inFlight++;
    book.sending(opts.shard, 1);
    const target = recipients.target(job.row.chatId);
    const gen = state.gen;
    const sentAt = clock.now();
    job.firstSentAt ??= sentAt;
    const done = (result: SendResult) => dispatch(self, { type: 'sendDone', chatId: c.id, rowId: job.row.id, result, gen });
    // A synchronous throw from the client becomes a rejection, handled below like any other.
    const p = new Promise<unknown>((resolve) => {
      resolve(
        part.method === 'sendMessage'
          ? telegram.sendMessage(target, part.text, part.parseMode)
          : part.method === 'sendPhoto'
            ? telegram.sendPhoto(target, part.item)
            : telegram.sendMediaGroup(target, part.items),
      );
    });
    p.then(
      () => {
        const answeredAt = clock.now();
        m.calls.inc({ method: part.method, result: 'ok' });
        m.callLatency.observe({ method: part.method }, (answeredAt - sentAt) / 1000);
        done({ ok: true, sentAt, answeredAt, chatRes, globalRes });
      },
      (e: unknown) => {
        const answeredAt = clock.now();
        const error = e instanceof TelegramApiError ? e : new TelegramTransient(part.method, 0, describeError(e), 'network');
        m.calls.inc({ method: part.method, result: error.code });
        m.callLatency.observe({ method: part.method }, (answeredAt - sentAt) / 1000);
        if (!done({ ok: false, error, sentAt, answeredAt, chatRes, globalRes })) gate.settle(globalRes, answeredAt);
      },
    );
  };

  /** Carries out the policy's decision for a failed send. */
  const apply = (state: SenderState, c: Chat, job: Job, a: Action, now: number, answeredAt = now): void => {
    switch (a.kind) {
      case 'throttled': {
        state.counts.throttled[a.scope]++;
        m.throttled.inc({ ...shardLabel, scope: a.scope });
        c.pausedUntil = a.until;
        c.pauseKind = 'rate';
        if (a.clampedFromMs !== undefined)
          log.warn({ chatId: c.id, retryAfterMs: a.clampedFromMs, clampedToMs: a.retryAfterMs }, 'retry_after above TELEGRAM_MAX_RETRY_AFTER_MS: clamped');
        if (a.scope === 'global') {
          log.warn({ retryAfterMs: a.retryAfterMs }, 'bot-wide flood control: pausing all sends, lowering the bot rate');
          gate.pause(a.until);
          deps.onBotFlood(a.until, answeredAt);
        } else {
          const rate = state.limiter.throttled(c.id, now);
          log.info({ chatId: c.id, retryAfterMs: a.retryAfterMs, rate }, `${a.scope} rate-limited by Telegram: waiting, rate lowered`);
        }
        return;
      }
      case 'migrate':
        recipients.markMigrated(job.row.chatId, a.newChatId, a.note);
        deps.publishRecipientChanged(job.row.chatId, 'migrated', a.newChatId);
        job.notes.push(a.note);
        return;
      case 'plainText':
        job.parts = asPlainText(job.parts!, job.done);
        job.plain = true;
        job.notes.push(a.note);
        emit({ id: job.row.id, kind: 'progress', progress: progressOf(job)!, notes: notes(job) });
        return;
      case 'split':
        job.parts = splitPart(job.parts!, job.done);
        job.notes.push(a.note);
        return;
      case 'failRecipient':
        recipients.markUnreachable(job.row.chatId, a.reason, a.description, a.code);
        deps.publishRecipientChanged(job.row.chatId, a.reason, null);
        job.attempts++;
        failJob(state, c, job, a.code, a.description);
        return;
      case 'halt':
        // The token is wrong: no message can go out. Stop everyone, loudly; keep the rows.
        log.fatal(a.reason);
        gate.pause(a.until);
        c.pausedUntil = a.until;
        c.pauseKind = 'retry';
        return;
      case 'retry':
        job.attempts++;
        job.retryCount++;
        state.counts.retried++;
        m.retried.inc(shardLabel);
        c.pausedUntil = a.at;
        c.pauseKind = 'retry';
        emit({
          id: job.row.id,
          kind: 'retry',
          attempts: job.attempts,
          retryCount: job.retryCount,
          nextAttemptAt: a.at,
          code: a.code,
          reason: a.reason,
          progress: progressOf(job),
        });
        return;
      case 'fail':
        job.attempts++;
        failJob(state, c, job, a.code, a.reason);
        return;
      default:
        return assertNever(a);
    }
  };

  const onSendDone = (state: SenderState, c: Chat, job: Job, result: SendResult): void => {
    if (result.ok) {
      job.done++;
      if (job.done >= job.parts!.length) succeed(state, c, job);
      else if (job.parts!.length > 1) emit({ id: job.row.id, kind: 'progress', progress: progressOf(job)! });
      return;
    }
    const now = clock.now();
    const view = { now, chatNearLimit: state.limiter.nearLimit(c.id, result.sentAt), flood: opts.flood.state };
    const part = job.parts![job.done]!;
    const action = decide(
      result.error,
      {
        chatId: c.id,
        part: { method: part.method, textLength: part.method === 'sendMessage' ? part.text.length : undefined },
        plain: job.plain,
        attempts: job.attempts,
      },
      policyLimits,
      view,
    );
    if (action.kind === 'throttled') opts.flood.state = action.flood;
    apply(state, c, job, action, now, result.answeredAt);
  };

  const maybeFinishDrain = (state: SenderState): void => {
    if (!state.draining || state.draining.done || state.inFlight > 0) return;
    for (const c of state.chats.values()) if (c.phase === 'sending' || c.phase === 'planning') return;
    let released = 0;
    for (const c of state.chats.values()) {
      for (const job of c.queue) {
        emit({ id: job.row.id, kind: 'release' });
        released++;
      }
      stopChat(c);
    }
    state.chats.clear();
    book.clearShard(opts.shard);
    state.draining.done = true;
    reply(state.draining.replyTo, { released, windows: state.limiter.handoff(clock.now()) });
  };

  const stopChat = (c: Chat): void => {
    if (c.timer) clearTimeout(c.timer);
    c.timer = undefined;
    c.cancelBid?.();
    c.cancelBid = undefined;
  };

  const status = (state: SenderState): SenderStatus => {
    const now = clock.now();
    let queued = 0;
    let waitingRetry = 0;
    const rateLimited: SenderStatus['rateLimited'] = [];
    for (const c of state.chats.values()) {
      queued += c.queue.length;
      if (c.pausedUntil > now && c.pauseKind === 'rate') rateLimited.push({ chatId: c.id, until: c.pausedUntil });
      if (c.pausedUntil > now && c.pauseKind === 'retry') waitingRetry++;
    }
    const t = state.counts.throttled;
    const lowered = state.limiter
      .lowered()
      .sort((a, b) => a.rate / a.ceiling - b.rate / b.ceiling)
      .slice(0, 20);
    return {
      shard: opts.shard,
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
  };

  return { addRows, schedule, startSend, onSendDone, maybeFinishDrain, stopChat, failJob, status, emit };
}
