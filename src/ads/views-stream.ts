import { createHash } from 'node:crypto';
import {
  AckPolicy,
  DeliverPolicy,
  RetentionPolicy,
  StorageType,
  nanos,
  type JetStreamManager,
  type NatsError,
  type StreamConfig,
  type ConsumerConfig,
} from 'nats';
import type { AdsConfig } from '../config/ads';
import { Subjects } from '../nats/subjects';
import { assertStreamMatches } from '../nats/streams';

/**
 * The view events' JetStream stream and the counters' durable consumer.
 *
 * Work-queue retention: an acked view leaves the stream. Publisher retries are
 * deduplicated by msgID within `viewDuplicateWindowMs`. The consumer's
 * `max_ack_pending` is twice VIEW_FLUSH_MAX so a counter can fill a whole batch while
 * the previous one commits; the server stops delivering beyond it (back-pressure).
 */
export interface ViewsStreamNames {
  stream: string;
  consumer: string;
  subjects: string;
}

export function viewsStreamNames(c: Pick<AdsConfig, 'viewsStream' | 'viewsConsumer' | 'subjectPrefix'>): ViewsStreamNames {
  return { stream: c.viewsStream, consumer: c.viewsConsumer, subjects: Subjects.adsViewsAll(c.subjectPrefix) };
}

function apiErrCode(e: unknown): number | undefined {
  return (e as NatsError | undefined)?.api_error?.err_code;
}

/**
 * Creates the stream with NATS_REPLICAS replicas. An existing stream whose replicas, max
 * age (VIEW_STREAM_MAX_AGE) or subjects (NATS_SUBJECT_PREFIX) differ is a start-up error
 * (NATS_STREAM_MISMATCH, with the migration step); only the publisher dedup window is
 * brought in line in place. Idempotent; safe from several processes.
 */
export async function ensureViewsStream(jsm: JetStreamManager, c: AdsConfig): Promise<void> {
  const n = viewsStreamNames(c);
  const want: Partial<StreamConfig> = {
    name: n.stream,
    subjects: [n.subjects],
    retention: RetentionPolicy.Workqueue,
    storage: StorageType.File,
    max_age: nanos(c.viewStreamMaxAgeMs),
    duplicate_window: nanos(c.viewDuplicateWindowMs),
    num_replicas: c.natsReplicas,
  };
  const check = (have: StreamConfig): void => {
    assertStreamMatches(have, {
      stream: n.stream,
      what: 'views stream',
      replicas: c.natsReplicas,
      maxAgeMs: c.viewStreamMaxAgeMs,
      maxAgeVar: 'VIEW_STREAM_MAX_AGE',
      subjects: [n.subjects],
      subjectsVar: 'NATS_SUBJECT_PREFIX',
    });
  };
  try {
    const info = await jsm.streams.info(n.stream);
    check(info.config);
    if (info.config.duplicate_window !== want.duplicate_window) await jsm.streams.update(n.stream, { duplicate_window: nanos(c.viewDuplicateWindowMs) });
  } catch (e) {
    if (apiErrCode(e) !== 10059) throw e; // 10059: stream not found
    try {
      await jsm.streams.add(want);
    } catch (e2) {
      if (apiErrCode(e2) !== 10058) throw e2; // another process created it meanwhile
      check((await jsm.streams.info(n.stream)).config);
    }
  }
}

/** Creates (or updates) the shared durable pull consumer. */
export async function ensureViewsConsumer(jsm: JetStreamManager, c: AdsConfig): Promise<void> {
  const n = viewsStreamNames(c);
  const want: Partial<ConsumerConfig> = {
    durable_name: n.consumer,
    ack_policy: AckPolicy.Explicit,
    deliver_policy: DeliverPolicy.All,
    ack_wait: nanos(c.viewAckWaitMs),
    max_ack_pending: Math.max(1_000, 2 * c.viewFlushMax),
    max_deliver: -1,
  };
  try {
    const info = await jsm.consumers.info(n.stream, n.consumer);
    if (info.config.ack_wait !== want.ack_wait || info.config.max_ack_pending !== want.max_ack_pending) {
      await jsm.consumers.update(n.stream, n.consumer, { ack_wait: want.ack_wait!, max_ack_pending: want.max_ack_pending! });
    }
  } catch (e) {
    if (apiErrCode(e) !== 10014) throw e; // 10014: consumer not found
    await jsm.consumers.add(n.stream, want);
  }
}

/** Salted visitor hash: 16 bytes of SHA-256 over salt, client IP and optional visitor id, as 32 hex characters. */
export function visitorHash(salt: string, ip: string, visitorId?: string): string {
  return createHash('sha256')
    .update(`${salt}\u0000${ip}\u0000${visitorId ?? ''}`)
    .digest('hex')
    .slice(0, 32);
}

/** The dedup window number of a view at `tsMs`. */
export function windowOf(tsMs: number, windowMs: number): number {
  return Math.floor(tsMs / windowMs);
}

/** Identity of one unique view (ad, visitor, dedup window): the counter's in-memory dedup key and the msgID of single-view publishes. */
export function viewMsgId(adId: number, visitor: string, window: number): string {
  return `${adId}.${visitor}.${window}`;
}
