import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

export const NATS_SERVER_BIN = process.env.NATS_SERVER_BIN ?? '/usr/sbin/nats-server';
export const DEPLOY_CONF = resolve(__dirname, '../../deploy/nats-server.conf');

import { freePort } from './ports';

export { freePort };

/**
 * deploy/nats-server.conf adapted to a test: the JetStream store in `storeDir`, and every
 * application subject prefixed with `prefix` (what an operator does for NATS_SUBJECT_PREFIX,
 * see docs/security.md). Nothing else changes.
 */
export function renderDeployConf(storeDir: string, prefix = ''): string {
  const text = readFileSync(DEPLOY_CONF, 'utf8');
  const out = text.replace(/store_dir: "[^"]*"/, `store_dir: ${JSON.stringify(storeDir)}`).replace(/"(notify|ads|images|messages)\./g, `"${prefix}$1.`);
  if (!out.includes(JSON.stringify(storeDir))) throw new Error('store_dir line not found in deploy/nats-server.conf');
  return out;
}

export interface PrivateNats {
  url: string;
  port: number;
  dir: string;
  logs: () => string;
  stop(): Promise<void>;
}

/** Starts /usr/sbin/nats-server with `conf` on a free port; resolves once it accepts clients. */
export async function startPrivateNats(conf: string, env: Record<string, string>, dir = mkdtempSync(join(tmpdir(), 'nats-'))): Promise<PrivateNats> {
  const port = await freePort();
  const file = join(dir, 'nats-server.conf');
  writeFileSync(file, conf);
  const proc: ChildProcess = spawn(NATS_SERVER_BIN, ['-c', file, '-a', '127.0.0.1', '-p', String(port)], {
    env: { PATH: process.env.PATH ?? '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  proc.stdout!.on('data', (b: Buffer) => (out += b.toString()));
  proc.stderr!.on('data', (b: Buffer) => (out += b.toString()));
  const exited = new Promise<void>((r) => {
    proc.once('exit', () => {
      r();
    });
  });
  await new Promise<void>((res, rej) => {
    const timer = setTimeout(() => {
      rej(new Error(`nats-server did not start within 10 s:\n${out}`));
    }, 10_000);
    const check = (): void => {
      if (out.includes('Server is ready')) {
        clearTimeout(timer);
        res();
      }
    };
    proc.stderr!.on('data', check);
    proc.stdout!.on('data', check);
    void exited.then(() => {
      clearTimeout(timer);
      rej(new Error(`nats-server exited at start:\n${out}`));
    });
  });
  let stopping: Promise<void> | undefined;
  return {
    url: `nats://127.0.0.1:${port}`,
    port,
    dir,
    logs: () => out,
    stop: () =>
      (stopping ??= (async () => {
        if (proc.exitCode === null) proc.kill('SIGTERM');
        await exited;
        rmSync(dir, { recursive: true, force: true });
      })()),
  };
}
