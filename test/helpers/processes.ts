import { spawn, type ChildProcess } from 'node:child_process';
import { resolve } from 'node:path';

const ROOT = resolve(__dirname, '../..');

export interface Worker {
  proc: ChildProcess;
  /** Every stdout/stderr line so far. */
  lines: string[];
  /** Resolves when a log line matches `re`. */
  waitForLine(re: RegExp, timeoutMs?: number): Promise<string>;
  exited: Promise<number | null>;
  kill(signal?: NodeJS.Signals): void;
}

/** Views streams test workers created by default (one per subject prefix); dropped after the run (test/helpers/root-hooks.ts). */
export const assignedViewsStreams = new Set<string>();

/**
 * Starts `src/main.ts` (or another entry) in a real child process with the given environment.
 * A worker with its own NATS_SUBJECT_PREFIX and no VIEWS_STREAM gets the prefix's default
 * stream (`<prefix>_ADS_VIEWS`, src/config/ads.ts), shared by the workers of that test and
 * dropped after the run.
 */
export function startWorker(env: Record<string, string>, entry = 'src/main.ts'): Worker {
  const prefix = env.NATS_SUBJECT_PREFIX;
  if (env.VIEWS_STREAM === undefined && prefix) assignedViewsStreams.add(`${prefix.replace(/\./g, '_')}ADS_VIEWS`);
  const proc = spawn(process.execPath, ['--import', 'tsx', entry], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? '', METRICS_PORT: '0', TELEGRAM_SANDBOX_PORT: '0', LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: string[] = [];
  const listeners = new Set<() => void>();
  const onData = (buf: Buffer): void => {
    for (const l of buf.toString('utf8').split('\n')) if (l.trim()) lines.push(l);
    for (const f of listeners) f();
  };
  proc.stdout.on('data', onData);
  proc.stderr.on('data', onData);
  const exited = new Promise<number | null>((res) => proc.once('exit', (code) => res(code)));
  return {
    proc,
    lines,
    exited,
    kill: (signal = 'SIGTERM') => {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
    },
    waitForLine: (re, timeoutMs = 30_000) =>
      new Promise<string>((res, rej) => {
        const check = (): boolean => {
          const hit = lines.find((l) => re.test(l));
          if (hit) {
            listeners.delete(check);
            clearTimeout(timer);
            res(hit);
            return true;
          }
          return false;
        };
        const timer = setTimeout(() => {
          listeners.delete(check);
          rej(new Error(`no line matching ${re} within ${timeoutMs} ms; last lines:\n${lines.slice(-10).join('\n')}`));
        }, timeoutMs);
        if (!check()) listeners.add(check);
        void exited.then(() => {
          if (listeners.has(check)) {
            listeners.delete(check);
            clearTimeout(timer);
            rej(new Error(`process exited before a line matching ${re}; last lines:\n${lines.slice(-10).join('\n')}`));
          }
        });
      }),
  };
}
