import { strict as assert } from 'node:assert';
import { spawnPipeline, type OwnResult, type PipelineMsg, type PipelineStatus } from '../../../../actors/pipeline/pipeline';
import type { ClaimRequest } from '../../../../src/outbox/repository';
import type { OutboxRow, Outcome } from '../../../../src/outbox/types';
import { dispatch, query, startActorSystem, stopActorSystem, type ActorRef, type ActorSystem } from '../../../../src/runtime/actor';
import { captureLogger, waitFor } from '../../../helpers/services';
import { fakePipelineDeps, row, type FakePipeline } from '../../../helpers/pipeline-fakes';
import type { ChatHandoff } from '../../../../src/limits/chat-limits';

/**
 * The pipeline supervisor over its real children (claimer, shard manager → senders,
 * outcome writer), with a fake repository, handoff store and Telegram client. `calls`
 * records the order in which the pipeline reaches its ports.
 */
describe('pipeline actor (real children, fake repository, handoff and Telegram)', () => {
  let system: ActorSystem;
  let fp: FakePipeline;
  let calls: string[];
  let claims: ClaimRequest[];
  let batches: OutboxRow[][];
  let written: Outcome[];
  let previous: Map<number, string | null>;
  let saved: Array<ReadonlyMap<number, ChatHandoff>>;
  let handedOver: Set<number>;
  let pipeline: ActorRef<PipelineMsg>;

  beforeEach(() => {
    const { log } = captureLogger();
    system = startActorSystem('pipeline-test', log);
    calls = [];
    claims = [];
    batches = [];
    written = [];
    previous = new Map();
    saved = [];
    handedOver = new Set();
    fp = fakePipelineDeps(
      log,
      { outcomeFlushMs: 5 },
      {
        claim: (req: ClaimRequest) => {
          calls.push(`claim ${req.shards.join(',')}`);
          claims.push(req);
          return Promise.resolve(batches.shift() ?? []);
        },
        renewLeases: () => Promise.resolve(0),
        hasDue: () => Promise.resolve(false),
        reapExpired: () => Promise.resolve(0),
        writeOutcomes: (os: Outcome[]) => {
          calls.push(`write ${os.map((o) => `${o.kind}:${o.id}`).join(',')}`);
          written.push(...os);
          return Promise.resolve(new Set(os.map((o) => o.id)).size);
        },
        takeShards: (shards: number[]) => {
          calls.push(`take ${shards.join(',')}`);
          return Promise.resolve({ reclaimed: shards.length, previous: new Map(shards.map((s) => [s, previous.get(s) ?? null])) });
        },
        dropShards: (shards: number[]) => {
          calls.push(`drop ${shards.join(',')}`);
          return Promise.resolve();
        },
      },
    );
    fp.deps.handoff = {
      save: (_from, windows) => {
        calls.push(`save ${[...windows.keys()].join(',')}`);
        saved.push(windows);
        return Promise.resolve(new Set([...windows.keys()].filter((s) => handedOver.has(s))));
      },
      load: (shards) => {
        calls.push(`load ${shards.join(',')}`);
        return Promise.resolve(new Map());
      },
    };
    pipeline = spawnPipeline(system, fp.deps);
  });
  afterEach(() => {
    fp.gate.stop();
    stopActorSystem(system);
  });

  const own = (shards: number[]) => query<PipelineMsg, OwnResult>(pipeline, (replyTo) => ({ type: 'own', shards, replyTo }), 1500);
  const onShard = (shard: number, id: number, chatId: number) => row(id, chatId, { shard });
  const answerAll = () => fp.telegram.open().forEach((c) => fp.telegram.ok(fp.telegram.calls.indexOf(c)));

  it('own fences new shards before claiming them; a shard another process held waits a full chat window', async () => {
    previous.set(1, 'other:9');
    batches.push([onShard(0, 1, 10), onShard(1, 2, 11)]);
    const ownedAt = fp.clock.now();
    const r = await own([1, 0, 1]);
    assert.deepEqual(r, { owned: [0, 1], released: 0, reclaimed: 2, previousOwners: [{ shard: 1, owner: 'other:9' }] });
    await waitFor(() => calls.some((c) => c.startsWith('claim')), 1000, 1, 'a claim');
    assert.deepEqual(calls.slice(0, 3), ['load 0,1', 'take 0,1', 'claim 0,1'], 'handoff records read and shards fenced before the first claim');
    await waitFor(() => fp.telegram.calls.length === 2, 1500, 1, 'both rows sent');
    const c11 = fp.telegram.of(11)[0]!;
    assert.ok(c11.at - ownedAt >= 40, `taken over from a process that did not hand over: first send ${c11.at - ownedAt} ms after owning, window 40 ms`);
    answerAll();
    await waitFor(() => written.filter((o) => o.kind === 'sent').length === 2, 1500, 1, 'outcomes written');
    const st = await query<PipelineMsg, PipelineStatus>(pipeline, (replyTo) => ({ type: 'status', replyTo }), 1500);
    assert.deepEqual(
      st.shards.map((s) => [s.shard, s.sent]),
      [
        [0, 1],
        [1, 1],
      ],
    );
    assert.equal(st.gate.limitPerWindow, 1000);
  });

  it("own's I/O runs outside the mailbox: status is answered while fencing hangs, and a fence that came meanwhile is applied after it, in order", async () => {
    let unblock: () => void = () => undefined;
    const blocked = new Promise<void>((resolve) => (unblock = resolve));
    const take = fp.deps.repo.takeShards.bind(fp.deps.repo);
    fp.deps.repo.takeShards = async (shards) => {
      await blocked;
      return take(shards);
    };
    const owning = own([0, 1]);
    await waitFor(() => calls.includes('load 0,1'), 1000, 1, 'the ownership change started');
    // Before: the mailbox waited for the fencing rows, so this query timed out behind it.
    const st = await query<PipelineMsg, PipelineStatus>(pipeline, (replyTo) => ({ type: 'status', replyTo }), 500);
    assert.deepEqual(st.shards, [], 'no sender yet: the shards are not fenced');
    const fenced = query<PipelineMsg, { released: number }>(pipeline, (replyTo) => ({ type: 'release', shards: [1], replyTo }), 1500);
    unblock();
    assert.deepEqual((await owning).owned, [0, 1], 'the change completes as asked');
    await fenced;
    await waitFor(() => claims.length >= 1, 1000, 1, 'a claim');
    dispatch<PipelineMsg>(pipeline, { type: 'wake' });
    await waitFor(() => claims.at(-1)!.shards.join() === '0', 1000, 1, 'the fence applied after the change: only shard 0 claimed');
  });

  it('own without a shard drains it, saves its chat windows and clears its fencing row only if they were saved', async () => {
    batches.push([onShard(0, 1, 10), onShard(1, 2, 11), onShard(1, 3, 11)]);
    await own([0, 1]);
    await waitFor(() => fp.telegram.calls.length === 2, 1500, 1, 'a send per shard');
    answerAll();
    await waitFor(() => written.filter((o) => o.kind === 'sent').length === 2, 1500, 1, 'sent');
    handedOver.add(1);
    calls.length = 0;
    const r = await own([0]);
    assert.deepEqual(r.owned, [0]);
    assert.equal(r.released, 1, 'row 3 was given back');
    assert.ok(written.some((o) => o.id === 3 && o.kind === 'release'));
    assert.deepEqual(Object.keys(saved[0]!.get(1)!.chats), ['11'], 'the window of chat 11 went to the handoff store');
    const i = calls.indexOf('save 1');
    assert.ok(i >= 0 && calls.indexOf('drop 1') > i, `fencing row cleared after the windows were saved: ${calls.join(' | ')}`);
    // The claimer no longer claims shard 1.
    dispatch<PipelineMsg>(pipeline, { type: 'wake' });
    await waitFor(() => claims.length >= 2, 1000, 1, 'a claim after the wake');
    assert.deepEqual(claims.at(-1)!.shards, [0]);
  });

  it('a shard whose windows could not be saved keeps its fencing row (the next owner waits a full window)', async () => {
    await own([0, 1]);
    calls.length = 0;
    await own([0]);
    assert.ok(calls.includes('save 1'));
    assert.ok(calls.includes('drop '), `no shard dropped: ${calls.join(' | ')}`);
  });

  it('shutdown: stop claiming, drain, write every outcome, then save windows and release the fencing rows', async () => {
    batches.push([onShard(0, 1, 10), onShard(0, 2, 10)]);
    await own([0]);
    await waitFor(() => fp.telegram.calls.length === 1, 1500, 1, 'the first send');
    handedOver.add(0);
    calls.length = 0;
    const done = query<PipelineMsg, { released: number }>(pipeline, (replyTo) => ({ type: 'shutdown', replyTo }), 1500);
    // The send in flight finishes during the drain.
    await waitFor(
      async () => (await query<PipelineMsg, PipelineStatus>(pipeline, (replyTo) => ({ type: 'status', replyTo }), 1000)).shards.every((s) => s.draining),
      1000,
      2,
      'draining',
    );
    answerAll();
    assert.deepEqual(await done, { released: 1 });
    const w = calls.findIndex((c) => c.includes('release:2'));
    assert.ok(w >= 0 && calls.some((c) => c.includes('sent:1')), `outcomes written: ${calls.join(' | ')}`);
    assert.ok(calls.indexOf('save 0') > w && calls.indexOf('drop 0') > calls.indexOf('save 0'), `order: ${calls.join(' | ')}`);
    // Paused: a wake claims nothing.
    const before = claims.length;
    dispatch<PipelineMsg>(pipeline, { type: 'wake' });
    await query<PipelineMsg, PipelineStatus>(pipeline, (replyTo) => ({ type: 'status', replyTo }), 1000);
    assert.equal(claims.length, before);
  });
});
