import type { KV, NatsConnection } from 'nats';
import type { Logger } from '../log';
import { describeError } from '../errors';
import { decodeValue, encodeValue } from './kv';
import { assertStreamMatches, streamDifferences } from '../nats/streams';

/** What a shard's previous owner left of its chats' windows (see limits/chat-limits.ts). */
export interface HandoffRecord {
  /** The previous owner (`<instance>:<boot id>`). */
  from: string;
  /** When it stopped sending for the shard (ms epoch). */
  at: number;
  /** chat id → answer times of sends still inside the chat's window. */
  chats: Record<string, number[]>;
  /** False when chats were left out (size cap): unlisted chats are then assumed full. */
  complete: boolean;
}

/**
 * Carries chat windows from a shard's old owner to its new one. `save` answers which
 * shards were stored: only those may be marked released in the database, so a shard whose
 * record is missing still names its old owner there and the new owner waits a full window.
 */
export interface HandoffStore {
  save(from: string, windows: ReadonlyMap<number, Record<string, number[]>>): Promise<Set<number>>;
  load(shards: readonly number[]): Promise<Map<number, HandoffRecord>>;
}

/**
 * One process owning every shard (no cluster): nowhere to keep the windows, so nothing is
 * marked handed over, and a restart waits a full window per chat before its first send there
 * (a restart can come back within a group's minute).
 */
export const noHandoff: HandoffStore = {
  save: () => Promise.resolve(new Set()),
  load: () => Promise.resolve(new Map()),
};

/** Chats per record at most (about 40 bytes each, far below NATS's 1 MiB payload). */
const MAX_CHATS = 10_000;

/**
 * Handoff records in their own KV bucket, kept longer than the longest chat-scope window
 * (a group's minute) so a record outlives any window it describes; a stale record only
 * repeats waits that are already over.
 */
export class KvHandoffStore implements HandoffStore {
  private constructor(
    private readonly kv: KV,
    private readonly log: Logger,
  ) {}

  /**
   * `replicas`: NATS_REPLICAS (an existing bucket with another count is a start-up error, as for
   * every stream; its age may differ: records only need to outlive a chat window). `timeoutMs`:
   * how long a read or write may take. A shard's new owner (or its holder resuming it after a
   * JetStream election) waits for the read; a record it cannot read costs a full window per
   * chat, a slow read delays every chat of the shard (nats.js's default, 5 s, did after a node
   * died).
   */
  static async open(
    nc: NatsConnection,
    clusterBucket: string,
    ttlMs: number,
    log: Logger,
    o: { replicas: number; timeoutMs: number } = { replicas: 1, timeoutMs: 1_000 },
  ): Promise<KvHandoffStore> {
    const name = `${clusterBucket}_handoff`;
    const kv = await nc.jetstream({ timeout: o.timeoutMs }).views.kv(name, { ttl: ttlMs, history: 1, replicas: o.replicas });
    const status = await kv.status();
    const want = { stream: `KV_${name}`, what: `handoff KV bucket "${name}"`, replicas: o.replicas, maxAgeMs: ttlMs, maxAgeVar: 'the chat windows' };
    if (streamDifferences(status.streamInfo.config, want).some((d) => d.field === 'replicas'))
      assertStreamMatches({ ...status.streamInfo.config, max_age: ttlMs * 1e6 }, want);
    return new KvHandoffStore(kv, log);
  }

  async save(from: string, windows: ReadonlyMap<number, Record<string, number[]>>): Promise<Set<number>> {
    const saved = new Set<number>();
    const at = Date.now();
    await Promise.all(
      [...windows].map(async ([shard, chats]) => {
        const ids = Object.keys(chats);
        const complete = ids.length <= MAX_CHATS;
        const kept = complete ? chats : Object.fromEntries(ids.slice(0, MAX_CHATS).map((id) => [id, chats[id]!]));
        try {
          await this.kv.put(`shard.${shard}`, encodeValue({ from, at, chats: kept, complete } satisfies HandoffRecord));
          saved.add(shard);
        } catch (e) {
          this.log.warn({ shard, err: describeError(e) }, 'could not hand over chat windows; the new owner will wait a full window');
        }
      }),
    );
    return saved;
  }

  async load(shards: readonly number[]): Promise<Map<number, HandoffRecord>> {
    const out = new Map<number, HandoffRecord>();
    await Promise.all(
      shards.map(async (shard) => {
        try {
          const e = await this.kv.get(`shard.${shard}`);
          if (!e || e.operation !== 'PUT') return;
          const r = decodeValue(e.value) as HandoffRecord | undefined;
          if (r && typeof r.at === 'number' && r.chats && typeof r.chats === 'object') out.set(shard, r);
        } catch (err) {
          this.log.warn({ shard, err: describeError(err) }, 'could not read the handoff record; waiting a full window instead');
        }
      }),
    );
    return out;
  }
}
