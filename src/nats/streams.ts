import type { StreamConfig } from 'nats';
import { AppError } from '../errors';

/**
 * Start-up check of a JetStream stream (a KV bucket is the stream `KV_<bucket>`) that
 * already exists: nats-server keeps an existing stream's settings when a client asks
 * for it again, so a changed NATS_REPLICAS, TTL or subject set would otherwise be
 * silently ignored. A difference is a start-up error naming both values and the
 * migration step (docs/deploy.md, "Changing replicas, TTLs or subjects"); nothing is
 * recreated or changed behind the operator's back.
 */
export interface StreamExpectation {
  /** The stream's name (`KV_<bucket>` for a bucket). */
  stream: string;
  /** How the operator knows it, e.g. `KV bucket "notify_cluster"`. */
  what: string;
  replicas: number;
  /** Message/key TTL in ms (`max_age`); 0 = none. */
  maxAgeMs: number;
  /** Which variable sets the TTL, for the message. */
  maxAgeVar: string;
  /** Expected subjects (omitted for KV buckets: they follow from the name). */
  subjects?: string[];
  /** Which variable sets the subjects, for the message. */
  subjectsVar?: string;
}

export interface StreamDifference {
  field: 'replicas' | 'max_age' | 'subjects';
  have: string;
  want: string;
  variable: string;
}

const NS_PER_MS = 1_000_000;

/** The differences between an existing stream's config and what the configuration asks for. */
export function streamDifferences(have: Partial<Pick<StreamConfig, 'num_replicas' | 'max_age' | 'subjects'>>, want: StreamExpectation): StreamDifference[] {
  const out: StreamDifference[] = [];
  const replicas = have.num_replicas || 1;
  if (replicas !== want.replicas) out.push({ field: 'replicas', have: String(replicas), want: String(want.replicas), variable: 'NATS_REPLICAS' });
  const haveMs = Math.round((have.max_age ?? 0) / NS_PER_MS);
  if (Math.abs(haveMs - want.maxAgeMs) > 1) out.push({ field: 'max_age', have: `${haveMs} ms`, want: `${want.maxAgeMs} ms`, variable: want.maxAgeVar });
  if (want.subjects) {
    const h = [...(have.subjects ?? [])].sort().join(',');
    const w = [...want.subjects].sort().join(',');
    if (h !== w) out.push({ field: 'subjects', have: h, want: w, variable: want.subjectsVar ?? 'subjects' });
  }
  return out;
}

/** The `nats` CLI command that migrates the stream in place (stream data kept). */
export function migrationCommand(want: StreamExpectation, diffs: readonly StreamDifference[]): string {
  const flags = diffs.map((d) =>
    d.field === 'replicas'
      ? `--replicas=${want.replicas}`
      : d.field === 'max_age'
        ? `--max-age=${want.maxAgeMs}ms`
        : `--subjects=${(want.subjects ?? []).join(',')}`,
  );
  return `nats stream edit ${want.stream} ${flags.join(' ')} --force`;
}

/** Throws NATS_STREAM_MISMATCH when the existing stream differs from the configuration. */
export function assertStreamMatches(have: Partial<Pick<StreamConfig, 'num_replicas' | 'max_age' | 'subjects'>>, want: StreamExpectation): void {
  const diffs = streamDifferences(have, want);
  if (diffs.length === 0) return;
  const what = diffs.map((d) => `${d.field} ${d.have} but ${d.variable} asks for ${d.want}`).join('; ');
  throw new AppError(
    'NATS_STREAM_MISMATCH',
    `the existing ${want.what} (stream ${want.stream}) has ${what}. nats-server keeps an existing stream's settings, so this is not applied by itself. ` +
      `Migrate it in place (data kept): stop every process that uses it, run \`${migrationCommand(want, diffs)}\`, start again ` +
      `(docs/deploy.md, "Changing replicas, TTLs or subjects"); or set ${[...new Set(diffs.map((d) => d.variable))].join(', ')} back to what the stream has.`,
    { stream: want.stream, differences: diffs },
  );
}
