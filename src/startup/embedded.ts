import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { accessSync, constants, existsSync, mkdirSync, openSync, closeSync } from 'node:fs';
import { connect } from 'node:net';
import { delimiter, join, resolve } from 'node:path';
import type { Logger } from '../log';
import { StartupError } from '../errors';

/**
 * Development defaults for a laptop: with DATABASE_URL / NATS_URL unset and nothing
 * answering on the default local port, start mariadbd / nats-server from the PATH with
 * their data under a git-ignored directory (`.data/`), and stop them when we stop.
 * Never with explicit URLs; when a server is needed and not installed, the error says
 * the one command that installs it.
 */

/** The one command that installs both servers, for this platform. */
export const INSTALL_COMMAND = process.platform === 'darwin' ? 'brew install mariadb nats-server' : 'sudo apt-get install mariadb-server nats-server';

/** Where system daemons live but a non-root PATH often does not reach. */
const SBIN_DIRS = ['/usr/sbin', '/usr/local/sbin', '/opt/homebrew/bin', '/usr/local/opt/mariadb/bin'];

/** The first executable named one of `names` in `pathEnv` (then `extraDirs`), or undefined. */
export function findBinary(names: readonly string[], pathEnv: string | undefined, extraDirs: readonly string[] = SBIN_DIRS): string | undefined {
  const dirs = [...(pathEnv ?? '').split(delimiter).filter(Boolean), ...extraDirs];
  for (const name of names) {
    for (const dir of dirs) {
      const candidate = join(dir, name);
      try {
        accessSync(candidate, constants.X_OK);
        return candidate;
      } catch {
        // not here
      }
    }
  }
  return undefined;
}

/** True when something accepts TCP connections on 127.0.0.1:port within `timeoutMs`. */
export function answers(port: number, timeoutMs = 1_000): Promise<boolean> {
  return new Promise((res) => {
    const socket = connect({ host: '127.0.0.1', port });
    const done = (ok: boolean): void => {
      socket.destroy();
      res(ok);
    };
    socket.setTimeout(timeoutMs, () => {
      done(false);
    });
    socket.once('connect', () => {
      done(true);
    });
    socket.once('error', () => {
      done(false);
    });
  });
}

/** A server we started; `stop()` is idempotent. */
export interface EmbeddedServer {
  name: 'mariadbd' | 'nats-server';
  pid: number;
  port: number;
  logFile: string;
  stop(): Promise<void>;
}

export interface EmbeddedOptions {
  log: Logger;
  /** Start MariaDB (DATABASE_URL unset)? */
  mariadb: boolean;
  /** Start NATS (NATS_URL unset)? */
  nats: boolean;
  mariadbPort: number;
  natsPort: number;
  dataDir: string;
  env?: NodeJS.ProcessEnv;
  /** Searched after the PATH (default: the usual sbin directories). */
  searchDirs?: readonly string[];
}

/**
 * Starts what is asked for and not already answering. Returns the servers it started
 * (for the shutdown sequence). Waiting until they accept connections is the caller's
 * ordinary start-up wait.
 */
export async function startEmbedded(o: EmbeddedOptions): Promise<EmbeddedServer[]> {
  const env = o.env ?? process.env;
  const dataDir = resolve(o.dataDir);
  const started: EmbeddedServer[] = [];
  try {
    if (o.mariadb && !(await answers(o.mariadbPort))) started.push(startMariadb(o.log, dataDir, o.mariadbPort, env, o.searchDirs ?? SBIN_DIRS));
    if (o.nats && !(await answers(o.natsPort))) started.push(startNats(o.log, dataDir, o.natsPort, env, o.searchDirs ?? SBIN_DIRS));
  } catch (e) {
    await Promise.all(started.map((s) => s.stop()));
    throw e;
  }
  return started;
}

function startMariadb(log: Logger, dataDir: string, port: number, env: NodeJS.ProcessEnv, dirs: readonly string[]): EmbeddedServer {
  const server = findBinary(['mariadbd', 'mysqld'], env.PATH, dirs);
  const install = findBinary(['mariadb-install-db', 'mysql_install_db'], env.PATH, dirs);
  if (!server || !install) {
    throw new StartupError(
      'DEPENDENCY_MISSING',
      'DATABASE_URL',
      `nothing answers on 127.0.0.1:${port} and MariaDB is not installed (no ${server ? 'mariadb-install-db' : 'mariadbd'} on the PATH): install it with \`${INSTALL_COMMAND}\`, or set DATABASE_URL to a running server`,
    );
  }
  const dir = join(dataDir, 'mariadb');
  const data = join(dir, 'data');
  mkdirSync(dir, { recursive: true });
  const asRoot = process.getuid?.() === 0 ? ['--user=root'] : [];
  if (!existsSync(join(data, 'mysql'))) {
    log.info({ dataDir: data }, 'initialising an embedded MariaDB data directory (first start)');
    const r = spawnSync(install, ['--no-defaults', `--datadir=${data}`, '--auth-root-authentication-method=normal', '--skip-test-db', ...asRoot], {
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: 120_000,
    });
    if (r.status !== 0)
      throw new StartupError(
        'DEPENDENCY_MISSING',
        'DATABASE_URL',
        `${install} failed (exit ${String(r.status)}): ${r.stderr.toString().trim().split('\n').slice(-3).join(' / ')}`,
      );
  }
  const logFile = join(dir, 'server.log');
  const args = [
    '--no-defaults',
    `--datadir=${data}`,
    `--port=${port}`,
    '--bind-address=127.0.0.1',
    `--socket=${join(dir, 'mariadb.sock')}`,
    `--pid-file=${join(dir, 'mariadb.pid')}`,
    '--skip-log-bin',
    '--innodb-buffer-pool-size=64M',
    ...asRoot,
  ];
  return spawnServer(log, 'mariadbd', server, args, port, logFile, dataDir);
}

function startNats(log: Logger, dataDir: string, port: number, env: NodeJS.ProcessEnv, dirs: readonly string[]): EmbeddedServer {
  const server = findBinary(['nats-server'], env.PATH, dirs);
  if (!server)
    throw new StartupError(
      'DEPENDENCY_MISSING',
      'NATS_URL',
      `nothing answers on 127.0.0.1:${port} and nats-server is not installed: install it with \`${INSTALL_COMMAND}\`, or set NATS_URL to a running server`,
    );
  const dir = join(dataDir, 'nats');
  mkdirSync(dir, { recursive: true });
  const logFile = join(dir, 'server.log');
  return spawnServer(
    log,
    'nats-server',
    server,
    ['-a', '127.0.0.1', '-p', String(port), '-js', '-sd', join(dir, 'jetstream'), '-l', logFile, '-P', join(dir, 'nats-server.pid')],
    port,
    logFile,
    dataDir,
  );
}

function spawnServer(log: Logger, name: EmbeddedServer['name'], bin: string, args: string[], port: number, logFile: string, dataDir: string): EmbeddedServer {
  // Their output goes to a file: our stdout stays one JSON object per line.
  const out = openSync(logFile, 'a');
  let child: ChildProcess;
  try {
    // Its own process group: a Ctrl-C in the terminal (SIGINT to the whole foreground group) must reach only us,
    // so that the servers outlive our graceful drain; we stop them last.
    child = spawn(bin, args, { stdio: ['ignore', out, out], detached: true });
  } finally {
    closeSync(out);
  }
  let stopping: Promise<void> | undefined;
  const exited = new Promise<number | null>((r) =>
    child.once('exit', (code) => {
      r(code);
    }),
  );
  child.once('error', (e) => {
    log.error({ server: name, err: e.message }, 'embedded server failed to start');
  });
  void exited.then((code) => {
    if (!stopping) log.error({ server: name, code, logFile }, `embedded ${name} exited on its own; see its log`);
  });
  log.info(
    { server: name, bin, port, pid: child.pid, dataDir, logFile },
    `started embedded ${name} on 127.0.0.1:${port} (DATABASE_URL/NATS_URL unset, nothing was answering); it stops when this process stops`,
  );
  return {
    name,
    pid: child.pid ?? -1,
    port,
    logFile,
    stop: () =>
      (stopping ??= (async () => {
        if (child.exitCode !== null || child.signalCode !== null) return;
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
        await exited;
        clearTimeout(timer);
        log.info({ server: name, pid: child.pid }, `embedded ${name} stopped`);
      })()),
  };
}
