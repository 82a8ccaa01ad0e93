/**
 * The delivery pipeline's NATS subjects (src/nats/subjects.ts): wake-ups and recipient changes
 * in, the `notify-worker` service's `enqueue` and `status` endpoints. Every payload is decoded
 * and validated at the one NATS edge (NatsIntake); a refusal is counted under its code.
 */
import { Type } from '@sinclair/typebox';
import type { Service } from 'nats';
import type { Logger } from '../log';
import type { Metrics } from '../metrics';
import type { SubjectSet } from '../nats/subjects';
import { decoder, type Decoder } from '../nats/codec';
import { orEmpty, type NatsIntake } from '../nats/intake';
import { RecipientChanged, WakeEvent, type EnqueueReply } from '../nats/payloads';
import { decodeEnqueue, enqueue } from './enqueue';
import type { OutboxRepository } from './repository';
import type { RecipientDirectory } from './recipients';
import { AppError, describeError, isAppError } from '../errors';
import { dbErrorFields } from '../db/error-fields';

export interface PipelineSubjectsOptions {
  intake: NatsIntake;
  service: Service;
  subjects: SubjectSet;
  instanceId: string;
  /** A wake-up for one shard (or all): the pipeline's claimer looks at the outbox now. */
  wake: (shard?: number) => void;
  repo: OutboxRepository;
  recipients: RecipientDirectory;
  log: Logger;
  metrics: Metrics;
  /** Publishes without throwing (a failure is logged). */
  publish: (subject: string, payload: unknown) => void;
  /** What `notify.status.<instance>` answers. */
  status: () => Promise<unknown>;
}

/** Subscribes and serves; the intake drains them all on stop. */
export function servePipelineSubjects(o: PipelineSubjectsOptions): void {
  const { intake, service, subjects, instanceId, wake, repo, recipients, log, metrics, publish, status } = o;
  const mEnqueued = metrics.counter('notifications_enqueued_total', 'Notifications enqueued over NATS', ['result']);
  const mBadInput = metrics.counter('nats_bad_payloads_total', 'NATS payloads rejected at the edge', ['subject', 'code']);

  // ---- NATS: wake-ups and recipient changes ---------------------------------------
  intake.listen(subjects.wakeAll, decodeWake, (w) => wake(w.shard), { label: 'notify.wake' });
  // Each refused event is logged on its own line (the intake's warning is one per code per 10 s).
  const loggedDecodeRecipient = onReject(decodeRecipient, (e) =>
    log.warn({ code: isAppError(e) ? e.code : 'INTERNAL', err: describeError(e) }, 'bad recipient event ignored'),
  );
  intake.listen(subjects.recipientChanged, loggedDecodeRecipient, (r) => {
    // The database decides; the event only says which chat to look at again.
    recipients.refresh(r.chat_id).then(
      (stored) => {
        if (stored !== r.status) {
          mBadInput.inc({ subject: subjects.recipientChanged, code: 'RECIPIENT_MISMATCH' });
          log.warn(
            { chatId: r.chat_id, announced: r.status, stored, code: 'RECIPIENT_MISMATCH' },
            'recipient event does not match the database; the database state applies',
          );
        }
      },
      (e: unknown) =>
        log.warn(
          { chatId: r.chat_id, code: 'UNAVAILABLE', ...dbErrorFields(e) },
          'recipient event not applied: the database could not be read; the cached state stays',
        ),
    );
  });

  // ---- NATS service: enqueue + status ---------------------------------------------
  // A refusal is counted under its code, as a bad payload is by the intake.
  const countedDecode = onReject(decodeEnqueue, () => mEnqueued.inc({ result: 'rejected' }));
  intake.serveEndpoint(
    service,
    'enqueue',
    subjects.enqueue,
    countedDecode,
    async (req): Promise<EnqueueReply> => {
      try {
        const res = await enqueue(repo, req, log);
        mEnqueued.inc({ result: res.duplicate ? 'duplicate' : 'inserted' });
        if (!res.duplicate) publish(subjects.wake(res.shard), { shard: res.shard, id: res.id });
        return { ok: true, ...res };
      } catch (e) {
        // `enqueue` throws only AppErrors with codes a producer may see (and logs the rest itself).
        const err = isAppError(e) ? e : new AppError('INTERNAL', 'internal error: the notification was not stored; retry');
        mEnqueued.inc({ result: 'rejected' });
        mBadInput.inc({ subject: subjects.enqueue, code: err.code });
        return { ok: false, error: { code: err.code, message: err.message } };
      }
    },
    { metadata: { payload: 'EnqueueRequest JSON', reply: 'EnqueueReply JSON' } },
  );
  intake.serveEndpoint(
    service,
    'status',
    subjects.status(instanceId),
    decodeStatus,
    () =>
      status().catch((e: unknown) => {
        throw isAppError(e) ? e : new AppError('INTERNAL', describeError(e));
      }),
    { label: subjects.status('<instance>') },
  );
}

const decodeWake = decoder(WakeEvent, { maxBytes: 1024 });
const decodeRecipient = decoder(RecipientChanged, { maxBytes: 1024 });
/** `notify.status.*` takes nothing (any JSON object is accepted and ignored). */
const decodeStatus = orEmpty(decoder(Type.Object({}), { maxBytes: 1024 }), {});

/** A decoder that also reports each payload it refuses (the intake then counts and answers it). */
function onReject<T>(decode: Decoder<T>, seen: (e: unknown) => void): Decoder<T> {
  const fn = (data: Uint8Array): T => {
    try {
      return decode(data);
    } catch (e) {
      seen(e);
      throw e;
    }
  };
  return Object.assign(fn, { schema: decode.schema });
}
