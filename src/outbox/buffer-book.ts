/**
 * How many claimed rows each chat has in memory, per shard. Sender actors write their
 * own shard's entries; the claimer reads them to top chats up to their cap and to stop
 * claiming when memory is full. One writer per shard, one thread: no locking needed.
 */
export class BufferBook {
  private readonly shards = new Map<number, Map<number, number>>();
  private total_ = 0;

  get total(): number {
    return this.total_;
  }

  add(shard: number, chatId: number, n: number): void {
    let m = this.shards.get(shard);
    if (!m) this.shards.set(shard, (m = new Map()));
    const v = (m.get(chatId) ?? 0) + n;
    if (v <= 0) m.delete(chatId);
    else m.set(chatId, v);
    this.total_ += n;
  }

  /** Forgets a shard (its sender restarted or the shard moved away). */
  clearShard(shard: number): void {
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
