/**
 * How many claimed rows each chat has in memory, per shard. Sender actors write their
 * own shard's entries; the claimer reads them to top chats up to their cap and to stop
 * claiming when memory is full. One writer per shard, one thread: no locking needed.
 */
export class BufferBook {
  private readonly shards = new Map<number, Map<number, number>>();
  private readonly inFlight_ = new Map<number, number>();
  private total_ = 0;

  /** Sends on the wire per shard (senders count them; metrics read them). */
  sending(shard: number, delta: number): void {
    const v = (this.inFlight_.get(shard) ?? 0) + delta;
    if (v <= 0) this.inFlight_.delete(shard);
    else this.inFlight_.set(shard, v);
  }

  inFlightByShard(): ReadonlyMap<number, number> {
    return this.inFlight_;
  }

  /** Rows held per shard. */
  byShard(): Map<number, number> {
    const out = new Map<number, number>();
    for (const [s, m] of this.shards) {
      let t = 0;
      for (const v of m.values()) t += v;
      out.set(s, t);
    }
    return out;
  }

  get total(): number {
    return this.total_;
  }

  add(shard: number, chatId: number, n: number): void {
    let m = this.shards.get(shard);
    if (!m) this.shards.set(shard, (m = new Map<number, number>()));
    const v = (m.get(chatId) ?? 0) + n;
    if (v <= 0) m.delete(chatId);
    else m.set(chatId, v);
    this.total_ += n;
  }

  /** Forgets a shard (its sender restarted or the shard moved away). */
  clearShard(shard: number): void {
    this.inFlight_.delete(shard);
    const m = this.shards.get(shard);
    if (!m) return;
    for (const v of m.values()) this.total_ -= v;
    this.shards.delete(shard);
  }

  /** Per-chat counts across all shards. */
  perChat(): Map<number, number> {
    const out = new Map<number, number>();
    for (const m of this.shards.values()) for (const [c, v] of m) out.set(c, v);
    return out;
  }

  shardTotal(shard: number): number {
    let t = 0;
    for (const v of this.shards.get(shard)?.values() ?? []) t += v;
    return t;
  }
}
