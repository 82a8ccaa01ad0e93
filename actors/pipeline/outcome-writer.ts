import { spawn, reply, dispatch, assertNever, Supervision, type ActorRef, type Parent, type ReplyTo } from '../../src/runtime/actor';
import { dbErrorFields } from '../../src/db/error-fields';
import { isDataError, minimalOutcome } from '../../src/outbox/repository';
import type { Outcome } from '../../src/outbox/types';
import type { OutcomeEvent } from '../../src/nats/payloads';
import type { PipelineDeps } from './deps';

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
  | { type: 'flush'; replyTo: ReplyTo<{ written: number }> };

/**
 * The queue lives outside the actor's state on purpose: a restart (which re-runs
 * `init`) must not forget outcomes of messages Telegram already accepted.
 */
export class OutcomeQueue {
  items: Array<{ outcome: Outcome; event?: OutcomeEvent | undefined }> = [];
  written = 0;
  lostOwnership = 0;
  statements = 0;
}

export interface OutcomeWriterState {
  timer: NodeJS.Timeout | undefined;
  failures: number;
}

export function spawnOutcomeWriter(parent: Parent, deps: PipelineDeps, queue: OutcomeQueue): ActorRef<OutcomeWriterMsg> {
  const { settings, repo, log, metrics } = deps;
  const written = metrics.counter('outbox_outcomes_written_total', 'Outcomes written back to the outbox', ['kind']);
  const batches = metrics.histogram('outbox_outcome_batch_size', 'Outcomes per UPDATE statement', [], [1, 5, 10, 50, 100, 250, 500, 1000, 5000]);
  const writeErrors = metrics.counter('outbox_outcome_write_errors_total', 'Failed outcome batch writes (retried)');
  const deadLettered = metrics.counter('outbox_outcomes_dead_lettered_total', 'Outcomes the database refused for their data: written state-only, or dropped', ['kind', 'result']);

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
          log.warn({ id: item.outcome.id, kind: item.outcome.kind, ...dbErrorFields(e) }, 'outcome refused by the database; wrote its state change without notes or reason');
          return;
        } catch (e2) {
          if (!isDataError(e2)) throw e2;
        }
      }
      deadLettered.inc({ kind: item.outcome.kind, result: 'dropped' });
      log.error({ id: item.outcome.id, kind: item.outcome.kind, ...dbErrorFields(e) }, 'outcome refused by the database and dropped; the row stays claimed until its lease is reaped');
    }
  };

  const flush = async (state: OutcomeWriterState): Promise<number> => {
    let total = 0;
    while (queue.items.length > 0) {
      const batch = queue.items.slice(0, Math.max(1, settings.outcomeFlushMax));
      try {
        const n = await repo.writeOutcomes(batch.map((b) => b.outcome));
        queue.items.splice(0, batch.length);
        state.failures = 0;
        committed(batch, n);
        total += batch.length;
      } catch (e) {
        if (isDataError(e)) {
          // One outcome's values were refused: the batch must not die for it. Write them one by one.
          log.warn({ batch: batch.length, ...dbErrorFields(e) }, 'outcome batch refused for its data; writing its outcomes one by one');
          try {
            for (const item of batch) {
              await writeAlone(item);
              queue.items.shift();
              total++;
            }
            state.failures = 0;
            continue;
          } catch (e2) {
            e = e2;
          }
        }
        state.failures++;
        writeErrors.inc();
        log.error({ ...dbErrorFields(e), batch: batch.length, failures: state.failures }, 'outcome batch write failed; will retry');
        throw e;
      }
    }
    return total;
  };

  return spawn<OutcomeWriterState, OutcomeWriterMsg>(parent, {
    name: 'outcome-writer',
    supervision: Supervision.restartWithBackoff({ minBackoffMs: 50, maxBackoffMs: 5_000 }),
    init: () => ({ timer: undefined, failures: 0 }),
    afterStop: (state) => {
      if (state.timer) clearTimeout(state.timer);
    },
    receive: async (state, msg, ctx) => {
      switch (msg.type) {
        case 'outcome':
          queue.items.push({ outcome: msg.outcome, event: msg.event });
          if (queue.items.length >= settings.outcomeFlushMax) {
            try {
              await flush(state);
            } catch {
              schedule(state, ctx.self, Math.min(5_000, 100 * 2 ** state.failures));
            }
          } else schedule(state, ctx.self, settings.outcomeFlushMs);
          return state;
        case 'tick':
          try {
            await flush(state);
          } catch {
            schedule(state, ctx.self, Math.min(5_000, 100 * 2 ** state.failures));
          }
          return state;
        case 'flush': {
          let n = 0;
          // Shutdown and recovery need the write to have happened: keep trying (bounded by the caller's timeout).
          for (let attempt = 0; ; attempt++) {
            try {
              n = await flush(state);
              break;
            } catch {
              if (attempt >= 10) break;
              await new Promise((r) => setTimeout(r, Math.min(2_000, 100 * 2 ** attempt)));
            }
          }
          reply(msg.replyTo, { written: n });
          return state;
        }
        default:
          return assertNever(msg);
      }
    },
  });
}
