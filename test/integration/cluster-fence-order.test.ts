import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { connect, type NatsConnection } from 'nats';
import { TelegramSandbox } from '../../sandbox/server';
import type { DeliveredEntry } from '../../sandbox/types';
import { shardOf } from '../../src/outbox/shard';
import type { ClusterStatus } from '../../src/roles/cluster';
import { createTestDb, waitFor, uniq, NATS_URL, type TestDb } from '../helpers/services';
import { cleanUpCluster, clusterStatusOf, clusterWorkerEnv, waitBalanced } from '../helpers/cluster-workers';
import { startWorker, type Worker } from '../helpers/processes';

/**
 * A worker frozen (SIGSTOP) while it sends, then thawed (SIGCONT): the state a heavily
 * loaded machine produced by chance (issue 13: chat 5001 got rows 1, 361, 121, 241, and
 * another run 679 deliveries of 600 rows). Frozen past its fence time but not its TTL, the
 * worker's watchdog fences its shards on waking and the first renewal resumes them at
 * once: the pipeline releases the shards' rows and takes the shards back while that
 * release is still running. Frozen past the TTL, the others take its shards over.
 *
 * Each chat's buffer holds two rows (CHAT_RATE 2, CHAT_BUFFER_SECONDS 1), so claims top
 * chats up all the time, as in production: a claim that overtakes rows this process still
 * holds shows at once. The frozen worker logs each dispatch (debug): the tests check that,
 * woken past its fence time, it dispatches nothing for a shard before a renewal vouched for
 * it again, and that every repeat is a row it dispatched before a freeze.
 */
describe('a frozen worker: fenced and resumed, or taken over (real processes)', function () {
  this.timeout(180_000);
  let tdb: TestDb;
  let sandbox: TelegramSandbox;
  let nc: NatsConnection;
  let bucket: string;
  const workers: Worker[] = [];

  afterEach(() => cleanUpCluster({ workers, nc, bucket, sandbox, tdb }));

  const setup = async (): Promise<void> => {
    bucket = uniq('cf');
    tdb = await createTestDb('cf');
    sandbox = new TelegramSandbox({ globalRate: 300, chatRate: 10 });
    await sandbox.start();
    nc = await connect({ servers: NATS_URL, maxReconnectAttempts: -1, reconnectTimeWait: 200 });
  };
  const launch = async (name: string, ttlMs: number): Promise<Worker> => {
    const w = startWorker(
      clusterWorkerEnv(
        { tdb, sandbox, bucket, name },
        {
          TELEGRAM_CHAT_RATE: '2',
          CHAT_BUFFER_SECONDS: '1',
          // Above the longest freeze: rows whose claim expired while their process was frozen are another
          // story (reaped and claimed again by the same process, see the report of issue 13).
          CLAIM_LEASE_MS: '60000',
          SHARD_LEASE_TTL_MS: String(ttlMs),
          // Outcomes land within ~50 ms of their answer: only a chat's last send (one each 500 ms) can be unwritten at a freeze.
          OUTCOME_FLUSH_MS: '50',
          // The frozen worker says what it dispatched and when ('dispatching', debug): the tests tell its sends from the others'.
          LOG_LEVEL: name === 'a' ? 'debug' : 'info',
        },
      ),
    );
    workers.push(w);
    await w.waitForLine(/delivery pipeline running/, 90_000);
    return w;
  };
  const clusterStatus = (): Promise<ClusterStatus> => clusterStatusOf(nc, bucket);
  const balanced = (n: number): Promise<ClusterStatus> => waitBalanced(nc, bucket, n);
  /** `perChat` rows for each chat, in round-robin order; the text is `<tag>-<chat>-<n>` (n: the row's place in its chat). */
  const insert = async (tag: string, chats: number[], perChat: number): Promise<number> => {
    const rows: Array<{ telegram_id: number; message_text: string }> = [];
    for (let n = 0; n < perChat; n++) for (const c of chats) rows.push({ telegram_id: c, message_text: `${tag}-${c}-${n}` });
    for (let i = 0; i < rows.length; i += 500) await tdb.db('telegram_notifications').insert(rows.slice(i, i + 500));
    return rows.length;
  };
  const count = async (status: string): Promise<number> =>
    Number(((await tdb.db('telegram_notifications').where({ status }).count({ n: '*' }))[0] as { n: number | string }).n);
  /** Waits for every row to be sent; on a timeout, says where the rest stand and what the workers said about shards. */
  const allSent = async (total: number): Promise<void> => {
    try {
      await waitFor(async () => (await count('sent')) === total, 90_000, 200, 'all sent');
    } catch (e) {
      const rows = await tdb.db('telegram_notifications').whereNot({ status: 'sent' }).select('id', 'telegram_id', 'shard', 'status', 'claimed_by');
      const owners = await tdb.db('shard_owners').select('shard', 'owner');
      console.log(JSON.stringify({ unsent: rows.slice(0, 20), unsentCount: rows.length, owners: owners.filter((o) => rows.some((r) => r.shard === o.shard)) }));
      for (const w of workers)
        console.log(
          w.lines
            .filter((l) => /shard|fenc|lease|drain/i.test(l))
            .slice(-15)
            .join('\n'),
        );
      throw e;
    }
  };
  /** Chats of which `inA` live in shards of `a` and the rest elsewhere. */
  const chatsFor = (aShards: Set<number>, from: number, inA: number, elsewhere: number): number[] => {
    const chats: number[] = [];
    let a = 0;
    let b = 0;
    for (let c = from; a < inA || b < elsewhere; c++) {
      if (aShards.has(shardOf(c, 64))) {
        if (a++ < inA) chats.push(c);
      } else if (b++ < elsewhere) chats.push(c);
    }
    return chats;
  };
  const FENCED = /lease not renewed in time: stopped sending/;
  const RESUMED = /lease renewed after a fence: sending again/;
  /** The worker's log lines matching `re`, with their times (ms epoch, from the line). */
  const linesOf = (w: Worker, re: RegExp): Array<{ at: number; line: string }> =>
    w.lines.filter((l) => re.test(l)).map((line) => ({ at: Date.parse((JSON.parse(line) as { time: string }).time), line }));
  /** The kernel's view of a worker's threads (state letter and wait channel), for a worker that went silent. */
  const procState = (w: Worker): string => {
    try {
      const dir = `/proc/${w.proc.pid}/task`;
      return readdirSync(dir)
        .map((t) => `${t}:${readFileSync(`${dir}/${t}/stat`, 'utf8').split(') ')[1]?.split(' ')[0]}/${readFileSync(`${dir}/${t}/wchan`, 'utf8')}`)
        .join(' ');
    } catch (e) {
      return String(e);
    }
  };
  /** The first line matching `re` after the first `seen` of them (polls the lines the worker printed; no fixed sleep). */
  const nextLine = async (w: Worker, re: RegExp, seen: number, what: string, timeoutMs = 15_000): Promise<{ at: number; line: string }> => {
    await waitFor(() => linesOf(w, re).length > seen, timeoutMs, 20, what).catch((e: unknown) => {
      throw new Error(`${String(e)}; process state: ${procState(w)}; last lines:\n${w.lines.slice(-12).join('\n')}`);
    });
    return linesOf(w, re)[seen]!;
  };
  /** The next delivery to one of `chats` (the frozen worker sends again). */
  const nextDelivery = (chats: Set<number>, timeoutMs: number): Promise<DeliveredEntry> =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        sandbox.off('delivered', on);
        reject(new Error(`no delivery to the frozen worker's chats within ${timeoutMs} ms`));
      }, timeoutMs);
      const on = (e: DeliveredEntry): void => {
        if (chats.has(e.chatId)) {
          clearTimeout(timer);
          sandbox.off('delivered', on);
          resolve(e);
        }
      };
      sandbox.on('delivered', on);
    });
  /** What a worker dispatched to Telegram: row id → the instants (ms epoch), with the shard. */
  const dispatches = (w: Worker): Array<{ id: number; shard: number; at: number }> =>
    w.lines
      .filter((l) => l.includes('"msg":"dispatching"'))
      .map((l) => JSON.parse(l) as { id: number; shard: number; at: number })
      .map(({ id, shard, at }) => ({ id, shard, at }));
  /** Row id by text. */
  const idsByText = async (): Promise<Map<string, number>> =>
    new Map(
      (await tdb.db('telegram_notifications').select<Array<{ id: number; message_text: string }>>('id', 'message_text')).map((r) => [r.message_text, r.id]),
    );
  /** Per chat, the place numbers in delivery order. */
  const byChat = (d: DeliveredEntry[]): Map<number, number[]> => {
    const m = new Map<number, number[]>();
    for (const x of d) m.set(x.chatId, [...(m.get(x.chatId) ?? []), Number(x.text!.split('-')[2])]);
    return m;
  };

  it('frozen past its fence time but not its TTL: it fences and resumes; every row exactly once, per-chat order kept', async () => {
    // fence time 10 s of 12 s: frozen 10.4 s, it fences on waking (≥ 10.4 s since its last renewal
    // began) while the others have seen its keys unchanged for at most 10.4 s + one renewal period
    // (1 s) + the time to its first renewal: no takeover.
    const TTL = 12_000;
    const FROZEN_MS = 10_400;
    await setup();
    const [a] = await Promise.all([launch('a', TTL), launch('b', TTL), launch('c', TTL)]);
    const st = await balanced(3);
    const aShards = new Set(st.processes.find((p) => p.instance.startsWith('a-'))!.owned);
    const chats = chatsFor(aShards, 20_000, 24, 8);
    const aChats = new Set(chats.filter((c) => aShards.has(shardOf(c, 64))));
    const total = await insert('f', chats, 30);
    await sandbox.waitForDelivered(40, 20_000);
    const wakes: Array<{ woke: number; fenced: number; lines: number }> = [];
    for (let cycle = 0; cycle < 2; cycle++) {
      const fencesBefore = linesOf(a, FENCED).length;
      const resumesBefore = linesOf(a, RESUMED).length;
      // a's next send is answered only after it wakes: the fence on waking finds it in flight, so the
      // drain waits for it while the first renewal already resumes the shards.
      sandbox.setLatency({ minMs: FROZEN_MS + 1_500 });
      const inFlight = await nextDelivery(aChats, 20_000);
      a.kill('SIGSTOP');
      sandbox.setLatency({ minMs: 0 });
      await new Promise((r) => setTimeout(r, FROZEN_MS));
      const woke = Date.now();
      a.kill('SIGCONT');
      // Its watchdog fences on waking; the first renewal after it resumes (events from a's log, in that order).
      const fenced = await nextLine(a, FENCED, fencesBefore, `cycle ${cycle}: a fenced its shards on waking`);
      await nextLine(a, RESUMED, resumesBefore, `cycle ${cycle}: a resumed its shards after a renewal`);
      wakes.push({ woke, fenced: fenced.at, lines: resumesBefore });
      await nextDelivery(aChats, 30_000).catch((e: unknown) => {
        throw new Error(`cycle ${cycle}: ${String(e)}; a's crashes: ${a.lines.filter((l) => /actor crashed/.test(l)).join('\n')}`);
      });
      assert.ok((await count('pending')) + (await count('claimed')) > 0, `cycle ${cycle}: rows were still waiting when a resumed`);
      // The next freeze only once the send that was in flight at this one is answered and written: a second
      // freeze over it would make a's request timeout fire on waking before it reads the answer, and the
      // retry sends the row twice (a limit of the HTTP client's timers, not of the lease guard).
      await waitFor(
        async () => (await tdb.db('telegram_notifications').where({ message_text: inFlight.text, status: 'sent' }).first()) !== undefined,
        30_000,
        50,
        `cycle ${cycle}: the send in flight at the freeze written`,
      );
    }
    await allSent(total);
    const status = await clusterStatus();
    assert.deepEqual(
      status.takeovers.filter((t) => t.from.startsWith('a-')),
      [],
      'no shard of a was taken over (the freeze stayed inside the TTL)',
    );
    const d = sandbox.delivered();
    // Woken past its fence time, a dispatches nothing for a shard until a renewal has vouched for it again:
    // from when that renewal was answered (a's log says when, per shard). Requests it dispatched before the
    // freeze may still reach the sandbox after it woke; they were sent under a valid lease.
    const sentByA = dispatches(a);
    assert.ok(sentByA.length > 0, "a's dispatches are logged");
    for (const [i, w] of wakes.entries()) {
      const next = wakes[i + 1]?.lines ?? Infinity;
      const renewedAt = new Map<number, number>();
      for (const { line } of linesOf(a, RESUMED).slice(w.lines, next)) {
        const { confirmedAt } = JSON.parse(line) as { confirmedAt: Record<string, number> };
        for (const [shard, at] of Object.entries(confirmedAt)) if (!renewedAt.has(Number(shard))) renewedAt.set(Number(shard), at);
      }
      const early = sentByA.filter((x) => x.at >= w.woke && x.at < (renewedAt.get(x.shard) ?? Infinity));
      assert.deepEqual(
        early,
        [],
        `cycle ${i}: nothing dispatched for a shard of a between waking (${w.woke}; fenced at ${w.fenced}) and the renewal that resumed it (${JSON.stringify(Object.fromEntries(renewedAt))})`,
      );
    }
    assert.equal(new Set(d.map((x) => x.text)).size, total, 'every row delivered');
    if (d.length !== total) {
      const n = new Map<string, number>();
      for (const x of d) n.set(x.text!, (n.get(x.text!) ?? 0) + 1);
      const twice = [...n].filter(([, k]) => k > 1).map(([t]) => t);
      console.log(JSON.stringify(d.filter((x) => twice.includes(x.text!)).map((x) => [x.text, x.at])));
      const twiceChats = twice.map((t) => t.split('-')[1]!);
      for (const w of workers)
        console.log(w.lines.filter((l) => /reaped|fenc|renew|crash|released|retry|error/i.test(l) || twiceChats.some((c) => l.includes(c))).join('\n'));
    }
    assert.equal(d.length, total, 'no duplicates');
    for (const [chat, seq] of byChat(d))
      assert.deepEqual(
        seq,
        [...seq].sort((x, y) => x - y),
        `chat ${chat} in order`,
      );
  });

  it('frozen past its TTL: its shards are taken over; nothing lost, per-chat order kept, repeats only of sends around the freeze', async () => {
    const TTL = 3_000;
    const FROZEN_MS = TTL + 2_000;
    await setup();
    const [a] = await Promise.all([launch('a', TTL), launch('b', TTL), launch('c', TTL)]);
    let st = await balanced(3);
    const shardsOfA = (s: ClusterStatus): Set<number> => new Set(s.processes.find((p) => p.instance.startsWith('a-'))!.owned);
    const chats = chatsFor(shardsOfA(st), 30_000, 24, 8);
    const total = await insert('t', chats, 24);
    await sandbox.waitForDelivered(40, 20_000);
    const freezes: Array<{ from: number; stopped: number; to: number; chats: Set<number> }> = [];
    for (let cycle = 0; cycle < 2; cycle++) {
      const aShards = shardsOfA(st);
      const aChats = new Set(chats.filter((c) => aShards.has(shardOf(c, 64))));
      const from = Date.now();
      a.kill('SIGSTOP');
      // a may still dispatch (and log) until the signal is delivered: after kill() returns it cannot.
      const stopped = Date.now();
      await new Promise((r) => setTimeout(r, FROZEN_MS));
      const to = Date.now();
      a.kill('SIGCONT');
      freezes.push({ from, stopped, to, chats: aChats });
      // The others took a's shards; a comes back with none and gets its share again by handoff.
      st = await balanced(3);
      await nextDelivery(new Set(chats), 30_000);
    }
    await allSent(total);
    const status = await clusterStatus();
    assert.ok(
      status.takeovers.some((t) => t.from.startsWith('a-')),
      'the freeze outlasted the TTL: a shard of a was taken over',
    );
    const d = sandbox.delivered();
    assert.equal(new Set(d.map((x) => x.text)).size, total, 'every row delivered');
    // One kind of repeat is known: rows a dispatched just before it froze whose answer or outcome (written
    // every OUTCOME_FLUSH_MS, 50 ms here, and slower under load) had not reached the table: the new owner
    // sends them again. a's copy may even reach the sandbox only after a woke (dispatched, not yet written).
    // Outcomes land in order, so per chat these are the last rows a dispatched before the freeze: the one on
    // the wire, and the one before it if its outcome was still on its way. Waking, a dispatches nothing for a
    // shard it lost: its senders ask the lease before each send, and it is past its fence time (it used to
    // send rows it still held before its watchdog fenced them). Any other repeat is a bug.
    const ids = await idsByText();
    const sentByA = dispatches(a);
    assert.ok(sentByA.length > 0, "a's dispatches are logged");
    const seen = new Map<string, DeliveredEntry>();
    const repeats: string[] = [];
    const perFreeze = freezes.map(() => new Map<number, number[]>());
    for (const x of d) {
      const first = seen.get(x.text!);
      if (!first) {
        seen.set(x.text!, x);
        continue;
      }
      const id = ids.get(x.text!)!;
      const byA = sentByA.filter((s) => s.id === id).map((s) => s.at);
      // The freeze it was dispatched before (within 2 s), and never again by a from then on.
      const i = freezes.findIndex(
        (z) => z.chats.has(x.chatId) && x.at >= z.from && byA.some((at) => at <= z.stopped && at >= z.from - 2_000) && !byA.some((at) => at > z.stopped),
      );
      if (i < 0) repeats.push(`${x.text} (first at ${first.at}, again at ${x.at}; a dispatched it at ${JSON.stringify(byA)})`);
      else perFreeze[i]!.set(x.chatId, [...(perFreeze[i]!.get(x.chatId) ?? []), id]);
    }
    // Per chat and freeze: a's last dispatches before the freeze, at most two.
    for (const [i, z] of freezes.entries())
      for (const [chat, rows] of perFreeze[i]!) {
        const last = [...new Set(sentByA.filter((s) => s.at <= z.stopped && shardOf(chat, 64) === s.shard).map((s) => s.id))].filter((id) =>
          [...ids].some(([t, v]) => v === id && Number(t.split('-')[1]) === chat),
        );
        const tail = last.slice(-rows.length).sort((p, q) => p - q);
        if (rows.length > 2 || [...rows].sort((p, q) => p - q).join() !== tail.join())
          repeats.push(`chat ${chat} at freeze ${i}: repeated ${JSON.stringify(rows)}, a's last dispatches ${JSON.stringify(last.slice(-3))}`);
      }
    const aChatCount = freezes.reduce((n, z) => n + z.chats.size, 0);
    const repeated = perFreeze.reduce((n, z) => n + [...z.values()].reduce((k, r) => k + r.length, 0), 0);
    console.log(
      `      ${d.length - total} repeat(s) over ${freezes.length} freezes (${aChatCount} chat-freezes), each among its chat's last sends before a freeze`,
    );
    if (repeats.length)
      for (const w of workers) console.log(w.lines.filter((l) => /fenc|lease|acquired|handed|no longer|claimed again|released/i.test(l)).join('\n'));
    assert.deepEqual(repeats, [], `repeats only of a chat's last sends before a freeze (frozen: ${JSON.stringify(freezes.map((z) => [z.from, z.to]))})`);
    assert.equal(d.length - total, repeated);
    // Order: first copies in row order.
    for (const [chat, seq] of byChat(d.filter((x) => seen.get(x.text!) === x))) {
      const sorted = [...seq].sort((x, y) => x - y);
      if (seq.join() !== sorted.join()) {
        console.log(JSON.stringify(d.filter((x) => x.chatId === chat).map((x) => [x.text, x.at])), JSON.stringify(freezes.map((z) => [z.from, z.to])));
        const shard = shardOf(chat, 64);
        for (const w of workers)
          console.log(
            w.lines
              .filter(
                (l) => /fenc|lease|acquired|handed|no longer|claimed again|released|recovered|reaped/i.test(l) && new RegExp(`[\\[,]${shard}[\\],]`).test(l),
              )
              .join('\n'),
          );
      }
      assert.deepEqual(seq, sorted, `chat ${chat} in order`);
    }
  });
});
