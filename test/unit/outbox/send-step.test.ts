import { strict as assert } from 'node:assert';
import { SlidingWindow } from '../../../src/limits/window';
import { newJob } from '../../../src/outbox/chat-queues';
import type { Part } from '../../../src/outbox/plan';
import { MAX_TIMER_MS, asCallError, chatCost, nextStep, policyJob, sendPart, timerDelay, type PartSender } from '../../../src/outbox/send-step';
import type { PhotoItem } from '../../../src/telegram/client';
import { TelegramPermanent, TelegramTransient } from '../../../src/telegram/errors';
import { row } from '../../helpers/pipeline-fakes';

const text = (t: string): Part => ({ method: 'sendMessage', text: t, parseMode: null });
const photo: PhotoItem = { photo: { kind: 'url', url: 'http://x/1.jpg' } };
const album = (n: number): Part => ({ method: 'sendMediaGroup', items: Array.from({ length: n }, () => photo) });

/** The scheduling arithmetic of one chat, on a clock the test moves by hand. */
describe('outbox/send-step', () => {
  let now: number;
  beforeEach(() => {
    now = 1_000_000;
  });
  const job = (parts: Part[] | null, done = 0) => Object.assign(newJob(row(1, 10), now), { parts, done });

  it('an unplanned job is planned first and does not touch the window', () => {
    let read = false;
    const windowOf = () => {
      read = true;
      return new SlidingWindow({ count: 1, windowMs: 1000 });
    };
    assert.deepEqual(nextStep(job(null), windowOf, 0, now), { kind: 'plan' });
    assert.deepEqual(nextStep(job([text('a')], 1), windowOf, 0, now), { kind: 'complete' });
    assert.equal(read, false);
  });

  it('bids when the window is free, then waits for the slot to expire after the answer', () => {
    const w = new SlidingWindow({ count: 1, windowMs: 1000 });
    const j = job([text('a'), text('b')]);
    assert.deepEqual(
      nextStep(j, () => w, 0, now),
      { kind: 'bid', cost: 1 },
    );
    const r = w.reserve(1);
    assert.deepEqual(
      nextStep(j, () => w, 0, now),
      { kind: 'settling' },
      'in flight: only its answer frees the slot',
    );
    now += 20;
    w.settle(r, now);
    j.done = 1;
    const step = nextStep(j, () => w, 0, now);
    assert.equal(step.kind, 'wait');
    const at = (step as { at: number }).at;
    assert.ok(at > now + 999 && at <= now + 1002, `waits one window after the answer (${at - now} ms)`);
    now = at;
    assert.deepEqual(
      nextStep(j, () => w, 0, now),
      { kind: 'bid', cost: 1 },
    );
  });

  it('a pause (retry_after, backoff) holds a free chat back until it ends', () => {
    const w = new SlidingWindow({ count: 5, windowMs: 1000 });
    const j = job([text('a')]);
    assert.deepEqual(
      nextStep(j, () => w, now + 300, now),
      { kind: 'wait', at: now + 300 },
    );
    now += 300;
    assert.deepEqual(
      nextStep(j, () => w, now, now),
      { kind: 'bid', cost: 1 },
    );
  });

  it('an album costs its items, but never more than the whole window', () => {
    assert.equal(chatCost(album(3), 20), 3);
    assert.equal(chatCost(album(10), 1), 1);
    const w = new SlidingWindow({ count: 1, windowMs: 1000 });
    assert.deepEqual(
      nextStep(job([album(4)]), () => w, 0, now),
      { kind: 'bid', cost: 1 },
    );
  });

  it('timer delays stay within what setTimeout accepts', () => {
    assert.equal(timerDelay(now + 50, now), 50);
    assert.equal(timerDelay(now + 40 * 86_400_000, now), MAX_TIMER_MS);
  });

  it('sends each part with its method; a synchronous throw becomes a rejection', async () => {
    const calls: string[] = [];
    const client: PartSender = {
      sendMessage: (chatId, t, mode) => (calls.push(`msg ${chatId} ${t} ${mode}`), Promise.resolve({ message_id: 1, chat: { id: chatId } })),
      sendPhoto: (chatId) => (calls.push(`photo ${chatId}`), Promise.resolve({ message_id: 2, chat: { id: chatId } })),
      sendMediaGroup: (chatId, items) => (calls.push(`album ${chatId} ${items.length}`), Promise.resolve([])),
    };
    await sendPart(client, 7, { method: 'sendMessage', text: 'hi', parseMode: 'HTML' });
    await sendPart(client, 7, { method: 'sendPhoto', item: photo });
    await sendPart(client, 7, album(2));
    assert.deepEqual(calls, ['msg 7 hi HTML', 'photo 7', 'album 7 2']);
    const throwing: PartSender = {
      ...client,
      sendMessage: () => {
        throw new Error('boom');
      },
    };
    await assert.rejects(sendPart(throwing, 7, text('x')), /boom/);
  });

  it('a Telegram answer stays as classified; anything else is a transient network failure', () => {
    const perm = new TelegramPermanent('sendMessage', 400, 'Bad Request: chat not found', 'not_found');
    assert.equal(asCallError('sendMessage', perm), perm);
    const net = asCallError('sendMessage', new Error('ECONNRESET'));
    assert.ok(net instanceof TelegramTransient);
    assert.match(net.message, /ECONNRESET/);
  });

  it('shows the policy the failed part: its method, a text’s length, plain and attempts', () => {
    const j = job([text('abc'), album(2)], 0);
    j.attempts = 2;
    assert.deepEqual(policyJob(10, j), { chatId: 10, part: { method: 'sendMessage', textLength: 3 }, plain: false, attempts: 2 });
    j.done = 1;
    assert.deepEqual(policyJob(10, j).part, { method: 'sendMediaGroup', textLength: undefined });
  });
});
