import { ClaimLeases, singleProcess } from '../../src/outbox/send-guard';
import { SentHere } from '../../src/outbox/chat-queues';
import type { PipelineDeps, PipelineSettings } from '../../actors/pipeline/deps';
import type { OutcomeWriterMsg } from '../../actors/pipeline/outcome-writer';
import { GlobalGate } from '../../src/limits/global-gate';
import { BufferBook } from '../../src/outbox/buffer-book';
import { TextPlanner } from '../../src/outbox/plan';
import type { RecipientInfo } from '../../src/outbox/recipients';
import type { OutboxRow, Outcome } from '../../src/outbox/types';
import { Metrics } from '../../src/metrics';
import type { Logger } from '../../src/log';
import { reply, spawn, type ActorRef, type Parent } from '../../src/runtime/actor';
import type { PhotoItem, SentMessage, TelegramClient } from '../../src/telegram/client';
import type { UnreachableReason } from '../../src/telegram/errors';
import { deferred, type Deferred } from './deferred';

/**
 * Fakes for unit tests of the pipeline's actors: the test decides when each Telegram call
 * and each repository call finishes, and reads what the actors wrote.
 */

/**
 * The clock the actors read (PipelineDeps.clock): real time plus a skew the test moves
 * forward. Timers inside the actors are real `setTimeout`s computed from this clock, so
 * tests use windows of tens of milliseconds and assert intervals measured on this clock.
 */
export class TestClock {
  skew = 0;
  now(): number {
    return Date.now() + this.skew;
  }
  advance(ms: number): void {
    this.skew += ms;
  }
}

export interface TgCall {
  chatId: number;
  text: string;
  /** Clock reading when the sender made the call. */
  at: number;
  d: Deferred<SentMessage>;
  /** Clock reading when the test answered it (the sender reads the clock after this). */
  answeredAt?: number;
}

/** A Telegram client whose calls wait for the test: `ok(i)` / `fail(i, error)`. */
export class FakeTelegram implements TelegramClient {
  calls: TgCall[] = [];
  constructor(private readonly clock: TestClock) {}
  getMe(): Promise<{ id: number; username?: string }> {
    return Promise.resolve({ id: 1, username: 'test_bot' });
  }
  sendMessage(chatId: number, text: string): Promise<SentMessage> {
    const d = deferred<SentMessage>();
    this.calls.push({ chatId, text, at: this.clock.now(), d });
    return d.promise;
  }
  sendPhoto(chatId: number, item: PhotoItem): Promise<SentMessage> {
    return this.sendMessage(chatId, item.caption ?? '');
  }
  sendMediaGroup(chatId: number, items: PhotoItem[]): Promise<SentMessage[]> {
    return this.sendMessage(chatId, items[0]?.caption ?? '').then((m) => [m]);
  }
  ok(i: number): void {
    const c = this.calls[i]!;
    c.answeredAt = this.clock.now();
    c.d.resolve({ message_id: i + 1, chat: { id: c.chatId } });
  }
  fail(i: number, error: unknown): void {
    const c = this.calls[i]!;
    c.answeredAt = this.clock.now();
    c.d.reject(error);
  }
  of(chatId: number): TgCall[] {
    return this.calls.filter((c) => c.chatId === chatId);
  }
  /** Calls not answered yet. */
  open(chatId?: number): TgCall[] {
    return this.calls.filter((c) => c.answeredAt === undefined && (chatId === undefined || c.chatId === chatId));
  }
}

/** The part of RecipientDirectory the sender uses, in memory, recording what it was told. */
export class FakeRecipients {
  readonly map = new Map<number, RecipientInfo>();
  readonly marked: Array<{ chatId: number; status: UnreachableReason | 'migrated'; reason: string; code?: string }> = [];
  target(chatId: number): number {
    const r = this.map.get(chatId);
    return r?.status === 'migrated' && r.migratedTo !== null ? r.migratedTo : chatId;
  }
  unreachable(chatId: number): RecipientInfo | undefined {
    const r = this.map.get(chatId);
    return r && r.status !== 'migrated' ? r : undefined;
  }
  markUnreachable(chatId: number, status: UnreachableReason, reason: string, code: string): void {
    this.map.set(chatId, { status, reason, since: Date.now(), migratedTo: null });
    this.marked.push({ chatId, status, reason, code });
  }
  markMigrated(chatId: number, newChatId: number, reason: string): void {
    this.map.set(chatId, { status: 'migrated', reason, since: Date.now(), migratedTo: newChatId });
    this.marked.push({ chatId, status: 'migrated', reason });
  }
}

/** A stand-in for the outcome writer: keeps every outcome, answers flushes at once. */
export function recordingOutcomes(parent: Parent, outcomes: Outcome[], flushes: { n: number } = { n: 0 }): ActorRef<OutcomeWriterMsg> {
  return spawn<null, OutcomeWriterMsg>(parent, {
    name: 'outcomes',
    init: () => null,
    receive: (s, m) => {
      if (m.type === 'outcome') outcomes.push(m.outcome);
      else if (m.type === 'flush') {
        flushes.n++;
        reply(m.replyTo, { written: 0 });
      }
      return s;
    },
  });
}

export const baseSettings: PipelineSettings = {
  chatLimit: { count: 1, windowMs: 40 },
  groupLimit: { count: 2, windowMs: 80 },
  maxAttempts: 3,
  retryBaseMs: 40,
  retryMaxMs: 80,
  claimBatch: 100,
  claimLeaseMs: 60_000,
  pollMs: 3_600_000,
  chatBufferSeconds: 60,
  maxBuffered: 10_000,
  outcomeFlushMs: 3_600_000,
  outcomeFlushMax: 1000,
  drainTimeoutMs: 1000,
};

export function row(id: number, chatId: number, extra: Partial<OutboxRow> = {}): OutboxRow {
  return {
    id,
    chatId,
    text: `r${id}`,
    parseMode: null,
    kind: null,
    orderId: null,
    priority: 0,
    attempts: 0,
    retryCount: 0,
    shard: 0,
    createdAt: 0,
    progress: null,
    plainText: false,
    fetchedAt: Date.now(),
    ...extra,
  };
}

export interface FakePipeline {
  deps: PipelineDeps;
  clock: TestClock;
  telegram: FakeTelegram;
  recipients: FakeRecipients;
  gate: GlobalGate;
  book: BufferBook;
  floods: number[];
  recipientEvents: Array<{ chatId: number; status: string; migratedTo: number | null }>;
  /** What the fake repository's loadClaimed answers (the sender's recovery). */
  claimed: OutboxRow[];
  released: number[][];
}

/** PipelineDeps of fakes: Telegram and recipients above, a real GlobalGate and BufferBook on the test clock. */
export function fakePipelineDeps(log: Logger, settings: Partial<PipelineSettings> = {}, repo: Record<string, unknown> = {}): FakePipeline {
  const clock = new TestClock();
  const telegram = new FakeTelegram(clock);
  const recipients = new FakeRecipients();
  const gate = new GlobalGate({ count: 1000, windowMs: 1000 }, clock);
  const book = new BufferBook();
  const f = { clock, telegram, recipients, gate, book, floods: [], recipientEvents: [], claimed: [], released: [] } as unknown as FakePipeline;
  f.deps = {
    settings: { ...baseSettings, ...settings },
    log,
    metrics: new Metrics(),
    clock,
    repo: {
      owner: 'test:1',
      loadClaimed: () => Promise.resolve(f.claimed),
      release: (ids: number[]) => {
        f.released.push(ids);
        return Promise.resolve(ids.length);
      },
      ...repo,
    } as unknown as PipelineDeps['repo'],
    telegram,
    gate,
    recipients: recipients as unknown as PipelineDeps['recipients'],
    book,
    planner: new TextPlanner(),
    publishOutcome: () => undefined,
    publishRecipientChanged: (chatId, status, migratedTo) => void f.recipientEvents.push({ chatId, status, migratedTo }),
    onBotFlood: (until) => void f.floods.push(until),
    lowered: new Map(),
    handoff: { save: () => Promise.resolve(new Set()), load: () => Promise.resolve(new Map()) },
    shardLease: singleProcess,
    sentHere: new SentHere(),
    claimLeases: new ClaimLeases(settings.claimLeaseMs ?? baseSettings.claimLeaseMs),
  };
  return f;
}
