/**
 * Composition root: builds config, logger, metrics, DB pool, NATS connection and the
 * Telegram client, starts the roles of this process (prepare their ports, spawn the actor
 * tree in actors/root.ts, wire NATS to it), and shuts everything down in a fixed order on
 * SIGTERM/SIGINT (a second signal exits at once; leases cover that case).
 */
import { loadSettings, loadImagesConfig, describeConfig, describeAdsConfig, redactUrl, type Config } from './config';
import { createStdoutLogger, knexLog, registerSecret, routeConsole, type Logger } from './log';
import { Metrics, startMetricsServer } from './metrics';
import { ShutdownSequence } from './lifecycle';
import { createDb } from './db/knex';
import { migrateLatest } from './db/migrate';
import { verifyShardCount } from './db/schema-check';
import { connectNats } from './nats/connection';
import { TelegrafClient } from './telegram/client';
import { TelegramUnauthorized } from './telegram/errors';
import type { TelegramSandbox } from '../sandbox/server';
import { pipelineShared, preparePipeline } from './roles/pipeline';
import { startObservedSystem } from './runtime/observed-system';
import { stopActorSystem } from './runtime/actor';
import { prepareImages } from './roles/images';
import { prepareAds, startGatewayRole } from './roles/ads';
import { prepareCluster } from './roles/cluster';
import { spawnRoot } from '../actors/root';
import { makeSubjects } from './nats/subjects';
import { ConfigError, describeError } from './errors';
import { waitUntilReachable } from './startup/wait';
import { probePorts, portError } from './startup/ports';
import { telegramTarget } from './startup/sandbox';
import { checkDatabase } from './db/ensure';
import { startEmbedded, type EmbeddedServer } from './startup/embedded';
import type { NatsConnection } from './nats/connection';

/** The token the in-process sandbox accepts when no TELEGRAM_BOT_TOKEN is given. */
const DEMO_TOKEN = '100000:DEMO-sandbox-token-not-a-secret';

export interface RunningSystem {
  config: Config;
  log: Logger;
  /** Runs the shutdown sequence once; resolves with what it gave back. */
  shutdown: () => Promise<{ releasedRows: number }>;
}

export interface MainOptions {
  /** Runs once when stdout closes (EPIPE): the entry point shuts down gracefully. */
  onStdoutClosed?: (err: Error) => void;
  /** A signal arrived during start-up: stop waiting for MariaDB/NATS (the caller stops the rest once started). */
  abort?: AbortSignal;
}

export async function main(env: NodeJS.ProcessEnv = process.env, opts: MainOptions = {}): Promise<RunningSystem> {
  const startedAt = Date.now();
  // Every section of the configuration is validated before anything starts.
  const settings = loadSettings(env);
  const config = settings.core;
  let imagesConfig = settings.images;
  const adsConfig = settings.ads;
  registerSecret(adsConfig.apiToken);
  registerSecret(adsConfig.viewHashSalt);
  registerSecret(config.telegramBotToken);
  registerSecret(config.natsPassword);
  registerSecret(config.natsToken);
  registerSecret(urlPassword(config.databaseUrl));
  registerSecret(urlPassword(config.natsUrl));
  const worker = config.role === 'worker' || config.role === 'all';
  const gateway = config.role === 'gateway' || config.role === 'all';
  // Decided before any connection: a refusal touches no row.
  const target = worker ? telegramTarget(config) : 'telegram';
  const log = createStdoutLogger({
    level: config.logLevel,
    base: { pid: process.pid, instance: config.instanceId },
    ...(opts.onStdoutClosed ? { onStdoutClosed: opts.onStdoutClosed } : {}),
  });
  routeConsole(log);
  // Every setting of every role, secrets masked: what this process runs with, on one line.
  log.info({ config: describeConfig(config), images: imagesConfig, ads: describeAdsConfig(adsConfig) }, 'starting');
  // A second copy on the same host stops here, before migrations or claims.
  await probePorts([
    ...(gateway ? [{ variable: 'GATEWAY_PORT', host: adsConfig.gatewayHost, port: adsConfig.gatewayPort }] : []),
    { variable: 'METRICS_PORT', host: config.metricsHost, port: config.metricsPort },
    ...(target === 'sandbox' ? [{ variable: 'TELEGRAM_SANDBOX_PORT', host: '127.0.0.1', port: config.telegramSandboxPort }] : []),
  ]);
  const deadline = startedAt + config.startupTimeoutMs;
  // Each step may take the drain bound plus the time to write back what the drain produced.
  const shutdown = new ShutdownSequence(log, config.shutdownTimeoutMs + 20_000);
  let metricsServer: { close: () => Promise<void> } | undefined;
  let releasedRows = (): number => 0;
  let dbForShutdown: { destroy: () => Promise<void> } | undefined;
  let telegramForShutdown: TelegrafClient | undefined;
  let ncForShutdown: NatsConnection | undefined;
  let sandbox: TelegramSandbox | undefined;
  let embedded: EmbeddedServer[] = [];
  /** Connections close last, also when start-up failed half-way. */
  const addConnectionSteps = (): void => {
    // After the actors have drained: nothing sends any more.
    shutdown.add('telegram connections', () => telegramForShutdown?.close());
    shutdown.add('nats drain', async () => {
      if (ncForShutdown && !ncForShutdown.isClosed()) await ncForShutdown.drain();
    });
    shutdown.add('db pool', () => dbForShutdown?.destroy());
    shutdown.add('sandbox', () => sandbox?.stop());
    // After the pool and the drain: the servers we started for a laptop go last.
    shutdown.add('embedded servers', async () => {
      await Promise.all(embedded.map((s) => s.stop()));
    });
    // Last, so the shutdown itself can be watched.
    shutdown.add('metrics server', () => metricsServer?.close());
  };
  const metrics = new Metrics({ defaults: true, labels: { instance: config.instanceId } });

  try {
    if (config.metricsPort > 0) {
      const server = await startMetricsServer(metrics, config.metricsPort, config.metricsHost).catch((e: unknown) => {
        throw portError({ variable: 'METRICS_PORT', host: config.metricsHost, port: config.metricsPort }, e as NodeJS.ErrnoException);
      });
      log.info({ host: config.metricsHost, port: server.port }, 'metrics on GET /metrics');
      metricsServer = server;
    }

    let token = config.telegramBotToken;
    let apiRoot = config.telegramApiRoot;
    if (target === 'sandbox' && worker) {
      // Loaded only here: production processes never load the sandbox's code.
      const { TelegramSandbox } = await import('../sandbox/server');
      sandbox = new TelegramSandbox({
        port: config.telegramSandboxPort,
        maxDelivered: 10_000,
        globalRate: config.telegramGlobalRate,
        chatRate: config.telegramChatRate,
        groupRatePerMin: config.telegramGroupRatePerMin,
        groupWindowMs: config.telegramGroupWindowMs,
      });
      const started = await sandbox.start().catch((e: unknown) => {
        throw portError({ variable: 'TELEGRAM_SANDBOX_PORT', host: '127.0.0.1', port: config.telegramSandboxPort }, e as NodeJS.ErrnoException);
      });
      token = DEMO_TOKEN;
      apiRoot = started.apiRoot;
      log.warn(
        {
          apiRoot,
          inspect: `${apiRoot}sandbox/delivered`,
          why: config.telegramSandbox ? 'TELEGRAM_SANDBOX=1' : 'DATABASE_URL is not set (development default)',
        },
        'TELEGRAM_BOT_TOKEN is not set: sending to an IN-PROCESS TELEGRAM SANDBOX, not to Telegram',
      );
      // Demo product photos (npm run cli -- demo) come from the sandbox, unless images have a real home.
      if (!env.IMAGE_BASE_URL?.trim()) {
        imagesConfig = loadImagesConfig({ ...env, IMAGE_BASE_URL: `${apiRoot}sandbox/images/` });
        log.info({ imageBaseUrl: imagesConfig.baseUrl }, 'IMAGE_BASE_URL is not set: product photos come from the sandbox (the demo photos)');
      }
    }

    if (config.embedded.enabled && (!config.databaseUrlExplicit || !config.natsUrlExplicit)) {
      embedded = await startEmbedded({
        log,
        mariadb: !config.databaseUrlExplicit,
        nats: !config.natsUrlExplicit,
        mariadbPort: config.embedded.mariadbPort,
        natsPort: config.embedded.natsPort,
        dataDir: config.embedded.dataDir,
      });
    }
    const db = createDb({ url: config.databaseUrl, poolMax: config.dbPoolMax, log: knexLog(log) });
    dbForShutdown = db;
    // A server we have just started needs a moment: no "cannot reach" line for it unless it takes a while.
    const quietForMs = (name: EmbeddedServer['name']): number => (embedded.some((s) => s.name === name) ? 4_000 : 0);
    const dbState = await waitUntilReachable(
      { variable: 'DATABASE_URL', address: redactUrl(config.databaseUrl) },
      () => checkDatabase(db, config.databaseUrl, !config.databaseUrlExplicit),
      { log, deadline, quietForMs: quietForMs('mariadbd'), ...(opts.abort ? { signal: opts.abort } : {}) },
    );
    if (dbState === 'created') log.info({ database: redactUrl(config.databaseUrl) }, 'database created (it did not exist; DATABASE_URL is the default)');
    if (config.migrateOnStart) {
      const applied = await migrateLatest(db);
      if (applied.length) log.info({ applied }, 'migrations applied');
    }
    await verifyShardCount(db, config.shardCount);

    const nc = await waitUntilReachable(
      { variable: 'NATS_URL', address: redactUrl(config.natsUrl) },
      () => connectNats({ url: config.natsUrl, name: `notify-${config.instanceId}`, auth: config, waitOnFirstConnect: false }, log),
      {
        log,
        deadline,
        quietForMs: quietForMs('nats-server'),
        ...(opts.abort ? { signal: opts.abort } : {}),
        discardLate: (late) => void (late as NatsConnection).close().catch(() => undefined),
      },
    );
    ncForShutdown = nc;
    log.info({ server: nc.getServer() }, 'connected to NATS');

    const telegram = new TelegrafClient({ token: token ?? DEMO_TOKEN, apiRoot, timeoutMs: config.telegramRequestTimeoutMs });
    telegramForShutdown = telegram;
    if (worker) {
      try {
        const me = await telegram.getMe();
        log.info({ bot: me.username ?? me.id }, 'Telegram bot verified');
      } catch (e) {
        if (e instanceof TelegramUnauthorized)
          throw new ConfigError('TELEGRAM_BOT_TOKEN', 'Telegram rejected the token (401 Unauthorized); check it with @BotFather');
        log.warn({ err: describeError(e) }, 'getMe failed; starting anyway (sends will retry)');
      }
    }

    // Fixed order: stop intake (gateway) → drain actors (pipeline, ads) → connections.
    const system = startObservedSystem(`notify-${config.instanceId}`, log, metrics);
    if (gateway) {
      const gw = await startGatewayRole({ db, nc, config: adsConfig, log, metrics }).catch((e: unknown) => {
        const code = (e as NodeJS.ErrnoException).code;
        throw code === 'EADDRINUSE' || code === 'EACCES'
          ? portError({ variable: 'GATEWAY_PORT', host: adsConfig.gatewayHost, port: adsConfig.gatewayPort }, e as NodeJS.ErrnoException)
          : e;
      });
      shutdown.add('ads gateway (stop accepting requests)', () => gw.stop());
    }
    if (worker) {
      // 1. Prepare: each role builds the ports of its actors; nothing runs yet. The cluster's
      // budget steers the pipeline's gate, and the pipeline takes the cluster's ports: both
      // start from what they share.
      const shared = pipelineShared(config);
      const images = prepareImages({
        db,
        nc,
        config: imagesConfig,
        instanceId: config.instanceId,
        subjects: makeSubjects(config.natsSubjectPrefix),
        log,
        metrics,
      });
      const cluster = await prepareCluster({ config, log, metrics, nc, shared });
      const pipeline = await preparePipeline({ config, log, metrics, db, nc, telegram, shared, cluster: cluster.ports });
      // The bump timer is a cluster-wide singleton on the same KV leases as the shards.
      const ads = await prepareAds({ db, nc, config: adsConfig, log, metrics, singleton: cluster.singleton('ads-bump') });
      // 2. Spawn: the whole supervision tree, in actors/root.ts.
      const refs = spawnRoot(system, {
        imageFetcher: images.fetcher,
        pipeline: (fetcher) => pipeline.deps(fetcher && images.planner(fetcher)),
        budgetCoordinator: cluster.coordinator,
        shardOwner: (ref) => cluster.shardOwner(pipeline.shards(ref)),
        ...ads.actors,
      });
      // 3. Wire NATS to the actors; the cluster answers `notify.status.<instance>` for the pipeline.
      // Each stop is queued as soon as its role runs, so a start-up failure stops what started.
      const clusterRole = cluster.start(refs, pipeline.service);
      shutdown.add('cluster (hand shards back, leave)', () => clusterRole.stop());
      const pipelineRole = pipeline.start(refs, { status: () => clusterRole.processStatus() });
      releasedRows = () => pipelineRole.releasedRows();
      shutdown.add('delivery pipeline (stop claiming, drain senders, flush outcomes, release claims)', () => pipelineRole.stop());
      const imagesRole = images.start(refs);
      shutdown.add('image service', () => imagesRole.stop());
      const adsRole = await ads.start(refs);
      shutdown.add('ads actors (flush views, release bump lease)', () => adsRole.stop());
      log.info({ shards: config.shardCount, owner: pipelineRole.owner }, 'delivery pipeline running');
    }
    shutdown.add('actor system', () => {
      stopActorSystem(system);
    });
    addConnectionSteps();
  } catch (e) {
    addConnectionSteps();
    await shutdown.run();
    throw e;
  }

  log.info({ role: config.role, startupMs: Date.now() - startedAt }, 'ready');
  let stopped: Promise<{ releasedRows: number }> | undefined;
  return {
    config,
    log,
    shutdown: () =>
      (stopped ??= (async () => {
        const before = releasedRows();
        await shutdown.run();
        return { releasedRows: releasedRows() - before };
      })()),
  };
}

function urlPassword(url: string): string | undefined {
  try {
    return new URL((url.split(',')[0] ?? '').trim()).password || undefined;
  } catch {
    return undefined;
  }
}

if (require.main === module) {
  let system: RunningSystem | undefined;
  let stopping = false;
  /** Set when a stop was asked for while still starting; honoured once started. */
  let pending: Record<string, unknown> | undefined;
  const stopGracefully = (why: Record<string, unknown>): void => {
    if (!system) {
      pending ??= why;
      return;
    }
    if (stopping) return;
    stopping = true;
    system.log.info(why, 'shutting down (send the signal again to exit at once)');
    system.shutdown().then(
      (summary) => {
        system?.log.info(summary, `stopped; ${summary.releasedRows} claimed row(s) given back to the outbox`);
        setTimeout(() => process.exit(0), 50).unref();
      },
      () => process.exit(1),
    );
  };
  let firstSignalAt: number | undefined;
  const starting = new AbortController();
  const onSignal = (sig: NodeJS.Signals): void => {
    if (firstSignalAt !== undefined) {
      // A Ctrl-C under `npm start` arrives twice at once: from the terminal (to the whole process group)
      // and relayed by npm. Only a second signal a moment later means "leave now".
      if (Date.now() - firstSignalAt < 1_000) return;
      // Claimed rows come back after their lease.
      process.exit(130);
    }
    firstSignalAt = Date.now();
    // Still starting: stop waiting for servers; a start that completes anyway is then stopped gracefully.
    if (!system) starting.abort();
    stopGracefully({ signal: sig });
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  // `npm start -- gateway` is the same as ROLE=gateway.
  const roleArg = process.argv[2];
  main(roleArg ? { ...process.env, ROLE: roleArg } : process.env, {
    // The reader of our stdout went away (e.g. `npm start | jq` and jq exited): stop as on SIGTERM.
    onStdoutClosed: (err) => {
      stopGracefully({ reason: 'stdout closed', err: describeError(err) });
    },
    abort: starting.signal,
  }).then(
    (s) => {
      system = s;
      if (pending) stopGracefully(pending);
    },
    (e: unknown) => {
      if (starting.signal.aborted) process.exit(130);
      const line = {
        level: 60,
        time: new Date().toISOString(),
        msg: `start-up failed: ${describeError(e)}`,
        err: describeError(e),
        code: (e as { code?: string }).code,
        variable: (e as { variable?: string }).variable,
      };
      process.stderr.write(`${JSON.stringify(line)}\n`);
      process.exit(e instanceof ConfigError ? 2 : 1);
    },
  );
}
