import { connect, credsAuthenticator, nkeyAuthenticator, DebugEvents, ErrorCode, Events, type NatsConnection, type ConnectionOptions } from 'nats';
import { registerSecret, type Logger } from '../log';
import { loadNatsAuth, type NatsAuth, type NatsAuthSettings } from '../config/nats-auth';

export type { NatsConnection } from 'nats';
export { loadNatsAuth, readNatsAuthSettings, describeNatsAuth, type NatsAuth, type NatsAuthSettings } from '../config/nats-auth';

export interface NatsOptions {
  url: string;
  name: string;
  user?: string | undefined;
  password?: string | undefined;
  token?: string | undefined;
  /** NKEY seed, .creds file, TLS and the above, as read from the environment (src/config/nats-auth.ts). */
  auth?: NatsAuthSettings;
  /** Wait for the server at first connect instead of failing at once. Default true. */
  waitOnFirstConnect?: boolean;
}

/**
 * The authentication and TLS part of nats.js's ConnectionOptions. Registers every secret
 * it read (password, token, seed, JWT, TLS key) with the log scrubber.
 */
export function natsAuthOptions(auth: NatsAuth): Partial<ConnectionOptions> {
  for (const s of auth.secrets) registerSecret(s);
  const co: Partial<ConnectionOptions> = {};
  if (auth.user !== undefined) co.user = auth.user;
  if (auth.password !== undefined) co.pass = auth.password;
  if (auth.token !== undefined) co.token = auth.token;
  if (auth.nkeySeed) co.authenticator = nkeyAuthenticator(auth.nkeySeed);
  if (auth.creds) co.authenticator = credsAuthenticator(auth.creds);
  if (auth.tls) co.tls = { ...auth.tls };
  return co;
}

/** Settings → connection options (CLI and tests); throws ConfigError naming a bad variable. */
export function natsAuthOptionsFrom(s: NatsAuthSettings): Partial<ConnectionOptions> {
  return natsAuthOptions(loadNatsAuth(s));
}

/**
 * Connects with endless reconnects and logs status changes. Core messages published
 * while disconnected are lost (the client resets its buffer), which is why durable
 * paths use JetStream and every core request is answered or retried by its caller.
 * A publish or subscribe the server's permissions refuse is logged as `NATS_PERMISSION`.
 */
export async function connectNats(opts: NatsOptions, log: Logger): Promise<NatsConnection> {
  const co: ConnectionOptions = {
    servers: opts.url.split(',').map((s) => s.trim()),
    name: opts.name,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 250,
    waitOnFirstConnect: opts.waitOnFirstConnect ?? true,
    pingInterval: 5_000,
    maxPingOut: 2,
  };
  if (opts.auth) Object.assign(co, natsAuthOptionsFrom(opts.auth));
  if (opts.user) co.user = opts.user;
  if (opts.password) co.pass = opts.password;
  if (opts.token) co.token = opts.token;
  registerSecret(opts.password);
  registerSecret(opts.token);
  const nc = await connect(co);
  const refused = new Map<string, number>();
  const onStatus = natsStatusLog(log);
  void (async () => {
    for await (const s of nc.status()) {
      if (s.type === DebugEvents.PingTimer) continue;
      const data = typeof s.data === 'string' ? s.data : undefined;
      const ctx = (s as { permissionContext?: { operation: string; subject: string } }).permissionContext;
      if (s.type === Events.Error && (ctx || data === (ErrorCode.PermissionsViolation as string))) {
        // Once per subject a minute: a missing permission repeats at every publish.
        const key = `${ctx?.operation}:${ctx?.subject}`;
        const now = Date.now();
        if ((refused.get(key) ?? 0) > now - 60_000) continue;
        refused.set(key, now);
        log.error(
          { nats: s.type, code: 'NATS_PERMISSION', operation: ctx?.operation, subject: ctx?.subject },
          'NATS refused a publish or subscribe (permissions); see deploy/nats-server.conf',
        );
        continue;
      }
      onStatus(s.type, s.data);
    }
  })().catch(() => undefined);
  return nc;
}

/**
 * Status events as log lines an operator can read during an outage: one warn line when
 * the connection is lost, one info line (with the outage's length) when it is back; the
 * reconnect attempts in between (several per second) only at debug.
 */
export function natsStatusLog(log: Logger, now: () => number = Date.now): (type: string, data: unknown) => void {
  let downSince: number | undefined;
  return (type, data) => {
    const detail = typeof data === 'string' ? data : undefined;
    switch (type) {
      case 'pingTimer':
        return;
      case 'disconnect':
        if (downSince !== undefined) {
          log.debug({ nats: type, data: detail }, 'nats connection status');
          return;
        }
        downSince = now();
        log.warn({ nats: type, server: detail }, 'NATS connection lost; reconnecting (one line again when it is back)');
        return;
      case 'reconnect': {
        const outageMs = downSince === undefined ? undefined : now() - downSince;
        downSince = undefined;
        log.info(
          { nats: type, server: detail, outageMs },
          `NATS connection restored${outageMs === undefined ? '' : ` after ${(outageMs / 1000).toFixed(1)} s`}`,
        );
        return;
      }
      case 'reconnecting':
      case 'staleConnection':
      case 'update':
        log.debug({ nats: type, data: detail }, 'nats connection status');
        return;
      case 'error':
        // While down, each failed attempt may report an error: the outage line already said it.
        if (downSince !== undefined) {
          log.debug({ nats: type, data: detail }, 'nats connection status');
          return;
        }
        log.warn({ nats: type, data: detail }, 'nats connection error');
        return;
      default:
        log.info({ nats: type, data: detail }, 'nats connection status');
        return;
    }
  };
}
