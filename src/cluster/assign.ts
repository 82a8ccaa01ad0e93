/**
 * Balanced shard assignment with few moves. With N live members each gets ⌊S/N⌋ or
 * ⌈S/N⌉ shards (the first S mod N members in sorted order get one more). A shard stays
 * with its current owner while that owner is alive and under its quota; the rest go to
 * members with room, in order. Every process computes the same answer from the same view.
 */
export function assignShards(shardCount: number, members: readonly string[], current: ReadonlyMap<number, string | undefined>): Map<number, string> {
  const live = [...new Set(members)].sort();
  const out = new Map<number, string>();
  if (live.length === 0) return out;
  const base = Math.floor(shardCount / live.length);
  const extra = shardCount % live.length;
  const quota = new Map(live.map((m, i) => [m, base + (i < extra ? 1 : 0)]));
  const used = new Map(live.map((m) => [m, 0]));
  const unplaced: number[] = [];
  for (let s = 0; s < shardCount; s++) {
    const owner = current.get(s);
    if (owner !== undefined && quota.has(owner) && used.get(owner)! < quota.get(owner)!) {
      out.set(s, owner);
      used.set(owner, used.get(owner)! + 1);
    } else unplaced.push(s);
  }
  let i = 0;
  for (const s of unplaced) {
    while (used.get(live[i]!)! >= quota.get(live[i]!)!) i++;
    const m = live[i]!;
    out.set(s, m);
    used.set(m, used.get(m)! + 1);
  }
  return out;
}
