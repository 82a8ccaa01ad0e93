/**
 * Splits the bot's global budget (`capacity` sends per window) between processes by
 * demand, max-min fair: every live process keeps a small floor so a message arriving at
 * an idle process goes out at once; the rest goes to demand, smallest demands satisfied
 * first. What nobody asked for stays unallocated: a process whose demand appears can
 * then be raised at the coordinator's next tick, without first waiting for others to
 * shrink (a decrease must be followed by a full window before anyone grows).
 * The result never sums above `capacity`.
 */
export function computeShares(capacity: number, demands: ReadonlyMap<string, number>): Map<string, number> {
  const ids = [...demands.keys()].sort();
  const out = new Map<string, number>();
  if (ids.length === 0) return out;
  // One send per window is enough for a lone message to go out at once.
  const floor = Math.min(Math.floor(capacity / ids.length), Math.max(1, Math.floor(capacity * 0.005)));
  let left = capacity - floor * ids.length;
  for (const id of ids) out.set(id, floor);
  // Water-filling of the extra demand above the floor.
  let hungry = ids.filter((id) => demands.get(id)! > floor);
  while (left > 0 && hungry.length > 0) {
    const each = Math.max(1, Math.floor(left / hungry.length));
    const next: string[] = [];
    for (const id of hungry) {
      if (left <= 0) break;
      const want = demands.get(id)! - out.get(id)!;
      const give = Math.min(want, each, left);
      out.set(id, out.get(id)! + give);
      left -= give;
      if (out.get(id)! < demands.get(id)!) next.push(id);
    }
    hungry = next;
  }
  return out;
}
