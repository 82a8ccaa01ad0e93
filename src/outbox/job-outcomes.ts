import type { OutcomeEvent } from '../nats/payloads';
import type { Job } from './chat-queues';
import type { Outcome, Progress } from './types';

/**
 * What a sender reports for a job: the outcome the writer persists and, for a final
 * outcome, the event published to subscribers. Pure: the caller passes the clock reading.
 */

/** The progress worth recording: only once parts were accepted or the job fell back to plain text. */
export function progressOf(job: Job): Progress | undefined {
  return job.done > 0 || job.plain ? { done: job.done, total: job.parts?.length ?? 0, ...(job.plain ? { plain: true } : {}) } : undefined;
}

/** The job's notes (re-plans, migrations) as one string, or undefined when there are none. */
export function notesOf(job: Job): string | undefined {
  return job.notes.join('; ') || undefined;
}

/** Telegram accepted the job's last part at `now`: this attempt counts. */
export function sentOutcome(job: Job, now: number): { outcome: Outcome; event: OutcomeEvent } {
  return {
    outcome: {
      id: job.row.id,
      kind: 'sent',
      at: now,
      attempts: job.attempts + 1,
      retryCount: job.retryCount,
      notes: notesOf(job),
      progress: job.parts && job.parts.length > 1 ? progressOf(job) : undefined,
    },
    event: { id: job.row.id, chat_id: job.row.chatId, status: 'sent', attempts: job.attempts + 1, latency_ms: now - job.row.createdAt },
  };
}

/** The job failed for good at `now` (its attempts already counted by the caller). */
export function failedOutcome(job: Job, code: string, reason: string, now: number): { outcome: Outcome; event: OutcomeEvent } {
  return {
    outcome: {
      id: job.row.id,
      kind: 'failed',
      at: now,
      attempts: job.attempts,
      retryCount: job.retryCount,
      code,
      reason,
      notes: notesOf(job),
      progress: progressOf(job),
    },
    event: {
      id: job.row.id,
      chat_id: job.row.chatId,
      status: 'failed',
      error_code: code,
      error: reason,
      attempts: job.attempts,
      latency_ms: now - job.row.createdAt,
    },
  };
}

/** A transient failure: the job waits in memory until `at` (its attempts already counted by the caller). */
export function retryOutcome(job: Job, at: number, code: string, reason: string): Outcome {
  return { id: job.row.id, kind: 'retry', attempts: job.attempts, retryCount: job.retryCount, nextAttemptAt: at, code, reason, progress: progressOf(job) };
}

/** Parts accepted so far (or a fall-back to plain text), so a retry resends only the rest. */
export function progressOutcome(job: Job, withNotes: boolean): Outcome {
  return { id: job.row.id, kind: 'progress', progress: progressOf(job)!, ...(withNotes ? { notes: notesOf(job) } : {}) };
}
