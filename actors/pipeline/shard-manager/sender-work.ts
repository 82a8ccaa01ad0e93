import { dispatch, reply, assertNever, type ActorRef, type ReplyTo } from '../../../src/runtime/actor';
import { describeError } from '../../../src/errors';
import type { Reservation } from '../../../src/limits/window';
import type { ChatLimiter } from '../../../src/limits/chat-limits';
import {
  anyAwaitingAnswer,
  fallBackToPlain,
  finishJob as dequeue,
  queueRows,
  splitCurrent,
  stopChat,
  type ChatQueue as Chat,
  type Job,
  type RowLedger,
} from '../../../src/outbox/chat-queues';
import { failedOutcome, progressOutcome, retryOutcome, sentOutcome } from '../../../src/outbox/job-outcomes';
import { asCallError, chatCost, nextStep, policyJob, sendPart, timerDelay } from '../../../src/outbox/send-step';
import { sendMetrics } from '../../../src/outbox/send-metrics';
import type { OutboxRow, Outcome } from '../../../src/outbox/types';
import type { OutcomeEvent } from '../../../src/nats/payloads';
import { chatRatePerMs, policyLimitsOf, type PipelineDeps } from '../deps';
import { decide, type Action, type ThrottleScope } from '../../../src/telegram/policy';
import type { DrainResult, SenderMsg, SenderOptions, SendResult, SenderStatus } from './sender';
import { senderLeases } from './sender-leases';
import { senderStatus } from './sender-status';

/**
 * The sender's work on its chats, outside its mailbox code: moving a chat forward (plan,
 * wait for its window, bid for a global slot, send), and carrying out what the policy
 * decided for each answer. The actor (sender.ts) owns the state and the messages and
 * calls these; every asynchronous result comes back to it as a message.
 */
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
  /** Rows whose claim lease this process cannot vouch for: asked of the database (one query in flight). */
  unsure: Map<number, number>;
  verifying: boolean;
  /** Chats held back because the shard's lease could not be vouched for (fenced), and the one timer that looks again. */
  shardHeld: Set<number>;
  shardTimer: NodeJS.Timeout | undefined;
}

export function senderWork(deps: PipelineDeps, opts: SenderOptions) {
  const { settings, gate, recipients, telegram, planner, book, clock, log, metrics } = deps;
  const shardLabel = { shard: String(opts.shard) };
  const m = sendMetrics(metrics);
  const policyLimits = policyLimitsOf(settings);
  // The lease checks before each send; they move chats through `schedule` and finish drains (hoisted below).
  const { vouched, onShardCheck, onVerified } = senderLeases(deps, opts, m, {
    schedule: (...a) => schedule(...a),
    maybeFinishDrain: (s) => maybeFinishDrain(s),
  });

  const emit = (outcome: Outcome, event?: OutcomeEvent): void => {
    if (!dispatch(opts.outcomes, { type: 'outcome', outcome, event }))
      log.error({ id: outcome.id }, 'outcome writer is stopped: outcome kept in the database lease only');
  };
  const addRows = (state: SenderState, rows: OutboxRow[], self: ActorRef<SenderMsg>): void => {
    const now = clock.now();
    const { touched, sentAlready } = queueRows(state.chats, state.rows, rows, now, deps.claimLeases.leaseMs);
    for (const [c, n] of touched) book.add(opts.shard, c.id, n);
    for (const c of touched.keys()) schedule(state, c, self);
    // Sent from here before, its `sent` lost to the reaper (a stall past the lease): write it again, do not send it again.
    for (const row of sentAlready) {
      log.warn(
        { id: row.id, chatId: row.chatId, shard: opts.shard },
        'row claimed again after this process sent it: its outcome is written again, not sent twice',
      );
      emit({ id: row.id, kind: 'sent', at: now, attempts: row.attempts + 1, retryCount: row.retryCount });
    }
  };

  const finishJob = (state: SenderState, c: Chat, job: Job, sent = false): void => {
    dequeue(c, state.rows, job, clock.now(), sent);
    book.add(opts.shard, c.id, -1);
  };

  const failJob = (state: SenderState, c: Chat, job: Job, code: string, reason: string): void => {
    state.counts.failed++;
    m.failed.inc({ ...shardLabel, code });
    const { outcome, event } = failedOutcome(job, code, reason, clock.now());
    emit(outcome, event);
    finishJob(state, c, job);
  };

  const succeed = (state: SenderState, c: Chat, job: Job): void => {
    const now = clock.now();
    state.counts.sent++;
    m.sent.inc(shardLabel);
    m.latency.observe((now - job.claimedAt) / 1000);
    m.age.observe(Math.max(0, now - job.row.createdAt) / 1000);
    const { outcome, event } = sentOutcome(job, now);
    emit(outcome, event);
    finishJob(state, c, job, true);
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
      const now = clock.now();
      const step = nextStep(job, () => state.limiter.window(c.id), c.pausedUntil, now);
      if (step.kind === 'plan') {
        c.phase = 'planning';
        const rowId = job.row.id;
        planner.plan({ ...job.row, plainText: job.plain }).then(
          (parts) => dispatch(self, { type: 'planned', chatId: c.id, rowId, parts, gen }),
          (e: unknown) => dispatch(self, { type: 'planned', chatId: c.id, rowId, parts: null, error: describeError(e), gen }),
        );
        return;
      }
      if (step.kind === 'complete') {
        succeed(state, c, job);
        continue;
      }
      if (step.kind === 'settling') return; // its sendDone reschedules
      if (step.kind === 'wait') {
        c.phase = 'waiting';
        c.timer = setTimeout(() => dispatch(self, { type: 'chatReady', chatId: c.id, gen }), timerDelay(step.at, now));
        return;
      }
      if (!vouched(state, c, job, now, self)) return;
      c.pauseKind = 'none';
      c.phase = 'bidding';
      c.bidRowId = job.row.id;
      c.cancelBid = gate.request({
        priority: job.row.priority,
        backlogMs: c.queue.length / chatRatePerMs(settings, c.id),
        readySince: now,
        cost: step.cost,
        grant: (reservation) => {
          if (!dispatch(self, { type: 'granted', chatId: c.id, reservation, gen })) gate.cancel(reservation);
        },
      });
      return;
    }
  };

  const startSend = (state: SenderState, c: Chat, globalRes: Reservation, self: ActorRef<SenderMsg>): void => {
    const job = c.queue[0]!;
    // Asked again right before the dispatch: the grant may have come long after the bid (or after a freeze).
    if (!vouched(state, c, job, clock.now(), self)) {
      gate.cancel(globalRes);
      return;
    }
    const part = job.parts![job.done]!;
    const window = state.limiter.window(c.id);
    const chatRes = window.reserve(chatCost(part, window.current.count));
    c.phase = 'sending';
    state.inFlight++;
    book.sending(opts.shard, 1);
    const target = recipients.target(job.row.chatId);
    const gen = state.gen;
    const sentAt = clock.now();
    job.firstSentAt ??= sentAt;
    log.debug({ id: job.row.id, chatId: c.id, shard: opts.shard, at: sentAt }, 'dispatching'); // who sent what, when (tests of freezes)
    const done = (result: SendResult) => dispatch(self, { type: 'sendDone', chatId: c.id, rowId: job.row.id, result, gen });
    const p = sendPart(telegram, target, part);
    p.then(
      () => {
        const answeredAt = clock.now();
        m.calls.inc({ method: part.method, result: 'ok' });
        m.callLatency.observe({ method: part.method }, (answeredAt - sentAt) / 1000);
        done({ ok: true, sentAt, answeredAt, chatRes, globalRes });
      },
      (e: unknown) => {
        const answeredAt = clock.now();
        const error = asCallError(part.method, e);
        m.calls.inc({ method: part.method, result: error.code });
        m.callLatency.observe({ method: part.method }, (answeredAt - sentAt) / 1000);
        if (!done({ ok: false, error, sentAt, answeredAt, chatRes, globalRes })) gate.settle(globalRes, answeredAt);
      },
    );
  };

  /** Carries out the policy's decision for a failed send. */
  const apply = (state: SenderState, c: Chat, job: Job, a: Action, now: number, answeredAt = now, sentAt = now): void => {
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
          const rate = state.limiter.throttled(c.id, now, sentAt);
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
        fallBackToPlain(job, a.note);
        emit(progressOutcome(job, true));
        return;
      case 'split':
        splitCurrent(job, a.note);
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
        emit(retryOutcome(job, a.at, a.code, a.reason));
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
      else if (job.parts!.length > 1) emit(progressOutcome(job, false));
      return;
    }
    const now = clock.now();
    const view = { now, chatNearLimit: state.limiter.nearLimit(c.id, result.sentAt), flood: opts.flood.state };
    const action = decide(result.error, policyJob(c.id, job), policyLimits, view);
    if (action.kind === 'throttled') opts.flood.state = action.flood;
    apply(state, c, job, action, now, result.answeredAt, result.sentAt);
  };

  const maybeFinishDrain = (state: SenderState): void => {
    if (!state.draining || state.draining.done || state.inFlight > 0) return;
    if (anyAwaitingAnswer(state.chats.values())) return;
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

  const status = (state: SenderState): SenderStatus => senderStatus(state, clock.now());

  return { addRows, schedule, startSend, onSendDone, onVerified, onShardCheck, maybeFinishDrain, failJob, status, emit };
}
