import { strict as assert } from 'node:assert';
import {
  RowLedger,
  SEEN_FINISHED_MS,
  SENT_HERE_MS,
  SentHere,
  anyAwaitingAnswer,
  fallBackToPlain,
  finishJob,
  jobOf,
  newChatQueue,
  newJob,
  queueRows,
  queueTotals,
  splitCurrent,
  stopChat,
  type ChatQueue,
} from '../../../src/outbox/chat-queues';
import { row } from '../../helpers/pipeline-fakes';

/** The per-chat FIFOs of a sender, its finished set and job edits, on a clock the test moves by hand. */
const CREATED = 1_700_000_000_000;
/** A row's identity as the ledger reads it: its id, when this copy was fetched, when it was created. */
const r = (id: number, fetchedAt = 0, createdAt = CREATED) => ({ id, fetchedAt, createdAt });

describe('outbox/chat-queues', () => {
  let now: number;
  beforeEach(() => {
    now = 1_000_000;
  });
  const ids = (c: ChatQueue | undefined) => c?.queue.map((j) => j.row.id);

  it('queues admitted rows per chat in row-id order and counts what each chat received', () => {
    const chats = new Map<number, ChatQueue>();
    const ledger = new RowLedger();
    const { touched } = queueRows(chats, ledger, [row(3, 10), row(1, 10), row(4, 20), row(2, 10)], now);
    assert.deepEqual(ids(chats.get(10)), [1, 2, 3]);
    assert.deepEqual(ids(chats.get(20)), [4]);
    assert.deepEqual(
      [...touched].map(([c, n]) => [c.id, n]),
      [
        [10, 3],
        [20, 1],
      ],
    );
    assert.equal(chats.get(10)!.queue[0]!.claimedAt, now);
  });

  it('a row queued twice is taken once; a copy fetched before it finished is stale, one fetched after is a new claim', () => {
    const chats = new Map<number, ChatQueue>();
    const ledger = new RowLedger();
    queueRows(chats, ledger, [row(1, 10, { fetchedAt: now })], now);
    assert.equal(queueRows(chats, ledger, [row(1, 10, { fetchedAt: now })], now).touched.size, 0, 'queued already');
    const c = chats.get(10)!;
    now += 5;
    finishJob(c, ledger, c.queue[0]!, now);
    assert.deepEqual(ids(c), []);
    assert.equal(queueRows(chats, ledger, [row(1, 10, { fetchedAt: now - 1 })], now).touched.size, 0, 'fetched before it finished');
    assert.equal(queueRows(chats, ledger, [row(1, 10, { fetchedAt: now + 1 })], now + 1).touched.size, 1, 'fetched after it finished');
  });

  it('forgets finished rows SEEN_FINISHED_MS after they finished', () => {
    const ledger = new RowLedger();
    assert.equal(ledger.admit(r(1, now)), 'new');
    ledger.finish(r(1), now);
    assert.equal(ledger.admit(r(1, now - 1)), 'stale');
    now += SEEN_FINISHED_MS;
    assert.equal(ledger.admit(r(2, now)), 'new');
    ledger.finish(r(2), now); // finishing prunes what is older than SEEN_FINISHED_MS
    assert.equal(ledger.admit(r(1, 0)), 'new', 'a copy of row 1 however old is new again once forgotten');
  });

  it('a row sent from this process is never admitted again by any of its senders while remembered (SENT_HERE_MS)', () => {
    const sent = new SentHere();
    const old = new RowLedger(sent);
    assert.equal(old.admit(r(7, now)), 'new');
    old.finish(r(7), now + 10, true);
    // The shard was taken over while this process was frozen, then owned again: a new sender, the same process.
    const fresh = new RowLedger(sent);
    assert.equal(fresh.admit(r(7, now + 5)), 'stale', 'fetched before it was sent');
    assert.equal(fresh.admit(r(7, now + 20)), 'sent', 'claimed again after its outcome was lost: written, not sent');
    const failed = new RowLedger(sent);
    assert.equal(failed.admit(r(8, now)), 'new');
    failed.finish(r(8), now + 10);
    assert.equal(new RowLedger(sent).admit(r(8, now + 20)), 'new', 'a failed row retried by an operator is sent');
    sent.add(9, CREATED, now + SENT_HERE_MS + 10); // adding prunes what is older than SENT_HERE_MS
    assert.equal(fresh.admit(r(7, now + SENT_HERE_MS + 20)), 'new', 'forgotten');
  });

  it('a row is known by its id and created_at: another row with the id of a sent one (the table emptied, ids restarted) is sent', () => {
    const sent = new SentHere();
    const ledger = new RowLedger(sent);
    assert.equal(ledger.admit(r(7, now)), 'new');
    ledger.finish(r(7), now + 10, true);
    assert.equal(new RowLedger(sent).admit(r(7, now + 20)), 'sent', 'the same row claimed again');
    assert.equal(new RowLedger(sent).admit({ id: 7, fetchedAt: now + 20, createdAt: CREATED + 60_000 }), 'new', 'a new row with the same id');
  });

  it('jobOf finds a job behind the head; newJob resumes from recorded progress', () => {
    const c = newChatQueue(10);
    c.queue.push(newJob(row(1, 10), now), newJob(row(2, 10, { progress: { done: 2, total: 3 }, attempts: 1, retryCount: 1 }), now));
    assert.equal(jobOf(c, 2)!.done, 2);
    assert.equal(jobOf(c, 2)!.attempts, 1);
    assert.equal(jobOf(c, 3), undefined);
  });

  it('sums queued jobs and tells 429 pauses from retry waits, counting only pauses still running', () => {
    const a = newChatQueue(1);
    const b = newChatQueue(2);
    const d = newChatQueue(3);
    a.queue.push(newJob(row(1, 1), now), newJob(row(2, 1), now));
    b.queue.push(newJob(row(3, 2), now));
    Object.assign(a, { pausedUntil: now + 100, pauseKind: 'rate' });
    Object.assign(b, { pausedUntil: now + 100, pauseKind: 'retry' });
    Object.assign(d, { pausedUntil: now - 1, pauseKind: 'rate' });
    assert.deepEqual(queueTotals([a, b, d], now), { queued: 3, waitingRetry: 1, rateLimited: [{ chatId: 1, until: now + 100 }] });
    now += 100;
    assert.deepEqual(queueTotals([a, b, d], now), { queued: 3, waitingRetry: 0, rateLimited: [] });
  });

  it('a drain waits only for chats planning or sending', () => {
    const c = newChatQueue(1);
    for (const phase of ['idle', 'waiting', 'bidding'] as const) assert.equal(anyAwaitingAnswer([{ ...c, phase }]), false, phase);
    for (const phase of ['planning', 'sending'] as const) assert.equal(anyAwaitingAnswer([c, { ...c, phase }]), true, phase);
  });

  it('stopChat clears the timer and cancels the bid once', () => {
    const c = newChatQueue(1);
    let cancelled = 0;
    let fired = false;
    c.timer = setTimeout(() => (fired = true), 0);
    c.cancelBid = () => cancelled++;
    stopChat(c);
    stopChat(c);
    assert.equal(cancelled, 1);
    assert.equal(c.timer, undefined);
    return new Promise<void>((resolve) =>
      setTimeout(() => {
        assert.equal(fired, false);
        resolve();
      }, 5),
    );
  });

  it('re-plans the rest of a job as plain text, or splits its current part, keeping a note', () => {
    const job = newJob(row(1, 10), now);
    job.parts = [
      { method: 'sendMessage', text: 'done', parseMode: 'HTML' },
      { method: 'sendMessage', text: '<b>x & y</b>', parseMode: 'HTML' },
    ];
    job.done = 1;
    fallBackToPlain(job, 'parse error');
    assert.equal(job.plain, true);
    assert.deepEqual(job.notes, ['parse error']);
    assert.deepEqual(job.parts[0], { method: 'sendMessage', text: 'done', parseMode: 'HTML' }, 'accepted parts stay');
    assert.deepEqual(job.parts[1], { method: 'sendMessage', text: 'x & y', parseMode: null }, 'the rest goes as plain text, its tags dropped');
    const long = newJob(row(2, 10), now);
    long.parts = [{ method: 'sendMessage', text: 'word '.repeat(100).trim(), parseMode: null }];
    splitCurrent(long, 'too long');
    assert.equal(long.parts.length, 2);
    assert.deepEqual(long.notes, ['too long']);
  });
});
