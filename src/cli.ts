/**
 * Operator CLI: `npm run cli -- <command>`. Speaks NATS (status, enqueue, top, bump) and
 * the database (demo, top, retry-failed, recipient). Reads the same environment as
 * `npm start` (DATABASE_URL, NATS_URL, NATS_SUBJECT_PREFIX, …).
 * Errors are one sentence naming what to check; timestamps are ISO 8601 (UTC).
 */
import { parseArgs } from 'node:util';
import { connect, type NatsConnection } from 'nats';
import { loadConfig, loadSettings } from './config';
import { rateToWindow } from './limits/window';
import { CliError, dbError, natsConnectError, requestError } from './cli/errors';
import { nextCommands, seedDemo } from './cli/demo';
import { rates, renderFrame, type TopSnapshot } from './cli/top';
import type { BumpRunReply } from './nats/ads-payloads';
import { createDb, type Knex } from './db/knex';
import { makeSubjects, Subjects } from './nats/subjects';
import { encodeJson } from './nats/codec';
import { natsAuthOptionsFrom } from './nats/connection';
import type { ClusterStatus } from './roles/cluster';
import type { EnqueueReply } from './nats/payloads';
import { ranges, shardOf } from './outbox/shard';
import { describeError } from './errors';

const USAGE = `usage: npm run cli -- <command>
  demo [--admin-chat ID] [--customer-chat ID] [--user ID]
                                           seed a demo on a running system (products with photos, an order, ads, messages)
  top [--once] [--interval MS]             live view: per process shards, backlog, send rate vs budget share, 429s, ETA
  status                                   cluster status (members, shards, queues, budget, takeovers)
  bump                                     bump the due ads now (what the timer does)
  enqueue <chat id> <text> [--priority N] [--key K] [--parse-mode HTML|none] [--kind K]
  retry-failed [--chat ID] [--code CODE] [--since ISO-TIME] [--dry-run]
  recipient <chat id> [--clear]`;

const dec = new TextDecoder();

async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      priority: { type: 'string' },
      key: { type: 'string' },
      'parse-mode': { type: 'string' },
      kind: { type: 'string' },
      chat: { type: 'string' },
      code: { type: 'string' },
      since: { type: 'string' },
      'dry-run': { type: 'boolean' },
      clear: { type: 'boolean' },
      help: { type: 'boolean' },
      once: { type: 'boolean' },
      interval: { type: 'string' },
      'admin-chat': { type: 'string' },
      'customer-chat': { type: 'string' },
      user: { type: 'string' },
    },
  });
  const [command, ...rest] = positionals;
  if (!command || values.help) {
    console.log(USAGE);
    return values.help ? 0 : 2;
  }
  const { core: config, ads: adsConfig } = loadSettings();
  const subjects = makeSubjects(config.natsSubjectPrefix);
  const withNats = async <T>(f: (nc: NatsConnection) => Promise<T>): Promise<T> => {
    const nc = await connect({ servers: config.natsUrl.split(','), ...natsAuthOptionsFrom(config), name: 'notify-cli' }).catch((e: unknown) => {
      throw natsConnectError(config.natsUrl, e);
    });
    try {
      return await f(nc);
    } finally {
      await nc.close();
    }
  };
  const withDb = async <T>(f: (db: Knex) => Promise<T>): Promise<T> => {
    const db = createDb({ url: config.databaseUrl, poolMax: 2, log: knexToStderr });
    try {
      return await f(db).catch((e: unknown) => {
        // Database errors carry an errno or a driver code; anything else passes through.
        if (e instanceof CliError || (typeof (e as { code?: unknown }).code !== 'string' && (e as { errno?: unknown }).errno === undefined)) throw e;
        throw dbError(config.databaseUrl, e);
      });
    } finally {
      await db.destroy();
    }
  };
  const intOpt = (name: string, v: string | undefined, def: number): number => {
    if (v === undefined) return def;
    if (!/^-?\d+$/.test(v) || !Number.isSafeInteger(Number(v))) throw new CliError(`--${name} expects an integer, got ${JSON.stringify(v)}`, 2);
    return Number(v);
  };

  switch (command) {
    case 'demo': {
      const adminChatId = intOpt('admin-chat', values['admin-chat'], 100001);
      const customerChatId = intOpt('customer-chat', values['customer-chat'], 200001);
      const userId = intOpt('user', values.user, 7);
      if (config.telegramBotToken)
        console.log(
          `note: TELEGRAM_BOT_TOKEN is set: the demo notifications go to Telegram chats ${adminChatId} and ${customerChatId} (choose yours with --admin-chat and --customer-chat)`,
        );
      return withDb((db) =>
        withNats(async (nc) => {
          const r = await seedDemo({
            db,
            nc,
            subjects,
            adsPrefix: adsConfig.subjectPrefix,
            adminChatId,
            customerChatId,
            userId,
            waitMs: 30_000,
            print: (l) => {
              console.log(l);
            },
          });
          console.log('\nNext, try:');
          for (const c of nextCommands(r, { adminChatId, userId, gatewayPort: adsConfig.gatewayPort, sandboxPort: config.telegramSandboxPort }))
            console.log(`  ${c}`);
          if (!adsConfig.apiToken) console.log('  (POST /notifications and POST /ads/bump over HTTP need ADS_API_TOKEN, ≥ 16 characters, set for npm start)');
          return r.statuses.every((st) => st === 'sent') ? 0 : 1;
        }),
      );
    }
    case 'top': {
      const interval = intOpt('interval', values.interval, 1_000);
      if (interval < 100) throw new CliError('--interval must be at least 100 (ms)', 2);
      return withDb((db) => withNats((nc) => top(db, nc, { once: values.once === true, interval })));
    }
    case 'bump':
      return withNats(async (nc) => {
        const subject = Subjects.adsBumpRun(adsConfig.subjectPrefix);
        const m = await nc.request(subject, encodeJson({}), { timeout: 30_000 }).catch((e: unknown) => {
          throw requestError(subject, 'worker (bump actor)', e);
        });
        const r = JSON.parse(dec.decode(m.data)) as BumpRunReply;
        if (!r.ok) throw new CliError(`bump refused: ${r.error.code}: ${r.error.message}`);
        console.log(`bump run ${r.run_id}: ${r.bumped} ad(s) bumped`);
        return 0;
      });
    case 'status':
      return withNats(async (nc) => {
        const r = await nc.request(subjects.clusterStatus, new Uint8Array(), { timeout: 5_000 }).catch((e: unknown) => {
          throw requestError(subjects.clusterStatus, 'worker', e);
        });
        printStatus(JSON.parse(dec.decode(r.data)) as ClusterStatus);
        return 0;
      });
    case 'enqueue': {
      const [chat, ...words] = rest;
      if (!chat || words.length === 0 || !/^-?\d+$/.test(chat)) {
        console.error('enqueue needs <chat id> <text>');
        return 2;
      }
      const payload: Record<string, unknown> = { chat_id: Number(chat), text: words.join(' ') };
      if (values.priority !== undefined) payload.priority = Number(values.priority);
      if (values.key) payload.idempotency_key = values.key;
      if (values.kind) payload.kind = values.kind;
      if (values['parse-mode']) payload.parse_mode = values['parse-mode'] === 'none' ? null : values['parse-mode'];
      return withNats(async (nc) => {
        const m = await nc.request(subjects.enqueue, encodeJson(payload), { timeout: 5_000 }).catch((e: unknown) => {
          throw requestError(subjects.enqueue, 'worker', e);
        });
        const r = JSON.parse(dec.decode(m.data)) as EnqueueReply;
        if (!r.ok) {
          console.error(`rejected: ${r.error.code}: ${r.error.message}`);
          return 1;
        }
        console.log(`${r.duplicate ? 'already enqueued' : 'enqueued'}: id ${r.id}, shard ${r.shard}`);
        return 0;
      });
    }
    case 'retry-failed':
      return withDb(async (db) => {
        const q = db('telegram_notifications').where({ status: 'failed' });
        if (values.chat) q.andWhere('telegram_id', Number(values.chat));
        if (values.code) q.andWhere('error_code', values.code);
        if (values.since) {
          const since = new Date(values.since);
          if (Number.isNaN(since.getTime()))
            throw new CliError(`--since expects an ISO time such as 2026-11-30T01:00:00Z, got ${JSON.stringify(values.since)}`, 2);
          q.andWhere('updated_at', '>=', since);
        }
        const rows = await q.clone().select<Array<{ id: number; telegram_id: number; shard: number }>>('id', 'telegram_id', 'shard');
        if (values['dry-run']) {
          console.log(`${rows.length} failed notification(s) would be retried`);
          return 0;
        }
        const n = await q.update({
          status: 'pending',
          attempts: 0,
          next_attempt_at: db.raw('NOW(3)'),
          error_code: null,
          notes: db.raw("CONCAT_WS('; ', notes, 'retried by operator')"),
        });
        console.log(`${n} failed notification(s) back to pending`);
        if (rows.length) {
          await withNats(async (nc) => {
            for (const shard of new Set(rows.map((r) => r.shard))) nc.publish(subjects.wake(shard), encodeJson({ shard }));
            await nc.flush();
          }).catch(() => {
            console.log('(workers will find them at their next poll)');
          });
        }
        return 0;
      });
    case 'recipient': {
      const [chat] = rest;
      if (!chat || !/^-?\d+$/.test(chat)) {
        console.error('recipient needs <chat id>');
        return 2;
      }
      const chatId = Number(chat);
      return withDb(async (db) => {
        if (values.clear) {
          const n = await db('telegram_recipients')
            .where({ chat_id: chatId })
            .update({ status: 'ok', reason: null, error_code: null, unreachable_since: null, migrated_to_chat_id: null });
          await withNats(async (nc) => {
            nc.publish(subjects.recipientChanged, encodeJson({ chat_id: chatId, status: 'ok', migrated_to_chat_id: null }));
            await nc.flush();
          });
          console.log(n ? `chat ${chatId} cleared: notifications to it will be sent again` : `chat ${chatId} was not marked`);
          return 0;
        }
        const r = await db<{
          chat_id: number;
          status: string;
          reason: string | null;
          unreachable_since: Date | null;
          updated_at: Date;
          migrated_to_chat_id: number | null;
        }>('telegram_recipients')
          .where({ chat_id: chatId })
          .first();
        const counts = await db('telegram_notifications')
          .where({ telegram_id: chatId })
          .select('status')
          .count<Array<{ status: string; n: number }>>({ n: '*' })
          .groupBy('status');
        console.log(`chat ${chatId} (shard ${shardOf(chatId, config.shardCount)})`);
        console.log(
          r
            ? `  recipient: ${r.status} since ${iso(r.unreachable_since ?? r.updated_at)}${r.reason ? ` — ${r.reason}` : ''}${r.migrated_to_chat_id ? ` → ${r.migrated_to_chat_id}` : ''}`
            : '  recipient: reachable (no record)',
        );
        console.log(`  notifications: ${counts.map((c) => `${c.status} ${c.n}`).join(', ') || 'none'}`);
        return 0;
      });
    }
    default:
      console.error(`unknown command ${JSON.stringify(command)}\n${USAGE}`);
      return 2;
  }
}

/** knex's own messages, one line on stderr; a failed acquire is reported by the query that waited for it. */
const knexLine = (m: unknown): string => (m instanceof Error ? m.message : typeof m === 'string' ? m : JSON.stringify(m)).split('\n')[0] ?? '';
const knexToStderr = {
  warn: (m: unknown) => {
    if (!knexLine(m).startsWith('Acquire connection error')) console.error(`knex: ${knexLine(m)}`);
  },
  error: (m: unknown) => {
    console.error(`knex: ${knexLine(m)}`);
  },
  deprecate: (method: string, alternative: string) => {
    console.error(`knex: ${method} is deprecated, use ${alternative}`);
  },
  debug: () => undefined,
};

/** ISO 8601 (UTC) for a Date, an epoch number or a date string; '-' for nothing. */
function iso(v: unknown): string {
  if (v === null || v === undefined) return '-';
  const d = v instanceof Date ? v : new Date(v as string | number);
  return Number.isNaN(d.getTime()) ? (typeof v === 'string' ? v : JSON.stringify(v)) : d.toISOString();
}

async function top(db: Knex, nc: NatsConnection, o: { once: boolean; interval: number }): Promise<number> {
  const config = loadConfig();
  const subjects = makeSubjects(config.natsSubjectPrefix);
  // Typed as always present; undefined when stdout is not a terminal.
  const tty = Boolean(process.stdout.isTTY as boolean | undefined) && !o.once;
  const snapshot = async (): Promise<TopSnapshot> => {
    const m = await nc.request(subjects.clusterStatus, new Uint8Array(), { timeout: 5_000 }).catch((e: unknown) => {
      throw requestError(subjects.clusterStatus, 'worker', e);
    });
    const s = JSON.parse(dec.decode(m.data)) as ClusterStatus;
    const [rows = []] = await db.raw<[Array<{ shard: number; n: number; oldest: Date | string }>]>(
      "SELECT shard, COUNT(*) AS n, MIN(created_at) AS oldest FROM telegram_notifications WHERE status IN ('pending', 'claimed') GROUP BY shard",
    );
    return {
      at: Date.now(),
      processes: s.processes,
      shardCount: s.shardCount,
      map: s.map,
      windowMs: s.budget?.windowMs ?? rateToWindow(config.telegramGlobalRate).windowMs,
      ...(s.budget ? { botRate: { now: s.budget.rate, ceiling: (s.budget.ceiling / s.budget.windowMs) * 1000 } } : {}),
      backlogByShard: new Map(rows.map((r) => [r.shard, r.n])),
      oldestByShard: new Map(rows.map((r) => [r.shard, new Date(r.oldest).getTime()])),
    };
  };
  const history: TopSnapshot[] = [];
  const baseline = new Map<string, number>();
  // An object, not a boolean: the flag is set by the signal handler.
  const leave = { asked: false };
  const onSigint = (): void => {
    leave.asked = true;
  };
  process.once('SIGINT', onSigint);
  try {
    while (!leave.asked) {
      let cur: TopSnapshot;
      try {
        cur = await snapshot();
      } catch (e) {
        if (o.once || !tty) throw e;
        process.stdout.write(`\x1b[H\x1b[2J${new Date().toISOString()} ${describeError(e)} (retrying)\n`);
        await new Promise((r) => setTimeout(r, o.interval));
        continue;
      }
      for (const p of cur.processes) if (!baseline.has(p.holder)) baseline.set(p.holder, p.sent);
      history.push(cur);
      // Rates over the last ~5 s, so one slow second does not make the numbers jump.
      while (history.length > 1 && cur.at - (history[0]?.at ?? cur.at) > 5_000 + o.interval / 2) history.shift();
      if (o.once && history.length < 2) {
        await new Promise((r) => setTimeout(r, o.interval));
        continue;
      }
      const sentSinceStart = cur.processes.reduce((n, p) => n + Math.max(0, p.sent - (baseline.get(p.holder) ?? p.sent)), 0);
      const lines = renderFrame(cur, rates(history.length > 1 ? history[0] : undefined, cur), {
        tty,
        width: tty ? process.stdout.columns : 100,
        sentSinceStart,
      });
      process.stdout.write(tty ? `\x1b[H\x1b[2J${lines.join('\n')}\n\n(Ctrl-C to leave)\n` : `${lines.join('\n')}\n${o.once ? '' : '\n'}`);
      if (o.once) break;
      await new Promise((r) => setTimeout(r, o.interval));
    }
  } finally {
    process.off('SIGINT', onSigint);
  }
  return 0;
}

function printStatus(s: ClusterStatus): void {
  const byOwner = new Map<string, number[]>();
  for (const [shard, owner] of Object.entries(s.map)) byOwner.set(owner, [...(byOwner.get(owner) ?? []), Number(shard)]);
  const unowned = Array.from({ length: s.shardCount }, (_, i) => i).filter((i) => !(i in s.map));
  console.log(
    `cluster at ${new Date(s.at).toISOString()} (as ${s.answeredBy} sees it): ${s.members.length} member(s), ${s.shardCount} shards, budget coordinator ${s.coordinator ?? '(none: processes use the fallback share)'}`,
  );
  if (s.budget)
    console.log(
      `bot rate: ${s.budget.rate.toFixed(2)}/s of ${((s.budget.ceiling / s.budget.windowMs) * 1000).toFixed(2)}/s configured (capacity ${s.budget.capacity} per ${s.budget.windowMs} ms)`,
    );
  const by = (p: ClusterStatus['processes'][number]) =>
    p.throttledByScope ? `${p.throttledByScope.chat}/${p.throttledByScope.group}/${p.throttledByScope.global}` : String(p.throttled);
  const rows = s.processes.map((p) => [
    p.instance,
    String(p.owned.length),
    ranges(p.owned) || '-',
    String(p.queued),
    String(p.inFlight),
    String(p.sent),
    String(p.failed),
    by(p),
    `${p.budget.share} (${p.budget.mode})`,
    String(p.budget.demand),
  ]);
  const head = ['instance', 'shards', 'which', 'queued', 'in flight', 'sent', 'failed', '429s chat/group/global', 'share/window', 'demand'];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (r: string[]) => '  ' + r.map((c, i) => c.padEnd(widths[i]!)).join('  ');
  console.log(line(head));
  for (const r of rows) console.log(line(r));
  if (unowned.length) console.log(`  unowned shards: ${ranges(unowned)}`);
  const lowered = s.processes.flatMap((p) => p.lowered ?? []).sort((a, b) => a.rate / a.ceiling - b.rate / b.ceiling);
  if (lowered.length) {
    console.log('chats whose rate a 429 lowered (per second, configured in brackets):');
    for (const l of lowered.slice(0, 10))
      console.log(
        `  ${l.chatId}: ${l.rate < 1 ? `${(l.rate * 60).toFixed(2)}/min` : `${l.rate.toFixed(2)}/s`} (${l.ceiling < 1 ? `${(l.ceiling * 60).toFixed(0)}/min` : `${l.ceiling}/s`})`,
      );
  }
  for (const [owner, shards] of byOwner) if (!s.processes.some((p) => p.holder === owner)) console.log(`  ${owner} (not answering) holds ${ranges(shards)}`);
  if (s.takeovers.length) {
    console.log('recent takeovers:');
    for (const t of s.takeovers.slice(0, 10)) console.log(`  ${new Date(t.at).toISOString()} shard ${t.shard}: ${t.from} → ${t.by}`);
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e: unknown) => {
    console.error(e instanceof CliError ? e.message : `error: ${describeError(e)}`);
    process.exit(e instanceof CliError ? e.exitCode : 1);
  },
);
