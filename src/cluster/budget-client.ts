import { Type } from '@sinclair/typebox';
import type { KV, KvEntry, NatsConnection } from 'nats';
import type { Logger } from '../log';
import type { Metrics } from '../metrics';
import type { GlobalGate } from '../limits/global-gate';
import type { WindowLimit } from '../limits/window';
import type { SubjectSet } from '../nats/subjects';
import { decoder, encodeJson } from '../nats/codec';
import { NatsIntake, decodeKvValue } from '../nats/intake';
import { BudgetGrant, BudgetFlood } from '../nats/payloads';
import { describeError, isAppError } from '../errors';
import type { LeaseValue } from './lease';

export const COORDINATOR_KEY = 'budget.coordinator';
/** How long a grant waits for a read of the coordinator's lease before it is judged as if the read failed. */
export const READ_WAIT_MS = 200;
/** Longest timer Node accepts (ms); a longer one fires at once with a TimeoutOverflowWarning. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

export interface BudgetClientOptions {
  subjects: SubjectSet;
  nc: NatsConnection;
  kv: KV;
  gate: GlobalGate;
  log: Logger;
  metrics: Metrics;
  holder: string;
  instance: string;
  /** The bot-wide limit for the whole cluster (the configured ceiling). */
  global: WindowLimit;
  /** Current demand of this process, in sends per window. */
  demand: () => number;
  /** The lease TTL: one period of seeing the membership before a process trusts its count. */
  leaseTtlMs: number;
  /** Longest flood pause obeyed (TELEGRAM_MAX_RETRY_AFTER_MS). */
  maxPauseMs: number;
  /** How far a grant's issued_at may be from our clock (BUDGET_MAX_CLOCK_SKEW_MS). */
  maxSkewMs: number;
  /** Called with each bot-wide flood accepted from a member (the coordinator lowers the bot rate); `at`: when the 429 came. */
  onFlood?: (until: number, from: string, at?: number) => void;
  now?: () => number;
}

/** A lease or member key as another process wrote it (src/cluster/lease.ts): read like any input. */
const LeaseValueSchema = Type.Object({ holder: Type.String({ minLength: 1 }), instance: Type.String(), since: Type.Number() });
const decodeLease = decoder(LeaseValueSchema, { maxBytes: 4096 });
const decodeGrant = decoder(BudgetGrant, { maxBytes: 4096 });
const decodeFlood = decoder(BudgetFlood, { maxBytes: 1024 });

/**
 * Publishes a bot-wide flood to every process (`notify.budget.flood`); never throws. The
 * pipeline gets this as its flood port before the budget client exists (the client needs
 * the coordinator's actor, spawned with the pipeline).
 */
export function floodAnnouncer(o: Pick<BudgetClientOptions, 'nc' | 'subjects' | 'instance' | 'holder' | 'log'>): (until: number, at: number) => void {
  return (until, at) => {
    try {
      o.nc.publish(o.subjects.budgetFlood, encodeJson({ until, instance: o.instance, holder: o.holder, at: Math.round(at) }));
    } catch (e) {
      o.log.warn({ err: describeError(e) }, 'could not announce the flood');
    }
  };
}

/** The smallest share a process may use on its own: one send per window is enough for a lone message. */
export function floorShare(capacity: number): number {
  return Math.max(1, Math.floor(capacity * 0.005));
}

type Mode = 'starting' | 'granted' | 'waiting' | 'fallback';

/**
 * This process's side of the cluster-wide Telegram budget.
 *
 * Joining: a process sends only within what it knows is free. Until it holds a grant
 * from the coordinator it uses the floor share (1 send per window at 30/s; the
 * coordinator keeps one floor unallocated for a joiner). Without a coordinator it falls
 * back to limit ÷ live processes, but only after it has watched the membership for one
 * lease period (every live process has written its member key by then), never from a
 * count taken at start, when the others may not have registered yet.
 *
 * Control messages are checked (issue 10 item 5): a grant counts only if it names the
 * coordinator holding the lease now at the lease's current revision, was issued within
 * the clock-skew bound, and its share is within the configured limit; a flood pause comes
 * only from a live member and is clamped to the longest retry_after accepted.
 */
export class BudgetClient {
  private share = 0;
  private expiresAt = 0;
  private issuedAt = 0;
  private mode: Mode = 'starting';
  private rate: number;
  private started = false;
  /** Grants and floods arrive through the one NATS edge; drained on stop. */
  private readonly intake: NatsIntake;
  private readonly announce: (until: number, at: number) => void;
  private readonly warnedKeys = new Set<string>();
  private timers: NodeJS.Timeout[] = [];
  private coordinator: { holder: string | undefined; revisions: number[]; at: number } = { holder: undefined, revisions: [], at: 0 };
  private members = new Set<string>();
  /** When we first read the membership successfully (0: not yet). */
  private watchingSince = 0;
  private lastDemand = 0;
  private readonly now: () => number;
  private readonly bad;

  constructor(private readonly o: BudgetClientOptions) {
    this.now = o.now ?? Date.now;
    this.rate = (o.global.count / o.global.windowMs) * 1000;
    this.bad = o.metrics.counter('nats_bad_payloads_total', 'NATS payloads rejected at the edge', ['subject', 'code']);
    this.intake = new NatsIntake({ nc: o.nc, log: o.log, metrics: o.metrics });
    this.announce = floodAnnouncer(o);
  }

  get current(): { share: number; mode: string; expiresAt: number; demand: number; rate: number } {
    return { share: this.share, mode: this.mode, expiresAt: this.expiresAt, demand: this.lastDemand, rate: this.rate };
  }

  start(): void {
    if (this.started) return;
    this.started = true;
    this.setShare(floorShare(this.o.global.count), 'starting');
    // The subject names this process; the metric label keeps the pattern.
    this.intake.serve(this.o.subjects.budgetGrant(this.o.holder), decodeGrant, (g) => this.onGrant(g), { label: 'notify.budget.grant' });
    this.intake.listen(this.o.subjects.budgetFlood, decodeFlood, (f) => void this.onFloodMessage(f));
    this.timers.push(setInterval(() => this.check(), 100));
    this.timers.push(setInterval(() => this.report(), 250));
    this.timers.push(setInterval(() => void this.refreshView(), 500));
    void this.refreshView();
  }

  /** The answer to a grant (the coordinator counts a grant as applied only on `ok: true`). */
  private async onGrant(g: BudgetGrant): Promise<unknown> {
    const refused = await this.checkGrant(g);
    if (refused) {
      this.bad.inc({ subject: 'notify.budget.grant', code: 'GRANT_REFUSED' });
      this.o.log.warn({ coordinator: g.coordinator, reason: refused }, 'budget grant refused');
      return { ok: false, error: { code: 'GRANT_REFUSED', message: refused } };
    }
    if (g.issued_at >= this.issuedAt) {
      this.issuedAt = g.issued_at;
      this.expiresAt = g.expires_at;
      this.rate = g.rate;
      this.setShare(g.share, 'granted');
    }
    // When our past sends fit the new share: from then on others may use the difference.
    const freeAt = this.o.gate.heldAtMostAt(this.share);
    return { ok: true, share: this.share, issued_at: this.issuedAt, free_at: Number.isFinite(freeAt) ? freeAt : null };
  }

  /** Why a grant is refused, or undefined when it may be applied. */
  async checkGrant(g: BudgetGrant): Promise<string | undefined> {
    const now = this.now();
    if (g.share > this.o.global.count) return `share ${g.share} is above the bot's limit of ${this.o.global.count} per window`;
    if (Math.abs(g.window_ms - this.o.global.windowMs) > 0.5) return `window ${g.window_ms} ms is not the configured ${this.o.global.windowMs} ms`;
    if (Math.abs(g.issued_at - now) > this.o.maxSkewMs) return `issued_at is ${g.issued_at - now} ms from our clock (bound ${this.o.maxSkewMs} ms)`;
    if (g.expires_at < g.issued_at || g.expires_at - g.issued_at > this.o.leaseTtlMs) return 'expires_at is outside the lease period';
    if (g.rate > (this.o.global.count / this.o.global.windowMs) * 1000 + 1e-6) return `rate ${g.rate}/s is above the configured limit`;
    const known = () => this.coordinator.holder === g.coordinator && this.coordinator.revisions.includes(g.lease_revision);
    if (known()) return undefined;
    // The lease may have been renewed since we last looked: look again once. During an election a read
    // fails only after ~0.7 s, by when the grant in hand has nearly lapsed: an answer later than
    // READ_WAIT_MS counts as a failed read (it still updates what we know when it comes).
    let timer: NodeJS.Timeout | undefined;
    const read = await Promise.race([
      this.readCoordinator().then(
        () => true,
        () => false,
      ),
      new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), READ_WAIT_MS))),
    ]);
    clearTimeout(timer);
    if (known()) return undefined;
    // The read failed (a JetStream election: reads fail for seconds). A revision newer than every one
    // we read of the holder we read less than a lease period ago is a renewal we could not read: only
    // the holder writes its key (compare-and-set), and it can no more once another process took it,
    // which takes a lease period of its silence. Refusing it stopped delivery ~1 s into an election
    // whenever the coordinator had renewed just before it, 3 s before its fence time.
    if (!read && this.coordinator.holder === g.coordinator && g.lease_revision > Math.max(0, ...this.coordinator.revisions)) {
      // Known from now on: the next grants (four a second) go through at once instead of each waiting for a read that
      // fails slowly (a grant applied ~0.8 s late expired ~0.2 s later: the gate flapped between granted and waiting).
      // `at` stays that of the last read, so this holder is forgotten a lease period after it as before.
      this.coordinator.revisions = [...this.coordinator.revisions, g.lease_revision].slice(-3);
      return undefined;
    }
    return `${g.coordinator} at revision ${g.lease_revision} is not the coordinator's lease (${this.coordinator.holder ?? 'none'})`;
  }

  /** A bot-wide flood announced by a process: honoured only from a live member, and bounded. */
  onFloodMessage(f: BudgetFlood): boolean {
    // What this process got accepted in the window ending at the 429, at once: the coordinator sums
    // these instead of reports up to 250 ms old (taken while the cluster may still have been ramping up).
    // Answered even before the membership check: a process started less than a view refresh ago is not
    // in our view yet (the coordinator then misses a count), and a count is only data.
    if (f.at !== undefined) this.report(f.at);
    if (!this.members.has(f.holder) && f.holder !== this.o.holder) {
      this.bad.inc({ subject: this.o.subjects.budgetFlood, code: 'NOT_A_MEMBER' });
      this.o.log.warn({ from: f.holder }, 'flood message from a process that is not a live member: ignored');
      return false;
    }
    const now = this.now();
    let until = f.until;
    if (until > now + this.o.maxPauseMs) {
      this.o.log.warn(
        { from: f.holder, askedUntil: new Date(Math.min(f.until, 8.64e15)).toISOString(), maxPauseMs: this.o.maxPauseMs },
        'flood pause above TELEGRAM_MAX_RETRY_AFTER_MS: clamped',
      );
      until = now + this.o.maxPauseMs;
    }
    if (until <= now) return false;
    this.o.gate.pause(until);
    this.o.onFlood?.(until, f.holder, f.at);
    this.o.log.warn({ until: new Date(until).toISOString(), from: f.instance }, 'bot-wide flood control: cluster paused');
    return true;
  }

  /** Tells every process to pause (a 429 that says the bot, not a chat, is flooded). */
  /** `at`: when the 429 was answered (default now): every process counts its accepted sends in the window ending then. */
  announceFlood(until: number, at = this.now()): void {
    this.announce(until, at);
  }

  /** Reports at once when demand appears, so the coordinator reacts within a tick. */
  poke(): void {
    if (this.lastDemand === 0 && this.o.demand() > 0) this.report();
  }

  /**
   * Leaves the budget. Call once this process sends no more (its pipeline drained): the last report
   * says so and when its past sends leave its window, so the coordinator gives its share away then,
   * not after its grant expires and its reports are missed.
   */
  stop(): void {
    this.timers.forEach((t) => clearInterval(t));
    this.timers = [];
    if (this.started) {
      this.started = false;
      const freeAt = this.o.gate.heldAtMostAt(0);
      // Not delivered (disconnected): the coordinator drops us when our grant expires.
      this.publishDemand({ demand: 0, share: 0, at: this.now(), leaving: true, ...(Number.isFinite(freeAt) ? { free_at: Math.ceil(freeAt) } : {}) });
    }
    void this.intake.drain();
  }

  /** `acceptedAt`: count the sends accepted in the window ending then (a flood's instant), not now. */
  private report(acceptedAt?: number): void {
    this.lastDemand = Math.min(this.o.global.count, Math.ceil(this.o.demand()));
    const W = this.o.global.windowMs;
    const at = this.now();
    const end = acceptedAt !== undefined ? Math.min(at, acceptedAt) : at;
    // Not delivered (disconnected): the grant will expire and we stop, as we must.
    this.publishDemand({
      demand: this.lastDemand,
      share: this.share,
      at,
      accepted: Math.round((this.o.gate.acceptedPerSecond(W, end) * W) / 1000),
      ...(acceptedAt !== undefined ? { accepted_at: acceptedAt } : {}),
      rate: this.rate,
      granted: this.mode === 'granted' || this.mode === 'fallback',
    });
  }

  /** One demand report (BudgetDemand) on the coordinator's subject; never throws. */
  private publishDemand(body: Record<string, unknown>): void {
    try {
      this.o.nc.publish(this.o.subjects.budgetDemand, encodeJson({ holder: this.o.holder, instance: this.o.instance, ...body }));
    } catch {
      /* disconnected: the caller's comment says why that is safe */
    }
  }

  private check(): void {
    const now = this.now();
    if (now < this.expiresAt) return;
    const floor = floorShare(this.o.global.count);
    const noCoordinator = this.coordinator.holder === undefined && now - this.coordinator.at < 2_000;
    const watchedLongEnough = this.watchingSince > 0 && now - this.watchingSince >= this.o.leaseTtlMs;
    if (noCoordinator && watchedLongEnough) {
      const fallback = Math.max(floor, Math.floor(this.o.global.count / Math.max(1, this.members.size)));
      if (this.mode !== 'fallback' || this.share !== fallback)
        this.o.log.warn({ share: fallback, members: this.members.size }, 'no budget coordinator: using the safe share (limit ÷ live processes)');
      this.setShare(fallback, 'fallback');
    } else if (this.mode === 'granted' || this.mode === 'fallback') {
      // Our grant lapsed (a coordinator may be giving our share away), or a coordinator appeared
      // while we ran on the fallback: only the floor until it grants us more.
      this.setShare(this.mode === 'granted' ? 0 : floor, this.mode === 'granted' ? 'waiting' : 'starting');
    }
  }

  private async readCoordinator(): Promise<void> {
    const e = await this.o.kv.get(COORDINATOR_KEY);
    const holder = this.leaseOf(e)?.holder;
    const revisions =
      holder !== undefined && holder === this.coordinator.holder
        ? [...this.coordinator.revisions, e!.revision].slice(-3)
        : holder !== undefined
          ? [e!.revision]
          : [];
    this.coordinator = { holder, revisions, at: this.now() };
  }

  private async refreshView(): Promise<void> {
    try {
      await this.readCoordinator();
      // Keys first, then values: awaiting inside the key iteration cuts it short.
      const keys: string[] = [];
      for await (const k of await this.o.kv.keys('member.>')) keys.push(k);
      const values = await Promise.all(keys.map((k) => this.o.kv.get(k)));
      const members = new Set<string>();
      for (const e of values) {
        const v = this.leaseOf(e);
        if (v?.holder) members.add(v.holder);
      }
      this.members = members;
      if (this.watchingSince === 0) this.watchingSince = this.now();
    } catch {
      // Reads fail while JetStream elects a leader (seconds): the coordinator we read less than a lease
      // period ago is still the only one that may grant, and it stops granting at its fence time
      // (docs/deploy.md, "Leases and fencing"). Past that, we know nothing and claim nothing beyond what we hold.
      if (this.now() - this.coordinator.at >= this.o.leaseTtlMs) this.coordinator = { holder: 'unknown', revisions: [], at: this.now() };
    }
  }

  /** A lease or member value, validated; an invalid one counts as absent (counted and logged, as any bad input). */
  private leaseOf(e: KvEntry | null): LeaseValue | undefined {
    try {
      return decodeKvValue(e, decodeLease);
    } catch (err) {
      const code = isAppError(err) ? err.code : 'BAD_PAYLOAD';
      this.bad.inc({ subject: 'kv.cluster', code });
      // Read every 500 ms: one line per key, the counter for the rest.
      const key = e?.key ?? '';
      if (!this.warnedKeys.has(key)) this.o.log.warn({ key, code, err: describeError(err) }, 'invalid cluster KV value ignored');
      this.warnedKeys.add(key);
      return undefined;
    }
  }

  private setShare(share: number, mode: Mode): void {
    // Granted ↔ waiting is where a coordinator's pause shows (after an election, for instance).
    if (mode !== this.mode && (mode === 'waiting' || this.mode === 'waiting')) this.o.log.info({ mode, share, was: this.mode }, 'budget share mode changed');
    this.mode = mode;
    if (share === this.share && this.o.gate.limit.count === share) return;
    this.share = share;
    this.o.gate.setLimit({ count: share, windowMs: this.o.global.windowMs });
    this.o.metrics.gauge('budget_share', 'Sends per window this process may make (cluster share)').set(share);
  }
}
