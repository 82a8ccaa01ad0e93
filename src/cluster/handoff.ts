import type { KV, NatsConnection } from 'nats';
import type { Logger } from '../log';
import type { ChatHandoff, LearnedLimit } from '../limits/chat-limits';
import { describeError } from '../errors';
import { decodeValue, encodeValue } from './kv';
import { assertStreamMatches, streamDifferences } from '../nats/streams';

/** What a shard's previous owner left of its chats' windows and learned limits (see limits/chat-limits.ts). */
export interface HandoffRecord {
  /** The previous owner (`<instance>:<boot id>`). */
  from: string;
  /** When it stopped sending for the shard (ms epoch). */
  at: number;
  /** chat id → answer times of sends still inside the chat's window. */
  chats: Record<string, number[]>;
  /** False when chats were left out (size cap): unlisted chats are then assumed full. */
  complete: boolean;
  /**
   * chat id → what the chat's controller learned from 429s (chats whose rate was lowered). Absent in records
   * written before it existed; chats left out (size cap) start at their ceiling and learn again.
   */
  learned?: Record<string, LearnedLimit>;
}

/**
 * Carries chat windows and learned limits from a shard's old owner to its new one. `save`
 * answers which shards were stored: only those may be marked released in the database, so a
 * shard whose record is missing still names its old owner there and the new owner waits a full window.
 */
export interface HandoffStore {
  save(from: string, handoffs: ReadonlyMap<number, ChatHandoff>): Promise<Set<number>>;
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

/** Chats' windows per record at most (about 40 bytes each, far below NATS's 1 MiB payload). */
export const MAX_CHATS = 10_000;
/** Learned limits per record at most (about 110 bytes each): the most recently lowered are kept. */
export const MAX_LEARNED = 2_000;

/** The record `save` writes for one shard: the size caps applied. */
export function handoffRecord(from: string, at: number, h: ChatHandoff): HandoffRecord {
  const ids = Object.keys(h.chats);
  const complete = ids.length <= MAX_CHATS;
  const chats = complete ? h.chats : Object.fromEntries(ids.slice(0, MAX_CHATS).map((id) => [id, h.chats[id]!]));
  let learned = h.learned;
  if (Object.keys(learned).length > MAX_LEARNED)
    learned = Object.fromEntries(
      Object.entries(learned)
        .sort(([, a], [, b]) => b.decreasedAt - a.decreasedAt)
        .slice(0, MAX_LEARNED),
    );
  return { from, at, chats, complete, ...(Object.keys(learned).length ? { learned } : {}) };
}

const isNumber = (x: unknown): x is number => typeof x === 'number' && Number.isFinite(x);
const isObject = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x);
const isChatId = (id: string): boolean => /^-?[1-9][0-9]{0,15}$/.test(id);

/**
 * A stored record, checked before anyone trusts it: the shape and the types of every field. A chat whose
 * entry is malformed is left out of `learned` (it learns again); a malformed window makes the record
 * incomplete (unlisted chats are then assumed full, the safe side). Ranges are the reader's business: the
 * ChatLimiter clamps learned rates to its own ceilings. Undefined when the record cannot be used at all.
 */
export function parseHandoffRecord(value: unknown): HandoffRecord | undefined {
  if (!isObject(value) || !isNumber(value.at) || !isObject(value.chats)) return undefined;
  let complete = value.complete === true;
  const chats: Record<string, number[]> = {};
  for (const [id, times] of Object.entries(value.chats)) {
    if (isChatId(id) && Array.isArray(times) && times.every(isNumber)) chats[id] = times;
    else complete = false;
  }
  const learned: Record<string, LearnedLimit> = {};
  if (isObject(value.learned))
    for (const [id, l] of Object.entries(value.learned)) {
      if (!isChatId(id) || !isObject(l) || !isNumber(l.rate) || !isNumber(l.decreasedAt) || !isNumber(l.memoryMs)) continue;
      learned[id] = {
        rate: l.rate,
        decreasedAt: l.decreasedAt,
        memoryMs: l.memoryMs,
        ...(isNumber(l.refused) ? { refused: l.refused } : {}),
        ...(isNumber(l.known) ? { known: l.known } : {}),
      };
    }
  return {
    from: typeof value.from === 'string' ? value.from : '',
    at: value.at,
    chats,
    complete,
    ...(Object.keys(learned).length ? { learned } : {}),
  };
}

/**
 * Handoff records in their own KV bucket, kept longer than the longest chat-scope window
 * (a group's minute) so a record outlives any window it describes; a stale record only
 * repeats waits that are already over. Learned limits live as long as the record: a shard
 * that moves again within it carries them on, one taken later learns again.
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

  async save(from: string, handoffs: ReadonlyMap<number, ChatHandoff>): Promise<Set<number>> {
    const saved = new Set<number>();
    const at = Date.now();
    await Promise.all(
      [...handoffs].map(async ([shard, h]) => {
        try {
          await this.kv.put(`shard.${shard}`, encodeValue(handoffRecord(from, at, h)));
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
          const r = parseHandoffRecord(decodeValue(e.value));
          if (r) out.set(shard, r);
          else {
            // Unusable: as incomplete as a record can be, so every chat of the shard waits a full window from now.
            this.log.warn({ shard }, 'malformed handoff record ignored; waiting a full window instead');
            out.set(shard, { from: '', at: Date.now(), chats: {}, complete: false });
          }
        } catch (err) {
          this.log.warn({ shard, err: describeError(err) }, 'could not read the handoff record; waiting a full window instead');
        }
      }),
    );
    return out;
  }
}
