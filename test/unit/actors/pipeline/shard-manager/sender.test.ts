import { strict as assert } from 'node:assert';
import { spawnSender, type DrainResult, type SenderMsg, type SenderStatus } from '../../../../../actors/pipeline/shard-manager/sender';
import type { PipelineSettings } from '../../../../../actors/pipeline/deps';
import { FloodDetector } from '../../../../../src/limits/flood';
import type { OutboxRow, Outcome } from '../../../../../src/outbox/types';
import { dispatch, query, startActorSystem, stopActorSystem, type ActorRef, type ActorSystem } from '../../../../../src/runtime/actor';
import { TelegramBadRequest, TelegramPermanent, TelegramRateLimited, TelegramTransient } from '../../../../../src/telegram/errors';
import { captureLogger, waitFor } from '../../../../helpers/services';
import { fakePipelineDeps, recordingOutcomes, row, type FakePipeline } from '../../../../helpers/pipeline-fakes';

/**
 * The sender with a fake Telegram client (the test answers each call), fake recipients,
 * a recording outcome writer and a test clock. Windows are tens of milliseconds: the
 * sender's timers are real, and every interval is asserted on the clock the sender reads.
 */
describe('sender actor (fake Telegram, recipients and outcome writer)', () => {
  let system: ActorSystem;
  let fp: FakePipeline;
  let outcomes: Outcome[];
  let sender: ActorRef<SenderMsg>;
  /** Outcome flushes the sender had asked for when it reloaded its claimed rows (-1: no reload yet). */
  let flushesAtReload: number;

  const start = (settings: Partial<PipelineSettings> = {}, claimed: OutboxRow[] = [], tweak: (fp: FakePipeline) => void = () => undefined): void => {
    const { log } = captureLogger();
    system = startActorSystem('sender-test', log);
    const flushes = { n: 0 };
    flushesAtReload = -1;
    fp = fakePipelineDeps(log, settings, {
      loadClaimed: () => {
        flushesAtReload = flushes.n;
        return Promise.resolve(claimed);
      },
    });
    outcomes = [];
    tweak(fp);
    const writer = recordingOutcomes(system, outcomes, flushes);
    sender = spawnSender(system, fp.deps, { shard: 0, outcomes: writer, flood: new FloodDetector() });
  };
  afterEach(() => {
    fp.gate.stop();
    stopActorSystem(system);
  });

  const send = (...rows: OutboxRow[]) => dispatch<SenderMsg>(sender, { type: 'rows', rows });
  const status = () => query<SenderMsg, SenderStatus>(sender, (replyTo) => ({ type: 'status', replyTo }), 1000);
  const calls = (n: number, what = `${n} Telegram calls`) => waitFor(() => fp.telegram.calls.length >= n, 1500, 1, what);
  const outcome = (id: number, kind: Outcome['kind']) => outcomes.find((o) => o.id === id && o.kind === kind);
  const waitOutcome = async (id: number, kind: Outcome['kind']): Promise<Outcome> => {
    await waitFor(() => outcome(id, kind) !== undefined, 1500, 1, `outcome ${kind} of row ${id}`);
    return outcome(id, kind)!;
  };
  const texts = (chatId?: number) => (chatId === undefined ? fp.telegram.calls : fp.telegram.of(chatId)).map((c) => c.text);

  it('sends each chat in row-id order, one call at a time per chat, chats side by side', async () => {
    // A chat window of 5: only the one-send-at-a-time rule can keep a chat's second row back.
    start({ chatLimit: { count: 5, windowMs: 40 } });
    send(row(3, 10), row(1, 10), row(4, 20), row(2, 10));
    await calls(2, 'the first call of each chat');
    assert.deepEqual(texts(10), ['r1']);
    assert.deepEqual(texts(20), ['r4'], 'the other chat does not wait for the first');
    for (let n = 2; n <= 3; n++) {
      // The previous call of chat 10 is unanswered: no second call for it.
      assert.equal(fp.telegram.open(10).length, 1);
      const s = await status();
      assert.equal(s.inFlight, 2 - (n - 2));
      fp.telegram.ok(fp.telegram.calls.indexOf(fp.telegram.open(10)[0]!));
      if (n === 2) fp.telegram.ok(fp.telegram.calls.indexOf(fp.telegram.open(20)[0]!));
      await waitFor(() => fp.telegram.of(10).length === n, 1500, 1, `call ${n} of chat 10`);
    }
    fp.telegram.ok(fp.telegram.calls.indexOf(fp.telegram.open(10)[0]!));
    assert.deepEqual(texts(10), ['r1', 'r2', 'r3']);
    await waitOutcome(3, 'sent');
    assert.deepEqual(
      outcomes
        .filter((o) => o.kind === 'sent')
        .map((o) => o.id)
        .sort(),
      [1, 2, 3, 4],
    );
    const s = await status();
    assert.equal(s.sent, 4);
    assert.equal(s.queued, 0);
    assert.equal(fp.book.total, 0, 'the buffer book is back to empty');
  });

  it('holds a chat to its window: the next send waits a window after the previous answer', async () => {
    start({ chatLimit: { count: 1, windowMs: 40 }, groupLimit: { count: 2, windowMs: 60 } });
    send(row(1, 10), row(2, 10), row(3, 10), row(4, -30), row(5, -30), row(6, -30));
    for (let i = 0; i < 3; i++) {
      await waitFor(() => fp.telegram.of(10).length === i + 1, 1500, 1, `call ${i + 1} of chat 10`);
      fp.telegram.ok(fp.telegram.calls.indexOf(fp.telegram.of(10)[i]!));
    }
    const c = fp.telegram.of(10);
    for (let i = 1; i < 3; i++)
      assert.ok(c[i]!.at - c[i - 1]!.answeredAt! >= 40, `private chat: gap ${c[i]!.at - c[i - 1]!.answeredAt!} ms < its 40 ms window`);
    // A group's window holds 2 (still one call at a time): the third send waits a window after the FIRST answer.
    for (let i = 0; i < 3; i++) {
      await waitFor(() => fp.telegram.of(-30).length === i + 1, 1500, 1, `call ${i + 1} of the group`);
      fp.telegram.ok(fp.telegram.calls.indexOf(fp.telegram.of(-30)[i]!));
    }
    const g = fp.telegram.of(-30);
    assert.ok(g[2]!.at - g[0]!.answeredAt! >= 60, `group: third send ${g[2]!.at - g[0]!.answeredAt!} ms after the first answer, window 60 ms`);
    await waitOutcome(6, 'sent');
  });

  it('a 429 pauses only that chat for retry_after, and the row is sent again without counting an attempt', async () => {
    start({ chatLimit: { count: 1, windowMs: 10 } });
    send(row(1, 10), row(2, 10), row(3, 20), row(4, 20), row(5, 20));
    await calls(2);
    const first10 = fp.telegram.of(10)[0]!;
    fp.telegram.fail(fp.telegram.calls.indexOf(first10), new TelegramRateLimited('sendMessage', 'Too Many Requests: retry after 0.15', 0.15));
    await waitFor(async () => (await status()).rateLimited.length === 1, 1500, 1, 'chat 10 rate-limited');
    const s = await status();
    assert.deepEqual(
      s.rateLimited.map((r) => r.chatId),
      [10],
    );
    assert.ok(s.rateLimited[0]!.until >= first10.answeredAt! + 150);
    assert.equal(s.throttledByScope.chat, 1);
    // Chat 20 goes on meanwhile.
    for (let i = 0; i < 3; i++) {
      await waitFor(() => fp.telegram.of(20).length === i + 1, 1500, 1, `call ${i + 1} of chat 20`);
      fp.telegram.ok(fp.telegram.calls.indexOf(fp.telegram.of(20)[i]!));
    }
    await waitOutcome(5, 'sent');
    assert.equal(fp.telegram.of(10).length, 1, 'chat 10 still waits');
    await waitFor(() => fp.telegram.of(10).length === 2, 1500, 1, 'chat 10 resent');
    const again = fp.telegram.of(10)[1]!;
    assert.equal(again.text, 'r1', 'the same row first');
    assert.ok(again.at - first10.answeredAt! >= 150, `resent ${again.at - first10.answeredAt!} ms after the 429, retry_after 150 ms`);
    fp.telegram.ok(fp.telegram.calls.indexOf(again));
    const sent = await waitOutcome(1, 'sent');
    assert.equal(sent.kind === 'sent' && sent.attempts, 1, 'a 429 is not a failed attempt');
    assert.equal(
      outcomes.some((o) => o.id === 1 && (o.kind === 'retry' || o.kind === 'failed')),
      false,
    );
    assert.deepEqual(fp.floods, [], 'one chat’s 429 is not a bot-wide flood');
    assert.equal(fp.gate.pausedUntilMs, 0);
    await waitFor(() => fp.telegram.of(10).length === 3, 1500, 1, 'row 2 of chat 10');
    assert.equal(fp.telegram.of(10)[2]!.text, 'r2');
  });

  it('a transient error retries with growing backoff, the chat’s later rows wait behind it, and it fails after maxAttempts', async () => {
    start({ maxAttempts: 3, retryBaseMs: 40, retryMaxMs: 80 });
    send(row(1, 10), row(2, 10));
    const err = () => new TelegramTransient('sendMessage', 502, 'Bad Gateway', 'server_error');
    for (let attempt = 1; attempt <= 3; attempt++) {
      await waitFor(() => fp.telegram.calls.length === attempt, 1500, 1, `attempt ${attempt}`);
      assert.equal(fp.telegram.calls[attempt - 1]!.text, 'r1', 'row 2 never overtakes row 1 while it waits to retry');
      fp.telegram.fail(attempt - 1, err());
      if (attempt < 3) {
        await waitFor(() => outcomes.filter((o) => o.id === 1 && o.kind === 'retry').length === attempt, 1500, 1, `retry outcome ${attempt}`);
        const retry = outcomes.filter((o) => o.id === 1 && o.kind === 'retry')[attempt - 1]!;
        assert.ok(retry.kind === 'retry');
        assert.equal(retry.attempts, attempt);
        assert.equal(retry.retryCount, attempt);
        assert.equal(retry.code, 'TG_TRANSIENT');
        // Equal jitter: attempt n waits between base·2^(n−1)/2 and base·2^(n−1).
        const wait = retry.nextAttemptAt - fp.telegram.calls[attempt - 1]!.answeredAt!;
        assert.ok(wait >= 20 * 2 ** (attempt - 1) && wait <= 40 * 2 ** (attempt - 1) + 5, `backoff ${wait} ms for attempt ${attempt}`);
        assert.equal((await status()).waitingRetry, 1);
        await waitFor(() => fp.telegram.calls.length === attempt + 1, 1500, 1, `attempt ${attempt + 1}`);
        assert.ok(fp.telegram.calls[attempt]!.at >= retry.nextAttemptAt, 'not retried before its backoff');
      }
    }
    const failed = await waitOutcome(1, 'failed');
    assert.ok(failed.kind === 'failed');
    assert.equal(failed.code, 'TG_TRANSIENT');
    assert.equal(failed.attempts, 3);
    assert.match(failed.reason, /after 3 attempts/);
    assert.equal(fp.recipients.marked.length, 0, 'a transient error never marks the recipient');
    // Then the next row of the chat goes out.
    await calls(4, 'row 2');
    assert.equal(fp.telegram.calls[3]!.text, 'r2');
    fp.telegram.ok(3);
    await waitOutcome(2, 'sent');
  });

  it('a permanent error fails the row, marks the recipient, and the chat’s other rows fail without a call', async () => {
    start();
    send(row(1, 10), row(2, 10), row(3, 20));
    await calls(2);
    fp.telegram.fail(
      fp.telegram.calls.indexOf(fp.telegram.of(10)[0]!),
      new TelegramPermanent('sendMessage', 403, 'Forbidden: bot was blocked by the user', 'blocked'),
    );
    const f1 = await waitOutcome(1, 'failed');
    assert.ok(f1.kind === 'failed');
    assert.equal(f1.code, 'TG_PERMANENT');
    assert.equal(f1.attempts, 1);
    assert.deepEqual(
      fp.recipients.marked.map((m) => [m.chatId, m.status, m.code]),
      [[10, 'blocked', 'TG_PERMANENT']],
    );
    assert.deepEqual(fp.recipientEvents, [{ chatId: 10, status: 'blocked', migratedTo: null }]);
    const f2 = await waitOutcome(2, 'failed');
    assert.ok(f2.kind === 'failed');
    assert.match(f2.reason, /not sent/);
    assert.equal(fp.telegram.of(10).length, 1, 'no call for a chat marked unreachable');
    fp.telegram.ok(fp.telegram.calls.indexOf(fp.telegram.of(20)[0]!));
    await waitOutcome(3, 'sent');
  });

  it('drain waits for the send in flight, gives back every unsent row, and hands over the chat windows', async () => {
    start();
    send(row(1, 10), row(2, 10), row(3, 10));
    await calls(1);
    let drained: DrainResult | undefined;
    const p = query<SenderMsg, DrainResult>(sender, (replyTo) => ({ type: 'drain', replyTo }), 1500).then((d) => (drained = d));
    await waitFor(async () => (await status()).draining, 1500, 1, 'draining');
    assert.equal(drained, undefined, 'not answered while a send is in flight');
    // Rows that arrive while draining are given back at once.
    send(row(9, 40));
    await waitOutcome(9, 'release');
    fp.telegram.ok(0);
    await p;
    assert.equal(drained!.released, 2);
    await waitOutcome(3, 'release');
    assert.deepEqual(
      outcomes
        .filter((o) => o.kind === 'release')
        .map((o) => o.id)
        .sort(),
      [2, 3, 9],
    );
    assert.ok(outcome(1, 'sent'), 'the send in flight finished and was recorded');
    assert.equal(fp.telegram.calls.length, 1, 'nothing more was sent');
    assert.deepEqual(Object.keys(drained!.windows.chats), ['10'], 'the chat that sent has a window to hand over');
    assert.equal(fp.book.total, 0);
  });

  it('a stale copy of a finished row is ignored; a copy fetched after it failed is sent again; one of a row sent here is not', async () => {
    start();
    send(row(1, 10, { fetchedAt: fp.clock.now() }), row(2, 20, { fetchedAt: fp.clock.now() }));
    await calls(2);
    const fetched = fp.telegram.calls[0]!.at;
    fp.telegram.ok(fp.telegram.calls.indexOf(fp.telegram.of(10)[0]!));
    fp.telegram.fail(fp.telegram.calls.indexOf(fp.telegram.of(20)[0]!), new TelegramBadRequest('sendMessage', 400, 'Bad Request: something'));
    await waitOutcome(1, 'sent');
    await waitOutcome(2, 'failed');
    // A copy from a claim or reload that started before the row finished (a recovery overlap).
    send(row(1, 10, { fetchedAt: fetched }));
    const s = await status();
    assert.equal(s.queued, 0, 'the stale copy was not queued');
    assert.equal(fp.telegram.calls.length, 2);
    // An operator's retry of the failed row: a claim that started after the row finished here.
    fp.clock.advance(5);
    send(row(2, 20, { fetchedAt: fp.clock.now() }));
    await calls(3, 'the newer copy of the failed row sent');
    assert.equal(fp.telegram.calls[2]!.text, 'r2');
    // The sent row claimed again (the reaper freed it before its outcome landed): written as sent again, not sent.
    send(row(1, 10, { fetchedAt: fp.clock.now() }));
    await waitFor(() => outcomes.filter((o) => o.id === 1 && o.kind === 'sent').length === 2, 1500, 1, 'second sent outcome of row 1');
    assert.equal(fp.telegram.of(10).length, 1, 'row 1 went out once');
    assert.equal((await status()).queued, 1, 'only row 2 is queued');
  });

  it('sends nothing while the shard lease is not vouched for (a process waking from a freeze); resumes when it is', async () => {
    let may = false;
    start({}, [], (f) => {
      f.deps.shardLease = { maySendFor: (shard) => shard === 0 && may };
    });
    send(row(1, 10));
    await new Promise((r) => setTimeout(r, 150));
    assert.equal(fp.telegram.calls.length, 0, 'held back');
    assert.equal((await status()).queued, 1, 'and kept');
    may = true; // a renewal came
    await calls(1, 'the send after the renewal');
    fp.telegram.ok(0);
    await waitOutcome(1, 'sent');
  });

  it('a fenced shard (an election): its chats wait on one look at the lease per period, keep their rows, and all go on when it is valid again', async () => {
    let may = false;
    let looks = 0;
    start({}, [], (f) => {
      f.deps.shardLease = { maySendFor: () => (looks++, may) };
    });
    const chats = Array.from({ length: 40 }, (_, i) => 100 + i);
    send(...chats.map((c, i) => row(i + 1, c)));
    await waitFor(() => looks >= chats.length, 1500, 1, 'every chat looked once');
    const held = looks;
    await new Promise((r) => setTimeout(r, 550));
    assert.equal(fp.telegram.calls.length, 0, 'held back');
    // One look per 100 ms for the whole shard (each chat looking on its own would be 40 per 100 ms).
    assert.ok(looks - held <= 7, `${looks - held} looks in 550 ms for 40 held chats`);
    const s = await status();
    assert.equal(s.queued, chats.length, 'their rows are kept, not given back');
    assert.equal(outcomes.filter((o) => o.kind === 'release').length, 0);
    may = true; // the first renewal after the election
    await calls(chats.length, 'every held chat sends once the lease is valid again');
    assert.deepEqual([...new Set(fp.telegram.calls.map((c) => c.chatId))].sort(), chats);
  });

  it('a drain while the shard is fenced gives the held rows back and stops looking at the lease', async () => {
    let looks = 0;
    start({}, [], (f) => {
      f.deps.shardLease = { maySendFor: () => (looks++, false) };
    });
    send(row(1, 10), row(2, 20));
    await waitFor(() => looks >= 2, 1500, 1, 'both held');
    const d = await query<SenderMsg, DrainResult>(sender, (replyTo) => ({ type: 'drain', replyTo }), 1000);
    assert.equal(d.released, 2);
    const after = looks;
    await new Promise((r) => setTimeout(r, 250));
    assert.equal(looks, after, 'no look at the lease after the drain');
    assert.equal(fp.telegram.calls.length, 0);
  });

  it('asks again right before the dispatch: a lease lost between the bid and the grant holds the send back', async () => {
    let may = true;
    start({}, [], (f) => {
      f.deps.shardLease = { maySendFor: () => may };
      // The grant comes only after the lease was lost.
      const request = f.gate.request.bind(f.gate);
      f.gate.request = (bid) =>
        request({
          ...bid,
          grant: (r) => {
            may = false;
            bid.grant(r);
          },
        });
    });
    send(row(1, 10));
    await waitFor(() => fp.telegram.calls.length > 0 || !may, 1500, 1, 'the grant');
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(fp.telegram.calls.length, 0, 'not dispatched');
    assert.equal(fp.gate.occupied(), 0, 'the global slot was given back');
  });

  it('a row whose claim lease it cannot vouch for is checked in the database: gone → dropped unsent; still ours → sent', async () => {
    const asked: number[][] = [];
    const t = Date.now();
    start({ claimLeaseMs: 1_000 }, [], (f) => {
      (f.deps.repo as unknown as { claimLeft: (ids: number[]) => Promise<Map<number, number>> }).claimLeft = (ids) => {
        asked.push(ids);
        // Row 1 was freed by the reaper (a stall past the lease); row 2 is still ours, 30 s left.
        return Promise.resolve(new Map(ids.filter((id) => id === 2).map((id) => [id, 30_000])));
      };
    });
    // Claimed 2 s ago with a 1 s lease, and no renewal since: neither can be vouched for.
    send(row(1, 10, { fetchedAt: t - 2_000 }), row(2, 20, { fetchedAt: t - 2_000 }));
    await calls(1, 'row 2 sent after the database vouched for it');
    assert.deepEqual(texts(), ['r2']);
    assert.deepEqual([...new Set(asked.flat())].sort(), [1, 2], 'both asked of the database');
    await waitFor(async () => (await status()).queued === 1, 1500, 5, 'row 1 dropped');
    fp.telegram.ok(0);
    await waitOutcome(2, 'sent');
    assert.equal(outcome(1, 'sent') ?? outcome(1, 'release') ?? outcome(1, 'failed'), undefined, 'no outcome for a row no longer ours');
    assert.equal(fp.book.total, 0);
    // Claimed again by this process (the reaper freed it): a new copy is queued once and sent once.
    send(row(1, 10, { fetchedAt: Date.now() }), row(1, 10, { fetchedAt: Date.now() }));
    await calls(2, 'row 1 sent from its new claim');
    assert.deepEqual(texts(10), ['r1']);
  });

  it('a copy of a queued row claimed again refreshes its lease instead of queueing it twice', async () => {
    const t = Date.now();
    let asked = 0;
    start({ claimLeaseMs: 1_000 }, [], (f) => {
      (f.deps.repo as unknown as { claimLeft: () => Promise<Map<number, number>> }).claimLeft = () => {
        asked++;
        return new Promise(() => undefined); // the database does not answer
      };
    });
    send(row(1, 10, { fetchedAt: t - 2_000 }));
    await waitFor(() => asked === 1, 1500, 1, 'the database asked');
    assert.equal(fp.telegram.calls.length, 0);
    send(row(1, 10, { fetchedAt: Date.now() }));
    await calls(1, 'sent on the new claim');
    assert.equal((await status()).queued, 1, 'one job for row 1');
    fp.telegram.ok(0);
    await waitOutcome(1, 'sent');
    assert.equal((await status()).queued, 0);
    assert.equal(fp.telegram.calls.length, 1);
  });

  it('recovers the rows it held: flushes outcomes first, sends the reload, and a duplicate copy from a claim is sent once', async () => {
    const t = Date.now();
    start({}, [row(1, 10, { fetchedAt: t }), row(2, 20, { fetchedAt: t })]);
    // The claimer's copy of row 1 arrives during recovery.
    send(row(1, 10, { fetchedAt: t }), row(3, 10, { fetchedAt: t }));
    await calls(2);
    assert.equal(flushesAtReload, 1, 'queued outcomes were flushed before the reload');
    fp.telegram.ok(0);
    fp.telegram.ok(1);
    await waitFor(() => fp.telegram.of(10).length === 2, 1500, 1, 'row 3');
    fp.telegram.ok(fp.telegram.calls.indexOf(fp.telegram.of(10)[1]!));
    await waitOutcome(3, 'sent');
    assert.deepEqual(texts(10), ['r1', 'r3']);
    assert.deepEqual(texts(20), ['r2']);
  });

  it('429s of two chats within the flood window, neither near its limit, pause the whole bot: every chat waits', async () => {
    start();
    send(row(1, 10), row(2, 20));
    await calls(2);
    const tooMany = () => new TelegramRateLimited('sendMessage', 'Too Many Requests: retry after 0.1', 0.1);
    fp.telegram.fail(0, tooMany());
    fp.telegram.fail(1, tooMany());
    await waitFor(() => fp.floods.length === 1, 1500, 1, 'a bot-wide flood reported');
    const until = fp.floods[0]!;
    assert.ok(until >= fp.telegram.calls[1]!.answeredAt! + 100);
    assert.equal(fp.gate.pausedUntilMs, until, 'the process gate is paused');
    const s = await status();
    assert.equal(s.throttledByScope.chat, 1, 'the first 429 alone looked like its chat');
    assert.equal(s.throttledByScope.global, 1);
    // A chat that was never throttled waits for the pause too.
    send(row(3, 30));
    await waitFor(() => fp.telegram.of(30).length === 1, 1500, 1, 'chat 30 after the pause');
    assert.ok(fp.telegram.of(30)[0]!.at >= until, `chat 30 sent ${until - fp.telegram.of(30)[0]!.at} ms before the bot-wide pause ended`);
  });

  it('a row the planner cannot plan fails with BAD_PAYLOAD without a call; the chat goes on', async () => {
    start({}, [], (f) => {
      f.deps.planner = {
        plan: (r) => (r.id === 1 ? Promise.reject(new Error('template missing')) : Promise.resolve([{ method: 'sendMessage', text: r.text, parseMode: null }])),
      };
    });
    send(row(1, 10), row(2, 10));
    const failed = await waitOutcome(1, 'failed');
    assert.ok(failed.kind === 'failed');
    assert.equal(failed.code, 'BAD_PAYLOAD');
    assert.match(failed.reason, /template missing/);
    await calls(1, 'row 2');
    assert.deepEqual(texts(), ['r2']);
  });
});
