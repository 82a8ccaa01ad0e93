import type { KV, NatsConnection } from 'nats';
import { AppError } from '../errors';

/**
 * Opens (or creates) the cluster's KV bucket. Every key ages out `ttlMs` after its last
 * write (nats-server 2.9 has no per-key TTL), which is what makes an unrenewed lease
 * disappear. Reopening an existing bucket silently keeps its old options, so a TTL that
 * differs from ours is refused here rather than discovered as a split brain later.
 */
export async function openClusterBucket(nc: NatsConnection, name: string, ttlMs: number): Promise<KV> {
  const kv = await nc.jetstream().views.kv(name, { ttl: ttlMs, history: 1 });
  const status = await kv.status();
  if (Math.abs(status.ttl - ttlMs) > 1) {
    throw new AppError(
      'CONFIG_INVALID',
      `SHARD_LEASE_TTL_MS=${ttlMs} but the existing KV bucket "${name}" expires keys after ${status.ttl} ms; every process must use the same value (or delete the bucket when all are stopped: nats kv rm ${name})`,
      { bucket: name, bucketTtlMs: status.ttl, ttlMs },
    );
  }
  return kv;
}

const enc = new TextEncoder();
const dec = new TextDecoder();

export function encodeValue(v: unknown): Uint8Array {
  return enc.encode(JSON.stringify(v));
}

export function decodeValue<T>(data: Uint8Array): T | undefined {
  try {
    return JSON.parse(dec.decode(data)) as T;
  } catch {
    return undefined;
  }
}

/** nats.js reports a failed compare-and-set as JetStream API error 10071 ("wrong last sequence"). */
export function isWrongRevision(e: unknown): boolean {
  const err = e as { api_error?: { err_code?: number }; message?: string };
  return err?.api_error?.err_code === 10071 || /wrong last sequence/i.test(err?.message ?? '');
}
