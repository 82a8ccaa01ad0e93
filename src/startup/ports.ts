import { createServer } from 'node:net';
import { StartupError } from '../errors';

/** A TCP port this process will listen on, named by the variable that sets it. */
export interface PortClaim {
  variable: string;
  host: string;
  /** 0 (a random port) is never probed. */
  port: number;
}

/**
 * Binds each port for a moment and lets it go, so that a port already in use stops
 * start-up before anything else runs (migrations, connections, claims), with an error
 * naming the variable. A port another process takes between this probe and the real
 * listen still fails at that listen; the probe is for the common case of a second copy.
 */
export async function probePorts(claims: readonly PortClaim[]): Promise<void> {
  for (const c of claims) {
    if (c.port === 0) continue;
    await new Promise<void>((resolve, reject) => {
      const server = createServer();
      server.once('error', (e: NodeJS.ErrnoException) => {
        reject(portError(c, e));
      });
      server.listen({ port: c.port, host: c.host, exclusive: true }, () =>
        server.close(() => {
          resolve();
        }),
      );
    });
  }
}

/** Turns a listen error into one that names the variable (EADDRINUSE, EACCES, EADDRNOTAVAIL). */
export function portError(c: PortClaim, e: NodeJS.ErrnoException): Error {
  const where = `${c.host}:${c.port}`;
  switch (e.code) {
    case 'EADDRINUSE':
      return new StartupError(
        'PORT_IN_USE',
        c.variable,
        `port ${where} is already in use (is another copy running?); stop it or set ${c.variable} to a free port`,
        { cause: e },
      );
    case 'EACCES':
      return new StartupError(
        'PORT_IN_USE',
        c.variable,
        `not allowed to listen on ${where} (ports below 1024 need privileges); set ${c.variable} to a port ≥ 1024`,
        { cause: e },
      );
    case 'EADDRNOTAVAIL':
    case 'ENOTFOUND':
      return new StartupError(
        'PORT_IN_USE',
        c.variable,
        `cannot listen on ${where}: no such local address (${e.code}); check the host setting next to ${c.variable}`,
        { cause: e },
      );
    default:
      return new StartupError('PORT_IN_USE', c.variable, `cannot listen on ${where}: ${e.code ?? e.message}`, { cause: e });
  }
}
