import { randomBytes } from 'node:crypto';
import type { JetStreamClient } from 'nats';
import { AppError } from '../errors';
import { encodeJson } from '../nats/codec';
import type { ViewEvent } from '../nats/ads-payloads';

/**
 * Micro-batches the gateway's view events: every view added within `lingerMs` (default
 * 1 ms), at most `maxViews` (default 256), goes to JetStream as ONE ViewBatch message,
 * and every `add()` resolves when that message is acked (so each request still answers
 * 202 only once its view is stored). Why: one JetStream publish per beacon costs the
 * gateway and nats-server more CPU than the rest of the request; batching divides it.
 * A failed publish is retried once with the same msgID (the stream stores it once),
 * then every `add()` of the batch rejects with UNAVAILABLE.
 */
export class ViewBatcher {
  private views: ViewEvent[] = [];
  private waiters: Array<{ resolve: () => void; reject: (e: unknown) => void }> = [];
  private timer: NodeJS.Timeout | undefined;
  private readonly lingerMs: number;
  private readonly maxViews: number;
  private readonly timeoutMs: number;

  constructor(
    private readonly js: JetStreamClient,
    private readonly subject: string,
    opts: { lingerMs?: number; maxViews?: number; timeoutMs: number },
  ) {
    this.lingerMs = opts.lingerMs ?? 1;
    this.maxViews = opts.maxViews ?? 256;
    this.timeoutMs = opts.timeoutMs;
  }

  add(view: ViewEvent): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.views.push(view);
      this.waiters.push({ resolve, reject });
      if (this.views.length >= this.maxViews) this.send();
      else this.timer ??= setTimeout(() => this.send(), this.lingerMs);
    });
  }

  private send(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    const views = this.views;
    const waiters = this.waiters;
    this.views = [];
    this.waiters = [];
    if (views.length === 0) return;
    const data = encodeJson({ views });
    const msgID = randomBytes(12).toString('hex');
    const publish = (): Promise<unknown> => this.js.publish(this.subject, data, { msgID, timeout: this.timeoutMs });
    publish()
      .catch(() => publish())
      .then(
        () => {
          for (const w of waiters) w.resolve();
        },
        (e: unknown) => {
          const err = new AppError('UNAVAILABLE', 'the view was not stored (JetStream did not acknowledge it); retry', undefined, { cause: e });
          for (const w of waiters) w.reject(err);
        },
      );
  }
}
