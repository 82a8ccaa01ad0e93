import { connect, type NatsConnection, type ConnectionOptions } from 'nats';
import type { Logger } from '../log';

export type { NatsConnection } from 'nats';

export interface NatsOptions {
  url: string;
  name: string;
  user?: string | undefined;
  password?: string | undefined;
  token?: string | undefined;
  /** Wait for the server at first connect instead of failing at once. Default true. */
  waitOnFirstConnect?: boolean;
}

/**
 * Connects with endless reconnects and logs status changes. Core messages published
 * while disconnected are lost (the client resets its buffer), which is why durable
 * paths use JetStream and every core request is answered or retried by its caller.
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
  if (opts.user) co.user = opts.user;
  if (opts.password) co.pass = opts.password;
  if (opts.token) co.token = opts.token;
  const nc = await connect(co);
  void (async () => {
    for await (const s of nc.status()) {
      if (s.type === 'pingTimer') continue;
      const level = s.type === 'disconnect' || s.type === 'error' ? 'warn' : 'info';
      log[level]({ nats: s.type, data: typeof s.data === 'string' ? s.data : undefined }, 'nats connection status');
    }
  })().catch(() => undefined);
  return nc;
}
