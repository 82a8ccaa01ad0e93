import { spawn, type ChildProcess } from 'node:child_process';
import { resolve } from 'node:path';
import os from 'node:os';
import { WindowCounter, groupWindowLimit, windowLimit } from '../sandbox/window';

/** Deterministic PRNG (mulberry32) so every run draws the same workload. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Starts the sandbox CLI in its own process (so it does not share our CPU time slices). */
export async function startSandboxProcess(flags: string[]): Promise<{ apiRoot: string; proc: ChildProcess; stop: () => Promise<void> }> {
  const proc = spawn(process.execPath, ['--import', 'tsx', resolve(__dirname, '../sandbox/cli.ts'), '--port', '0', ...flags], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const apiRoot = await new Promise<string>((res, rej) => {
    let buf = '';
    proc.stdout.on('data', (d: Buffer) => {
      buf += d.toString();
      const m = /"apiRoot":"([^"]+)"/.exec(buf);
      if (m) res(m[1]!);
    });
    proc.once('exit', () => rej(new Error(`sandbox exited: ${buf}`)));
  });
  return {
    apiRoot,
    proc,
    stop: () =>
      new Promise<void>((res) => {
        proc.once('exit', () => res());
        proc.kill('SIGTERM');
      }),
  };
}

/** Reads a sandbox control endpoint (`{ ok, result }`). */
export async function getJson<T>(url: string, init?: RequestInit): Promise<T> {
  const r = await fetch(url, init);
  const body = (await r.json()) as { ok: boolean; result: T };
  if (!body.ok) throw new Error(`${url}: ${JSON.stringify(body)}`);
  return body.result;
}

export function machine(): string {
  const cpus = os.cpus();
  return `${cpus.length} × ${cpus[0]?.model.trim() ?? 'cpu'}, ${Math.round(os.totalmem() / 2 ** 30)} GiB, Node ${process.version}`;
}

export function table(headers: string[], rows: Array<Array<string | number>>): string {
  const cells = [headers, ...rows.map((r) => r.map(String))];
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]) => `| ${r.map((c, i) => c.padEnd(widths[i]!)).join(' | ')} |`;
  return [line(headers), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...rows.map((r) => line(r.map(String)))].join('\n');
}

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

/** When the sandbox first received a message for one of `chats` after `afterMs` (a takeover's first delivery); polls. */
export async function firstDeliveryAfter(apiRoot: string, afterMs: number, chats: ReadonlySet<number>): Promise<number> {
  for (;;) {
    const d = await getJson<Array<{ at: number; chatId: number }>>(`${apiRoot}sandbox/delivered`);
    let first = Infinity;
    for (const x of d) if (x.at > afterMs && chats.has(x.chatId) && x.at < first) first = x.at;
    if (first !== Infinity) return first;
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * Drain time (s) of a sender that knows the server's real limits: each message goes at the earliest instant
 * both the bot's window and its group's window admit it (the sandbox's own windows), groups interleaved.
 * For groups, `n ÷ rate` says nothing: 20 groups × 150 at 100/min and 300/s bot-wide take 63.3 s, not 60,
 * because the first 100 of each group take 6.7 s at the bot rate and the last 50 must wait a window after them.
 */
export function knowingSenderDrain(rows: Array<{ telegram_id: number }>, globalRate: number, groupPerMin: number, groupWindowMs: number): number {
  const global = windowLimit(globalRate);
  const group = groupWindowLimit(groupPerMin, groupWindowMs);
  const bot = new WindowCounter();
  const left = new Map<number, number>();
  for (const r of rows) left.set(r.telegram_id, (left.get(r.telegram_id) ?? 0) + 1);
  const windows = new Map([...left.keys()].map((id) => [id, new WindowCounter()]));
  let t = 0;
  let last = 0;
  for (let sent = 0; sent < rows.length; sent++) {
    let best: number | undefined;
    let at = Infinity;
    for (const [id, n] of left) {
      if (n === 0) continue;
      const ready = t + windows.get(id)!.waitMs(1, t, group);
      // Ties go to the group with most left: groups interleave, as a round-robin sender's would.
      if (ready < at || (ready === at && n > left.get(best!)!)) [best, at] = [id, ready];
    }
    t = at;
    t += bot.waitMs(1, t, global);
    // The group's window may have moved on while waiting for the bot's: still free (entries only expire).
    windows.get(best!)!.add(1, t);
    bot.add(1, t);
    left.set(best!, left.get(best!)! - 1);
    last = t;
  }
  return last / 1000;
}
