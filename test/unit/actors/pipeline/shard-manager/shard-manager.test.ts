import { strict as assert } from 'node:assert';
import { spawnShardManager, type Drained, type ShardManagerMsg } from '../../../../../actors/pipeline/shard-manager/shard-manager';
import type { SenderStatus } from '../../../../../actors/pipeline/shard-manager/sender';
import type { Outcome } from '../../../../../src/outbox/types';
import { dispatch, query, startActorSystem, stopActorSystem, type ActorRef, type ActorSystem } from '../../../../../src/runtime/actor';
import { captureLogger, waitFor } from '../../../../helpers/services';
import { fakePipelineDeps, recordingOutcomes, row, type FakePipeline } from '../../../../helpers/pipeline-fakes';

/** The shard manager over real senders, with fake Telegram, repository and a recording outcome writer. */
describe('shard-manager actor (real senders, fake Telegram and repository)', () => {
  let system: ActorSystem;
  let fp: FakePipeline;
  let outcomes: Outcome[];
  let flushes: { n: number };
  let manager: ActorRef<ShardManagerMsg>;

  beforeEach(() => {
    const { log } = captureLogger();
    system = startActorSystem('shard-manager-test', log);
    fp = fakePipelineDeps(log);
    outcomes = [];
    flushes = { n: 0 };
    manager = spawnShardManager(system, fp.deps, recordingOutcomes(system, outcomes, flushes));
  });
  afterEach(() => {
    fp.gate.stop();
    stopActorSystem(system);
  });

  const owned = () => query<ShardManagerMsg, number[]>(manager, (replyTo) => ({ type: 'owned', replyTo }), 1000);
  const status = () => query<ShardManagerMsg, SenderStatus[]>(manager, (replyTo) => ({ type: 'status', replyTo }), 1000);
  const onShard = (shard: number, id: number, chatId: number) => row(id, chatId, { shard });

  it('spawns a sender per owned shard and routes rows to it; rows of a shard not owned are given back at once', async () => {
    dispatch<ShardManagerMsg>(manager, { type: 'own', shards: [2, 0] });
    assert.deepEqual(await owned(), [0, 2]);
    dispatch<ShardManagerMsg>(manager, { type: 'rows', rows: [onShard(0, 1, 10), onShard(2, 2, 12), onShard(5, 3, 15), onShard(5, 4, 25)] });
    await waitFor(() => fp.telegram.calls.length === 2, 1500, 1, 'a call per owned shard');
    assert.deepEqual(fp.telegram.calls.map((c) => c.text).sort(), ['r1', 'r2']);
    await waitFor(() => fp.released.length === 1, 1500, 1, 'orphans released');
    assert.deepEqual(fp.released, [[3, 4]]);
    const s = await status();
    assert.deepEqual(
      s.map((x) => [x.shard, x.inFlight]),
      [
        [0, 1],
        [2, 1],
      ],
    );
  });

  it('release drains only the given shards: in-flight sends finish, unsent rows come back, windows are handed over', async () => {
    dispatch<ShardManagerMsg>(manager, { type: 'own', shards: [0, 1] });
    dispatch<ShardManagerMsg>(manager, { type: 'rows', rows: [onShard(0, 1, 10), onShard(0, 2, 10), onShard(1, 3, 11)] });
    await waitFor(() => fp.telegram.calls.length === 2, 1500, 1, 'one call per shard');
    let drained: Drained | undefined;
    const p = query<ShardManagerMsg, Drained>(manager, (replyTo) => ({ type: 'release', shards: [0], replyTo }), 1500).then((d) => (drained = d));
    // The shard leaves the owned set at once; the answer waits for its send in flight.
    assert.deepEqual(await owned(), [1]);
    assert.equal(drained, undefined);
    const before = flushes.n;
    fp.telegram.ok(fp.telegram.calls.findIndex((c) => c.chatId === 10));
    await p;
    assert.equal(drained!.released, 1, 'row 2 was given back');
    assert.deepEqual([...drained!.windows.keys()], [0]);
    assert.deepEqual(Object.keys(drained!.windows.get(0)!.chats), ['10']);
    assert.ok(flushes.n > before, 'the writer was flushed after the drain');
    await waitFor(() => outcomes.some((o) => o.id === 2 && o.kind === 'release'), 1500, 1, 'row 2 released');
    // Shard 1 goes on; rows still arriving for shard 0 are orphans now.
    fp.telegram.ok(fp.telegram.calls.findIndex((c) => c.chatId === 11));
    await waitFor(() => outcomes.some((o) => o.id === 3 && o.kind === 'sent'), 1500, 1, 'shard 1 still sends');
    dispatch<ShardManagerMsg>(manager, { type: 'rows', rows: [onShard(0, 7, 10)] });
    await waitFor(() => fp.released.length === 1, 1500, 1, 'orphan released');
    assert.deepEqual(fp.released, [[7]]);
  });

  it('drainAll drains every sender and keeps them owned; own without a shard stops its sender', async () => {
    dispatch<ShardManagerMsg>(manager, { type: 'own', shards: [0, 1] });
    dispatch<ShardManagerMsg>(manager, { type: 'rows', rows: [onShard(0, 1, 10), onShard(0, 2, 10), onShard(1, 3, 11), onShard(1, 4, 11)] });
    await waitFor(() => fp.telegram.calls.length === 2, 1500, 1, 'one call per shard');
    fp.telegram.ok(0);
    fp.telegram.ok(1);
    const d = await query<ShardManagerMsg, Drained>(manager, (replyTo) => ({ type: 'drainAll', replyTo }), 1500);
    assert.equal(d.released, 2);
    assert.deepEqual([...d.windows.keys()].sort(), [0, 1]);
    assert.deepEqual(await owned(), [0, 1]);
    assert.ok((await status()).every((s) => s.draining));
    dispatch<ShardManagerMsg>(manager, { type: 'own', shards: [1] });
    assert.deepEqual(await owned(), [1]);
    assert.deepEqual(
      (await status()).map((s) => s.shard),
      [1],
    );
  });
});
