import type { KV, NatsConnection, Subscription } from 'nats';
import type { Logger } from '../log';
import type { Metrics } from '../metrics';
import type { GlobalGate } from '../limits/global-gate';
import type { WindowLimit } from '../limits/window';
import type { SubjectSet } from '../nats/subjects';
import { decoder, encodeJson } from '../nats/codec';
import { BudgetGrant, BudgetFlood } from '../nats/payloads';
import { describeError } from '../errors';
import { leaseHolder } from './lease';

export const COORDINATOR_KEY = 'budget.coordinator';

export interface BudgetClientOptions {
  subjects: SubjectSet;
  nc: NatsConnection;
  kv: KV;
  gate: GlobalGate;
  log: Logger;
  metrics: Metrics;
  holder: string;
  instance: string;
  /** The bot-wide limit for the whole cluster. */
  global: WindowLimit;
  /** Current demand of this process, in sends per window. */
  demand: () => number;
}

/**
 * This process's side of the cluster-wide Telegram budget. The gate runs at the share
 * the coordinator granted until the grant expires; without a grant it sends nothing
 * while a coordinator exists (it may be reassigning our share), and falls back to
 * limit ÷ live processes when there is none. Reports demand; relays bot-wide floods.
 */
export class BudgetClient {
  private share = 0;
  private expiresAt = 0;
  private issuedAt = 0;
  private mode: 'starting' | 'granted' | 'waiting' | 'fallback' = 'starting';
  private subs: Subscription[] = [];
  private timers: NodeJS.Timeout[] = [];
  private coordinatorSeen: { holder: string | undefined; at: number } = { holder: undefined, at: 0 };
  private members = 1;
  private lastDemand = 0;

  constructor(private readonly o: BudgetClientOptions) {}

  get current(): { share: number; mode: string; expiresAt: number; demand: number } {
    return { share: this.share, mode: this.mode, expiresAt: this.expiresAt, demand: this.lastDemand };
  }

  start(): void {
    const { nc, log } = this.o;
    const decodeGrant = decoder(BudgetGrant, { maxBytes: 4096 });
    const decodeFlood = decoder(BudgetFlood, { maxBytes: 1024 });
    const bad = this.o.metrics.counter('nats_bad_payloads_total', 'NATS payloads rejected at the edge', ['subject', 'code']);
    this.setShare(0, 'starting');
    this.subs.push(
      nc.subscribe(this.o.subjects.budgetGrant(this.o.holder), {
        callback: (err, m) => {
          if (err) return;
          try {
            const g = decodeGrant(m.data);
            if (g.issued_at >= this.issuedAt) {
              this.issuedAt = g.issued_at;
              this.expiresAt = g.expires_at;
              this.setShare(g.share, 'granted');
            }
            // When our past sends fit the new share: from then on others may use the difference.
            const freeAt = this.o.gate.heldAtMostAt(this.share);
            m.respond(encodeJson({ ok: true, share: this.share, issued_at: this.issuedAt, free_at: Number.isFinite(freeAt) ? freeAt : null }));
          } catch (e) {
            bad.inc({ subject: 'notify.budget.grant', code: 'BAD_PAYLOAD' });
            m.respond(encodeJson({ ok: false, error: { code: 'BAD_PAYLOAD', message: describeError(e) } }));
          }
        },
      }),
      nc.subscribe(this.o.subjects.budgetFlood, {
        callback: (err, m) => {
          if (err) return;
          try {
            const f = decodeFlood(m.data);
            this.o.gate.pause(f.until);
            log.warn({ until: new Date(f.until).toISOString(), from: f.instance }, 'bot-wide flood control: cluster paused');
          } catch {
            bad.inc({ subject: this.o.subjects.budgetFlood, code: 'BAD_PAYLOAD' });
          }
        },
      }),
    );
    this.timers.push(setInterval(() => this.check(), 100));
    this.timers.push(setInterval(() => this.report(), 250));
    this.timers.push(setInterval(() => void this.refreshView(), 500));
    void this.refreshView();
  }

  /** Tells every process to pause (a 429 that says the bot, not a chat, is flooded). */
  announceFlood(until: number): void {
    try {
      this.o.nc.publish(this.o.subjects.budgetFlood, encodeJson({ until, instance: this.o.instance }));
    } catch (e) {
      this.o.log.warn({ err: describeError(e) }, 'could not announce the flood');
    }
  }

  /** Reports at once when demand appears, so the coordinator reacts within a tick. */
  poke(): void {
    if (this.lastDemand === 0 && this.o.demand() > 0) this.report();
  }

  stop(): void {
    this.timers.forEach((t) => clearInterval(t));
    this.timers = [];
    this.subs.forEach((s) => s.unsubscribe());
    this.subs = [];
  }

  private report(): void {
    this.lastDemand = Math.min(this.o.global.count, Math.ceil(this.o.demand()));
    try {
      this.o.nc.publish(this.o.subjects.budgetDemand, encodeJson({ holder: this.o.holder, instance: this.o.instance, demand: this.lastDemand, share: this.share, at: Date.now() }));
    } catch {
      /* disconnected: the grant will expire and we stop, as we must */
    }
  }

  private check(): void {
    const now = Date.now();
    if (now < this.expiresAt) return;
    const coordinatorGone = this.coordinatorSeen.holder === undefined && now - this.coordinatorSeen.at < 2_000;
    if (coordinatorGone) {
      const fallback = Math.floor(this.o.global.count / Math.max(1, this.members));
      if (this.mode !== 'fallback' || this.share !== fallback) this.o.log.warn({ share: fallback, members: this.members }, 'no budget coordinator: using the safe share (limit ÷ live processes)');
      this.setShare(fallback, 'fallback');
    } else if (this.mode !== 'waiting' && this.mode !== 'starting') {
      // A coordinator exists but our grant lapsed: it may be giving our share away.
      this.setShare(0, 'waiting');
    }
  }

  private async refreshView(): Promise<void> {
    try {
      const h = await leaseHolder(this.o.kv, COORDINATOR_KEY);
      this.coordinatorSeen = { holder: h?.holder, at: Date.now() };
      let n = 0;
      for await (const k of await this.o.kv.keys('member.>')) {
        void k;
        n++;
      }
      this.members = Math.max(1, n);
    } catch {
      // NATS unreachable: we know nothing, so we claim nothing (check() keeps share 0 once the grant expires).
      this.coordinatorSeen = { holder: 'unknown', at: Date.now() };
    }
  }

  private setShare(share: number, mode: BudgetClient['mode']): void {
    this.mode = mode;
    if (share === this.share && this.o.gate.limit.count === share) return;
    this.share = share;
    this.o.gate.setLimit({ count: share, windowMs: this.o.global.windowMs });
    this.o.metrics.gauge('budget_share', 'Sends per window this process may make (cluster share)').set(share);
  }
}
