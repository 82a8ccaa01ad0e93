import { spawn, reply, dispatch, assertNever, Supervision, type ActorRef, type Parent, type ReplyTo } from '../../src/runtime/actor';
import { dbErrorFields } from '../../src/db/error-fields';
import { isDataError, minimalOutcome } from '../../src/outbox/repository';
import type { Outcome } from '../../src/outbox/types';
import type { OutcomeEvent } from '../../src/nats/payloads';
import type { PipelineDeps } from './deps';
import { backoffDelay } from '../../src/limits/backoff';

/**
 * Outcome writer: collects the senders' outcomes and writes them back in batches, one
 * UPDATE per batch (every `outcomeFlushMs` or `outcomeFlushMax` outcomes). Events go out
 * only after the batch committed. A failed write keeps the batch and retries; nothing
 * is dropped.
 */
export type OutcomeWriterMsg =
  | { type: 'outcome'; outcome: Outcome; event?: OutcomeEvent | undefined }
  | { type: 'tick' }
  /** Writes everything queued so far, then answers (shutdown, sender recovery). */
  | { type: 'flush'; replyTo: ReplyTo<{ written: number }> }
  /** A write pass ended (it runs outside the mailbox). */
  | { type: 'written'; error?: unknown };

/**
 * The queue lives outside the actor's state on purpose: a restart (which re-runs
 * `init`) must not forget outcomes of messages Telegram already accepted.
 */
export class OutcomeQueue {
  items: Array<{ outcome: Outcome; event?: OutcomeEvent | undefined }> = [];
  written = 0;
  /** Outcomes ever queued, and ever taken off the queue (written or dead-lettered): `flush` waits on these. */
  queued = 0;
  done = 0;
  lostOwnership = 0;
  statements = 0;
}

export interface OutcomeWriterState {
  timer: NodeJS.Timeout | undefined;
  failures: number;
  /** A write pass is running (outside the mailbox); one at a time. */
  writing: boolean;
  /** `flush` queries: answered once every outcome queued before them is off the queue (or after 10 failed passes). */
  waiters: Array<{ replyTo: ReplyTo<{ written: number }>; until: number; doneAt: number; failedPasses: number }>;
}

/** Failed write passes a `flush` waits through before it answers with what was written (recovery must go on). */
const FLUSH_MAX_FAILED_PASSES = 10;

export function spawnOutcomeWriter(parent: Parent, deps: PipelineDeps, queue: OutcomeQueue): ActorRef<OutcomeWriterMsg> {
  const { settings, repo, log, metrics } = deps;
  const written = metrics.counter('outbox_outcomes_written_total', 'Outcomes written back to the outbox', ['kind']);
  const batches = metrics.histogram('outbox_outcome_batch_size', 'Outcomes per UPDATE statement', [], [1, 5, 10, 50, 100, 250, 500, 1000, 5000]);
  const writeErrors = metrics.counter('outbox_outcome_write_errors_total', 'Failed outcome batch writes (retried)');
  const deadLettered = metrics.counter('outbox_outcomes_dead_lettered_total', 'Outcomes the database refused for their data: written state-only, or dropped', [
    'kind',
    'result',
  ]);

  const schedule = (state: OutcomeWriterState, self: ActorRef<OutcomeWriterMsg>, delayMs: number): void => {
    if (state.timer) return;
    state.timer = setTimeout(() => {
      state.timer = undefined;
      dispatch(self, { type: 'tick' });
    }, delayMs);
  };

  /** After a batch committed: counters, the lost-ownership check, the events. */
  const committed = (batch: OutcomeQueue['items'], n: number): void => {
    queue.statements++;
    const distinct = new Set(batch.map((b) => b.outcome.id)).size;
    if (n < distinct) {
      // Rows another process took over after our lease lapsed: theirs now.
      queue.lostOwnership += distinct - n;
      log.warn({ expected: distinct, written: n }, 'some outcomes were not ours any more (lease lost)');
    }
    batches.observe(batch.length);
    for (const b of batch) {
      written.inc({ kind: b.outcome.kind });
      if (b.event) deps.publishOutcome(b.event);
      deps.observeOutcome?.(b.outcome, b.event?.chat_id);
    }
    queue.written += batch.length;
  };

  /**
   * One outcome MariaDB refused for its data (the batch it was in failed with a data error):
   * written alone, then with its state change only (no notes, reason, progress), then
   * dead-lettered — logged with its id and codes and counted — so it never blocks the queue.
   */
  const writeAlone = async (item: OutcomeQueue['items'][number]): Promise<void> => {
    try {
      committed([item], await repo.writeOutcomes([item.outcome]));
      return;
    } catch (e) {
      if (!isDataError(e)) throw e;
      const minimal = minimalOutcome(item.outcome);
      if (minimal) {
        try {
          committed([{ outcome: minimal, event: item.event }], await repo.writeOutcomes([minimal]));
          deadLettered.inc({ kind: item.outcome.kind, result: 'state_only' });
          log.warn(
            { id: item.outcome.id, kind: item.outcome.kind, ...dbErrorFields(e) },
            'outcome refused by the database; wrote its state change without notes or reason',
          );
          return;
        } catch (e2) {
          if (!isDataError(e2)) throw e2;
        }
      }
      deadLettered.inc({ kind: item.outcome.kind, result: 'dropped' });
      log.error(
        { id: item.outcome.id, kind: item.outcome.kind, ...dbErrorFields(e) },
        'outcome refused by the database and dropped; the row stays claimed until its lease is reaped',
      );
    }
  };

  /** Writes the queue in batches until it is empty; throws on a failure that is not one outcome's data. */
  const flush = async (): Promise<number> => {
    let total = 0;
    while (queue.items.length > 0) {
      const batch = queue.items.slice(0, Math.max(1, settings.outcomeFlushMax));
      try {
        const n = await repo.writeOutcomes(batch.map((b) => b.outcome));
        queue.items.splice(0, batch.length);
        queue.done += batch.length;
        committed(batch, n);
        total += batch.length;
      } catch (batchError) {
        let e = batchError;
        if (isDataError(e)) {
          // One outcome's values were refused: the batch must not die for it. Write them one by one.
          log.warn({ batch: batch.length, ...dbErrorFields(e) }, 'outcome batch refused for its data; writing its outcomes one by one');
          try {
            for (const item of batch) {
              await writeAlone(item);
              queue.items.shift();
              queue.done++;
              total++;
            }
            continue;
          } catch (e2) {
            e = e2;
          }
        }
        writeErrors.inc();
        log.error({ ...dbErrorFields(e), batch: batch.length }, 'outcome batch write failed; will retry');
        throw e;
      }
    }
    return total;
  };

  /** Starts a write pass outside the mailbox, unless one runs; its end comes back as `written`. */
  const startPass = (state: OutcomeWriterState, self: ActorRef<OutcomeWriterMsg>): void => {
    if (state.writing) return;
    if (state.timer) clearTimeout(state.timer);
    state.timer = undefined;
    state.writing = true;
    flush().then(
      () => dispatch(self, { type: 'written' }),
      (error: unknown) => dispatch(self, { type: 'written', error }),
    );
  };

  const answerWaiters = (state: OutcomeWriterState): void => {
    state.waiters = state.waiters.filter((w) => {
      if (queue.done < w.until && w.failedPasses < FLUSH_MAX_FAILED_PASSES) return true;
      reply(w.replyTo, { written: queue.done - w.doneAt });
      return false;
    });
  };

  return spawn<OutcomeWriterState, OutcomeWriterMsg>(parent, {
    name: 'outcome-writer',
    supervision: Supervision.restartWithBackoff({ minBackoffMs: 50, maxBackoffMs: 5_000 }),
    init: () => ({ timer: undefined, failures: 0, writing: false, waiters: [] }),
    afterStop: (state) => {
      if (state.timer) clearTimeout(state.timer);
    },
    // Writes run outside the mailbox: senders' outcomes are queued while a batch is written.
    receive: (state, msg, ctx) => {
      switch (msg.type) {
        case 'outcome':
          queue.items.push({ outcome: msg.outcome, event: msg.event });
          queue.queued++;
          if (queue.items.length >= settings.outcomeFlushMax) startPass(state, ctx.self);
          else schedule(state, ctx.self, settings.outcomeFlushMs);
          return state;
        case 'tick':
          if (queue.items.length > 0) startPass(state, ctx.self);
          return state;
        case 'flush':
          state.waiters.push({ replyTo: msg.replyTo, until: queue.queued, doneAt: queue.done, failedPasses: 0 });
          if (queue.done >= queue.queued) answerWaiters(state);
          else startPass(state, ctx.self);
          return state;
        case 'written':
          state.writing = false;
          if (msg.error === undefined) {
            state.failures = 0;
            answerWaiters(state);
            // Outcomes that arrived during the pass: at once if a batch is full or someone waits, else on the timer.
            if (queue.items.length >= settings.outcomeFlushMax || state.waiters.length > 0) startPass(state, ctx.self);
            else if (queue.items.length > 0) schedule(state, ctx.self, settings.outcomeFlushMs);
            return state;
          }
          state.failures++;
          for (const w of state.waiters) w.failedPasses++;
          answerWaiters(state);
          schedule(state, ctx.self, backoffDelay(state.failures, 200, 5_000));
          return state;
        default:
          return assertNever(msg);
      }
    },
  });
}
