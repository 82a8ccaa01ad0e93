import { strict as assert } from 'node:assert';
import { newJob } from '../../../src/outbox/chat-queues';
import { failedOutcome, notesOf, progressOf, progressOutcome, retryOutcome, sentOutcome } from '../../../src/outbox/job-outcomes';
import type { Part } from '../../../src/outbox/plan';
import { row } from '../../helpers/pipeline-fakes';

const text = (t: string): Part => ({ method: 'sendMessage', text: t, parseMode: null });

/** What a sender reports for a job, at instants the test chooses. */
describe('outbox/job-outcomes', () => {
  const created = 1_000_000;
  const job = (extra: { parts?: Part[]; done?: number; attempts?: number; plain?: boolean; notes?: string[] } = {}) =>
    Object.assign(newJob(row(7, 42, { createdAt: created, retryCount: 1 }), created + 5), { parts: [text('a')], ...extra });

  it('progress is recorded only once parts were accepted or the job went plain', () => {
    assert.equal(progressOf(job()), undefined);
    assert.deepEqual(progressOf(job({ parts: [text('a'), text('b')], done: 1 })), { done: 1, total: 2 });
    assert.deepEqual(progressOf(job({ plain: true })), { done: 0, total: 1, plain: true });
    assert.equal(notesOf(job()), undefined);
    assert.equal(notesOf(job({ notes: ['x', 'y'] })), 'x; y');
  });

  it('sent counts this attempt, keeps progress only for a plan of several parts, and publishes the latency', () => {
    const at = created + 250;
    assert.deepEqual(sentOutcome(job({ attempts: 2, done: 1 }), at), {
      outcome: { id: 7, kind: 'sent', at, attempts: 3, retryCount: 1, notes: undefined, progress: undefined },
      event: { id: 7, chat_id: 42, status: 'sent', attempts: 3, latency_ms: 250 },
    });
    const multi = sentOutcome(job({ parts: [text('a'), text('b')], done: 2, notes: ['split'] }), at).outcome;
    assert.deepEqual(multi, { id: 7, kind: 'sent', at, attempts: 1, retryCount: 1, notes: 'split', progress: { done: 2, total: 2 } });
  });

  it('failed keeps the attempts as counted, the code and the reason', () => {
    const at = created + 40;
    assert.deepEqual(failedOutcome(job({ attempts: 1 }), 'TG_PERMANENT', 'blocked', at), {
      outcome: { id: 7, kind: 'failed', at, attempts: 1, retryCount: 1, code: 'TG_PERMANENT', reason: 'blocked', notes: undefined, progress: undefined },
      event: { id: 7, chat_id: 42, status: 'failed', error_code: 'TG_PERMANENT', error: 'blocked', attempts: 1, latency_ms: 40 },
    });
  });

  it('retry and progress outcomes', () => {
    const j = job({ parts: [text('a'), text('b')], done: 1, attempts: 2, notes: ['plain'] });
    assert.deepEqual(retryOutcome(j, created + 900, 'TG_TRANSIENT', '502'), {
      id: 7,
      kind: 'retry',
      attempts: 2,
      retryCount: 1,
      nextAttemptAt: created + 900,
      code: 'TG_TRANSIENT',
      reason: '502',
      progress: { done: 1, total: 2 },
    });
    assert.deepEqual(progressOutcome(j, false), { id: 7, kind: 'progress', progress: { done: 1, total: 2 } });
    assert.deepEqual(progressOutcome(j, true), { id: 7, kind: 'progress', progress: { done: 1, total: 2 }, notes: 'plain' });
  });
});
