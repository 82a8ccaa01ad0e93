import { hostname } from 'node:os';
import { ConfigError } from '../errors';
import { rateToWindow } from '../limits/window';
import { readNatsAuthSettings, describeNatsAuth, type NatsAuthSettings } from './nats-auth';

/**
 * The whole configuration, parsed once from the environment at start-up.
 * Every field is documented in README.md ("Configuration"); keep the two in step.
 */
export interface Config extends NatsAuthSettings {
  role: 'all' | 'worker' | 'gateway';
  instanceId: string;
  databaseUrl: string;
  /** DATABASE_URL was set: never start an embedded database, never create the database. */
  databaseUrlExplicit: boolean;
  /** Comma-separated list of NATS servers (any node of a cluster; the client fails over between them). */
  natsUrl: string;
  /** Replicas of every JetStream stream and KV bucket this project creates (1, or 3/5 on a NATS cluster). */
  natsReplicas: number;
  /** NATS_URL was set: never start an embedded nats-server. */
  natsUrlExplicit: boolean;
  /**
   * Development defaults: with DATABASE_URL / NATS_URL unset and nothing answering on
   * these local ports, start mariadbd / nats-server from the PATH with data under `dataDir`.
   */
  embedded: { enabled: boolean; mariadbPort: number; natsPort: number; dataDir: string };
  /** NATS credentials; secrets, never logged. */
  natsUser: string | undefined;
  natsPassword: string | undefined;
  natsToken: string | undefined;
  /** Undefined means: start the in-process Telegram sandbox and send to it. */
  telegramBotToken: string | undefined;
  /** TELEGRAM_SANDBOX: undefined when unset; without a token the sandbox is allowed only when true, or when DATABASE_URL is unset. */
  telegramSandbox: boolean | undefined;
  /** Port of the in-process sandbox on 127.0.0.1 (0 = any free port). */
  telegramSandboxPort: number;
  telegramApiRoot: string;
  telegramGlobalRate: number;
  telegramChatRate: number;
  telegramGroupRatePerMin: number;
  /**
   * A group's window, ms (Telegram's is a minute; the rate stays per minute). Shorter only to run tests and
   * benchmarks of group limits in seconds, against a sandbox started with the same `--group-window-ms`.
   */
  telegramGroupWindowMs: number;
  telegramMaxAttempts: number;
  telegramRequestTimeoutMs: number;
  /** The longest retry_after (429) or flood pause obeyed as given, ms; longer ones are clamped and logged. */
  telegramMaxRetryAfterMs: number;
  /** How far a budget grant's issued_at may be from this process's clock, ms. */
  budgetMaxClockSkewMs: number;
  retryBaseMs: number;
  retryMaxMs: number;
  logLevel: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
  /** 0 disables the metrics HTTP server. */
  metricsPort: number;
  /** Interface of the metrics server; loopback by default (Prometheus on the same host or a tunnel). */
  metricsHost: string;
  /** How long start-up waits for MariaDB and NATS before exiting non-zero. */
  startupTimeoutMs: number;
  outboxPollMs: number;
  claimBatch: number;
  claimLeaseMs: number;
  /** How many rows of one chat may sit in memory; more stay in the database. */
  chatBufferSeconds: number;
  shardCount: number;
  /**
   * A lease whose holder has not renewed it for this long, while the taker could use the KV, is
   * taken over; the holder stops acting at TTL − max(500 ms, TTL/6). Keys stay in the bucket
   * max(15 s, 3 × TTL). See docs/deploy.md, "Leases and fencing".
   */
  shardLeaseTtlMs: number;
  /** A newcomer takes free shards once the member list stayed the same this long (src/cluster/shard-plan.ts, Formation). */
  shardFormationMs: number;
  /** KV bucket of the cluster: members, shard leases, the budget coordinator. */
  clusterBucket: string;
  /** Prepended to every notify.* / images.* subject, so deployments can share a NATS server. */
  natsSubjectPrefix: string;
  /** Outcomes are written back every this many ms, or sooner when outcomeFlushMax are queued. */
  outcomeFlushMs: number;
  outcomeFlushMax: number;
  shutdownTimeoutMs: number;
  migrateOnStart: boolean;
  /** Connections in the MariaDB pool of a worker or gateway process. */
  dbPoolMax: number;
}

type Env = Record<string, string | undefined>;

/** Named defaults, so the README table and the code agree. */
export const DEFAULTS = {
  ROLE: 'all',
  DATABASE_URL: 'mysql://root@127.0.0.1:3306/shop_notify',
  NATS_URL: 'nats://127.0.0.1:4222',
  NATS_REPLICAS: 1,
  TELEGRAM_API_ROOT: 'https://api.telegram.org/',
  TELEGRAM_GLOBAL_RATE: 30,
  TELEGRAM_CHAT_RATE: 1,
  TELEGRAM_GROUP_RATE_PER_MIN: 20,
  TELEGRAM_GROUP_WINDOW_MS: 60_000,
  TELEGRAM_MAX_ATTEMPTS: 5,
  TELEGRAM_REQUEST_TIMEOUT_MS: 15_000,
  TELEGRAM_MAX_RETRY_AFTER_MS: 3_600_000,
  BUDGET_MAX_CLOCK_SKEW_MS: 2_000,
  RETRY_BASE_MS: 1_000,
  RETRY_MAX_MS: 300_000,
  LOG_LEVEL: 'info',
  METRICS_PORT: 9464,
  METRICS_HOST: '127.0.0.1',
  TELEGRAM_SANDBOX_PORT: 8081,
  STARTUP_TIMEOUT_MS: 60_000,
  OUTBOX_POLL_MS: 1_000,
  CLAIM_BATCH: 1_000,
  CLAIM_LEASE_MS: 60_000,
  CHAT_BUFFER_SECONDS: 60,
  SHARD_COUNT: 64,
  SHARD_LEASE_TTL_MS: 6_000,
  SHARD_FORMATION_MS: 1_000,
  CLUSTER_BUCKET: 'notify_cluster',
  OUTCOME_FLUSH_MS: 500,
  OUTCOME_FLUSH_MAX: 500,
  SHUTDOWN_TIMEOUT_MS: 30_000,
  MIGRATE_ON_START: true,
  DB_POOL_MAX: 10,
  EMBEDDED_SERVICES: true,
  EMBEDDED_MARIADB_PORT: 3306,
  EMBEDDED_NATS_PORT: 4222,
  EMBEDDED_DATA_DIR: '.data',
} as const;

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
const ROLES = ['all', 'worker', 'gateway'] as const;

/** Small typed readers; each error names the variable and the expected form. */
export class EnvReader {
  constructor(private readonly env: Env) {}

  raw(name: string): string | undefined {
    const v = this.env[name];
    return v === undefined || v.trim() === '' ? undefined : v.trim();
  }

  string(name: string, def: string): string {
    return this.raw(name) ?? def;
  }

  optionalString(name: string): string | undefined {
    return this.raw(name);
  }

  number(name: string, def: number, opts: { min?: number; max?: number; integer?: boolean; exclusiveMin?: boolean } = {}): number {
    const v = this.raw(name);
    if (v === undefined) return def;
    const form = opts.integer ? 'an integer' : 'a number';
    const range = describeRange(opts);
    if (!/^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(v)) throw new ConfigError(name, `expected ${form}${range}, got ${JSON.stringify(v)}`);
    const n = Number(v);
    if (!Number.isFinite(n) || (opts.integer && !Number.isInteger(n))) throw new ConfigError(name, `expected ${form}${range}, got ${JSON.stringify(v)}`);
    if (opts.min !== undefined && (opts.exclusiveMin ? n <= opts.min : n < opts.min)) throw new ConfigError(name, `expected ${form}${range}, got ${v}`);
    if (opts.max !== undefined && n > opts.max) throw new ConfigError(name, `expected ${form}${range}, got ${v}`);
    return n;
  }

  integer(name: string, def: number, opts: { min?: number; max?: number } = {}): number {
    return this.number(name, def, { ...opts, integer: true });
  }

  /**
   * A duration, in ms. The one syntax of every duration variable: a number with a unit,
   * `1500ms`, `30s`, `90m`, `3h`, `1d`, or a bare number of milliseconds (`5000`).
   */
  duration(name: string, def: number, opts: { min: number; max: number }): number {
    const v = this.raw(name);
    if (v === undefined) return def;
    const m = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?$/i.exec(v);
    const ms = m ? Math.round(Number(m[1]) * DURATION_UNITS[(m[2] ?? 'ms').toLowerCase()]!) : NaN;
    if (!Number.isFinite(ms) || ms < opts.min || ms > opts.max) {
      throw new ConfigError(
        name,
        `expected a duration between ${formatMs(opts.min)} and ${formatMs(opts.max)} such as 1500ms, 30s, 90m, 3h, 1d (a bare number is ms), got ${JSON.stringify(v)}`,
      );
    }
    return ms;
  }

  boolean(name: string, def: boolean): boolean {
    const v = this.raw(name);
    if (v === undefined) return def;
    if (/^(1|true|yes|on)$/i.test(v)) return true;
    if (/^(0|false|no|off)$/i.test(v)) return false;
    throw new ConfigError(name, `expected one of true/false/1/0/yes/no/on/off, got ${JSON.stringify(v)}`);
  }

  oneOf<T extends string>(name: string, values: readonly T[], def: T): T {
    const v = this.raw(name);
    if (v === undefined) return def;
    const lower = v.toLowerCase();
    const found = values.find((x) => x === lower);
    if (!found) throw new ConfigError(name, `expected one of ${values.join(', ')}, got ${JSON.stringify(v)}`);
    return found;
  }

  url(name: string, def: string, protocols: readonly string[]): string {
    const v = this.raw(name) ?? def;
    let u: URL;
    try {
      u = new URL(v);
    } catch {
      throw new ConfigError(name, `expected a URL (${protocols.join(' or ')}), got ${JSON.stringify(redactUrl(v))}`);
    }
    if (!protocols.includes(u.protocol)) throw new ConfigError(name, `expected a URL with scheme ${protocols.join(' or ')}, got ${JSON.stringify(u.protocol)}`);
    return v;
  }

  /** Comma-separated integers, e.g. chat ids. */
  integerList(name: string): number[] {
    const v = this.raw(name);
    if (v === undefined) return [];
    return v.split(',').map((part) => {
      const p = part.trim();
      if (!/^-?\d+$/.test(p) || !Number.isSafeInteger(Number(p))) throw new ConfigError(name, `expected comma-separated integers, got ${JSON.stringify(p)}`);
      return Number(p);
    });
  }
}

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** 90000 → "90 s", 3600000 → "1 h": bounds in error messages a person can read. */
function formatMs(ms: number): string {
  for (const [unit, n] of [
    ['d', 86_400_000],
    ['h', 3_600_000],
    ['m', 60_000],
    ['s', 1_000],
  ] as const)
    if (ms >= n && ms % n === 0) return `${ms / n} ${unit}`;
  return `${ms} ms`;
}

function describeRange(o: { min?: number; max?: number; exclusiveMin?: boolean }): string {
  if (o.min !== undefined && o.max !== undefined) return o.exclusiveMin ? ` greater than ${o.min} and ≤ ${o.max}` : ` between ${o.min} and ${o.max}`;
  if (o.min !== undefined) return o.exclusiveMin ? ` greater than ${o.min}` : ` ≥ ${o.min}`;
  if (o.max !== undefined) return ` ≤ ${o.max}`;
  return '';
}

/** Hides the password part of a URL so it can be logged. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return url.replace(/\/\/([^:@/]+):[^@/]*@/, '//$1:***@');
  }
}

/** Parses and validates the environment. Throws ConfigError naming the first bad variable. */
export function loadConfig(env: Env = process.env): Config {
  const r = new EnvReader(env);
  const telegramBotToken = r.optionalString('TELEGRAM_BOT_TOKEN');
  if (telegramBotToken !== undefined && !/^\d+:[A-Za-z0-9_-]{20,}$/.test(telegramBotToken)) {
    // Never echo the value: it is a secret even when malformed.
    throw new ConfigError('TELEGRAM_BOT_TOKEN', 'expected a bot token of the form <bot id>:<secret> as given by @BotFather (value not shown)');
  }
  let apiRoot = r.url('TELEGRAM_API_ROOT', DEFAULTS.TELEGRAM_API_ROOT, ['http:', 'https:']);
  // telegraf resolves './bot<token>/<method>' against the root: a path needs its trailing slash.
  if (!apiRoot.endsWith('/')) apiRoot += '/';

  const retryBaseMs = r.duration('RETRY_BASE_MS', DEFAULTS.RETRY_BASE_MS, { min: 1, max: 3_600_000 });
  const retryMaxMs = r.duration('RETRY_MAX_MS', DEFAULTS.RETRY_MAX_MS, { min: 1, max: 86_400_000 });
  if (retryMaxMs < retryBaseMs) throw new ConfigError('RETRY_MAX_MS', `expected a value ≥ RETRY_BASE_MS (${retryBaseMs}), got ${retryMaxMs}`);

  // The budget coordinator's fence time, grant life and one global window fit in the TTL (src/cluster/budget-plan.ts):
  // a very slow global rate has a long window and needs a longer lease (the default follows it).
  const globalRate = r.number('TELEGRAM_GLOBAL_RATE', DEFAULTS.TELEGRAM_GLOBAL_RATE, { min: 0, exclusiveMin: true, max: 100_000 });
  const minTtl = Math.ceil(2 * (rateToWindow(globalRate).windowMs + 500));
  const shardLeaseTtlMs = r.duration('SHARD_LEASE_TTL_MS', Math.max(DEFAULTS.SHARD_LEASE_TTL_MS, minTtl), { min: 1_000, max: 600_000 });
  if (shardLeaseTtlMs < minTtl)
    throw new ConfigError('SHARD_LEASE_TTL_MS', `expected at least ${minTtl} (2 × (the global rate's window + 500 ms)), got ${shardLeaseTtlMs}`);
  const shardFormationMs = r.duration('SHARD_FORMATION_MS', DEFAULTS.SHARD_FORMATION_MS, { min: 0, max: 60_000 });

  const embedded = {
    enabled: r.boolean('EMBEDDED_SERVICES', DEFAULTS.EMBEDDED_SERVICES),
    mariadbPort: r.integer('EMBEDDED_MARIADB_PORT', DEFAULTS.EMBEDDED_MARIADB_PORT, { min: 1, max: 65535 }),
    natsPort: r.integer('EMBEDDED_NATS_PORT', DEFAULTS.EMBEDDED_NATS_PORT, { min: 1, max: 65535 }),
    dataDir: r.string('EMBEDDED_DATA_DIR', DEFAULTS.EMBEDDED_DATA_DIR),
  };

  return {
    role: r.oneOf('ROLE', ROLES, DEFAULTS.ROLE),
    instanceId: instanceIdVar(r),
    databaseUrl: r.url('DATABASE_URL', DEFAULTS.DATABASE_URL.replace(':3306/', `:${embedded.mariadbPort}/`), ['mysql:', 'mariadb:']),
    databaseUrlExplicit: r.raw('DATABASE_URL') !== undefined,
    natsUrl: natsUrls(r, DEFAULTS.NATS_URL.replace(':4222', `:${embedded.natsPort}`)),
    natsReplicas: natsReplicasVar(r),
    embedded,
    natsUrlExplicit: r.raw('NATS_URL') !== undefined,
    // NATS_USER, NATS_PASSWORD, NATS_TOKEN, NATS_NKEY_SEED_FILE, NATS_CREDS_FILE, NATS_TLS_*: files read and checked now.
    ...readNatsAuthSettings(r),
    telegramBotToken,
    telegramSandbox: r.raw('TELEGRAM_SANDBOX') === undefined ? undefined : r.boolean('TELEGRAM_SANDBOX', false),
    telegramSandboxPort: r.integer('TELEGRAM_SANDBOX_PORT', DEFAULTS.TELEGRAM_SANDBOX_PORT, { min: 0, max: 65535 }),
    telegramApiRoot: apiRoot,
    telegramGlobalRate: globalRate,
    telegramChatRate: r.number('TELEGRAM_CHAT_RATE', DEFAULTS.TELEGRAM_CHAT_RATE, { min: 0, exclusiveMin: true, max: 100_000 }),
    telegramGroupRatePerMin: r.number('TELEGRAM_GROUP_RATE_PER_MIN', DEFAULTS.TELEGRAM_GROUP_RATE_PER_MIN, { min: 0, exclusiveMin: true, max: 6_000_000 }),
    telegramGroupWindowMs: r.duration('TELEGRAM_GROUP_WINDOW_MS', DEFAULTS.TELEGRAM_GROUP_WINDOW_MS, { min: 100, max: 3_600_000 }),
    telegramMaxAttempts: r.integer('TELEGRAM_MAX_ATTEMPTS', DEFAULTS.TELEGRAM_MAX_ATTEMPTS, { min: 1, max: 1000 }),
    telegramRequestTimeoutMs: r.duration('TELEGRAM_REQUEST_TIMEOUT_MS', DEFAULTS.TELEGRAM_REQUEST_TIMEOUT_MS, { min: 100, max: 600_000 }),
    telegramMaxRetryAfterMs: r.duration('TELEGRAM_MAX_RETRY_AFTER_MS', DEFAULTS.TELEGRAM_MAX_RETRY_AFTER_MS, { min: 1_000, max: 86_400_000 }),
    budgetMaxClockSkewMs: r.duration('BUDGET_MAX_CLOCK_SKEW_MS', DEFAULTS.BUDGET_MAX_CLOCK_SKEW_MS, { min: 0, max: 60_000 }),
    retryBaseMs,
    retryMaxMs,
    logLevel: r.oneOf('LOG_LEVEL', LOG_LEVELS, DEFAULTS.LOG_LEVEL),
    metricsPort: r.integer('METRICS_PORT', DEFAULTS.METRICS_PORT, { min: 0, max: 65535 }),
    metricsHost: r.string('METRICS_HOST', DEFAULTS.METRICS_HOST),
    startupTimeoutMs: r.duration('STARTUP_TIMEOUT_MS', DEFAULTS.STARTUP_TIMEOUT_MS, { min: 1_000, max: 3_600_000 }),
    outboxPollMs: r.duration('OUTBOX_POLL_MS', DEFAULTS.OUTBOX_POLL_MS, { min: 10, max: 60_000 }),
    claimBatch: r.integer('CLAIM_BATCH', DEFAULTS.CLAIM_BATCH, { min: 1, max: 50_000 }),
    claimLeaseMs: r.duration('CLAIM_LEASE_MS', DEFAULTS.CLAIM_LEASE_MS, { min: 1_000, max: 3_600_000 }),
    chatBufferSeconds: r.number('CHAT_BUFFER_SECONDS', DEFAULTS.CHAT_BUFFER_SECONDS, { min: 1, max: 3600 }),
    shardCount: r.integer('SHARD_COUNT', DEFAULTS.SHARD_COUNT, { min: 1, max: 4096 }),
    shardLeaseTtlMs,
    shardFormationMs,
    clusterBucket: bucketName(r),
    natsSubjectPrefix: subjectPrefixVar(r, 'NATS_SUBJECT_PREFIX'),
    outcomeFlushMs: r.duration('OUTCOME_FLUSH_MS', DEFAULTS.OUTCOME_FLUSH_MS, { min: 1, max: 60_000 }),
    outcomeFlushMax: r.integer('OUTCOME_FLUSH_MAX', DEFAULTS.OUTCOME_FLUSH_MAX, { min: 1, max: 10_000 }),
    shutdownTimeoutMs: r.duration('SHUTDOWN_TIMEOUT_MS', DEFAULTS.SHUTDOWN_TIMEOUT_MS, { min: 0, max: 600_000 }),
    migrateOnStart: r.boolean('MIGRATE_ON_START', DEFAULTS.MIGRATE_ON_START),
    dbPoolMax: r.integer('DB_POOL_MAX', DEFAULTS.DB_POOL_MAX, { min: 2, max: 500 }),
  };
}

/** INSTANCE_ID: names this process in logs, metrics and the cluster; default `<hostname>-<pid>`. One reader for every section. */
export function instanceIdVar(r: EnvReader): string {
  return r.string('INSTANCE_ID', `${hostname()}-${process.pid}`);
}

/** A dot-terminated subject prefix ("staging.") or '' (NATS_SUBJECT_PREFIX). */
export function subjectPrefixVar(r: EnvReader, name: string): string {
  const v = r.string(name, '');
  if (v !== '' && !/^([-\w]+\.)+$/.test(v))
    throw new ConfigError(name, `expected dot-separated tokens ending with a dot (e.g. "staging."), got ${JSON.stringify(v)}`);
  return v;
}

/**
 * NATS_REPLICAS: replicas of every stream and KV bucket the project creates. JetStream
 * allows 1 to 5; an even count tolerates no more failures than the odd one below it.
 */
export function natsReplicasVar(r: EnvReader): number {
  return r.integer('NATS_REPLICAS', DEFAULTS.NATS_REPLICAS, { min: 1, max: 5 });
}

function bucketName(r: EnvReader): string {
  const v = r.string('CLUSTER_BUCKET', DEFAULTS.CLUSTER_BUCKET);
  if (!/^[-\w]+$/.test(v)) throw new ConfigError('CLUSTER_BUCKET', `expected letters, digits, - or _ (a NATS KV bucket name), got ${JSON.stringify(v)}`);
  return v;
}

function natsUrls(r: EnvReader, def: string): string {
  const v = r.string('NATS_URL', def);
  for (const part of v.split(',')) {
    const p = part.trim();
    const withScheme = /^[a-z]+:\/\//i.test(p) ? p : `nats://${p}`;
    let u: URL;
    try {
      u = new URL(withScheme);
    } catch {
      throw new ConfigError('NATS_URL', `expected comma-separated nats://host:port URLs, got ${JSON.stringify(redactUrl(p))}`);
    }
    if (!['nats:', 'tls:', 'ws:', 'wss:'].includes(u.protocol))
      throw new ConfigError('NATS_URL', `expected nats://host:port, got scheme ${JSON.stringify(u.protocol)}`);
  }
  return v;
}

/** A copy safe to log: secrets removed, URLs with passwords redacted. */
export function describeConfig(c: Config): Record<string, unknown> {
  const { natsPassword, natsToken, telegramBotToken, ...rest } = c;
  return {
    ...rest,
    databaseUrl: redactUrl(c.databaseUrl),
    natsUrl: redactUrl(c.natsUrl),
    natsPassword: natsPassword ? '***' : undefined,
    natsToken: natsToken ? '***' : undefined,
    natsAuth: describeNatsAuth(c),
    telegramBotToken: telegramBotToken ? '***' : '(none: in-process sandbox, if allowed)',
  };
}
