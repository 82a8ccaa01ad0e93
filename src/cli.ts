/**
 * Operator CLI: `npm run cli -- <command>`. Speaks NATS (status, enqueue) and the
 * database (retry-failed, recipient). Reads DATABASE_URL, NATS_URL, NATS_SUBJECT_PREFIX.
 *
 *   status                                 cluster: members, shards, queues, budget, takeovers
 *   enqueue <chat id> <text> [--priority N] [--key K] [--parse-mode HTML|none] [--kind K]
 *   retry-failed [--chat ID] [--code CODE] [--since ISO-TIME] [--dry-run]
 *   recipient <chat id> [--clear]
 */
import { parseArgs } from 'node:util';
import { connect, type NatsConnection } from 'nats';
import { loadConfig, redactUrl } from './config';
import { createDb, type Knex } from './db/knex';
import { makeSubjects, type SubjectSet } from './nats/subjects';
import { encodeJson } from './nats/codec';
import { natsAuthOptionsFrom } from './nats/connection';
import type { ClusterStatus } from './roles/cluster';
import type { EnqueueReply } from './nats/payloads';
import { ranges, shardOf } from './outbox/shard';
import { describeError } from './errors';

const USAGE = `usage: npm run cli -- <command>
  status                                   cluster status (members, shards, queues, budget, takeovers)
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
    },
  });
  const [command, ...rest] = positionals;
  if (!command || values.help) {
    console.log(USAGE);
    return command ? 0 : 2;
  }
  const config = loadConfig();
  const subjects = makeSubjects(config.natsSubjectPrefix);
  const withNats = async <T>(f: (nc: NatsConnection) => Promise<T>): Promise<T> => {
    const nc = await connect({ servers: config.natsUrl.split(','), ...natsAuthOptionsFrom(config), name: 'notify-cli' });
    try {
      return await f(nc);
    } finally {
      await nc.close();
    }
  };
  const withDb = async <T>(f: (db: Knex) => Promise<T>): Promise<T> => {
    const db = createDb({ url: config.databaseUrl, poolMax: 2 });
    try {
      return await f(db);
    } finally {
      await db.destroy();
    }
  };

  switch (command) {
    case 'status':
      return withNats(async (nc) => {
        const r = await nc.request(subjects.clusterStatus, new Uint8Array(), { timeout: 5_000 }).catch((e: unknown) => {
          throw new Error(`no worker answered ${subjects.clusterStatus} (${describeError(e)}): is any running on ${redactUrl(config.natsUrl)}?`);
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
        const r = JSON.parse(dec.decode((await nc.request(subjects.enqueue, encodeJson(payload), { timeout: 5_000 })).data)) as EnqueueReply;
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
        if (values.since) q.andWhere('updated_at', '>=', new Date(values.since));
        const rows = (await q.clone().select('id', 'telegram_id', 'shard')) as Array<{ id: number; telegram_id: number; shard: number }>;
        if (values['dry-run']) {
          console.log(`${rows.length} failed notification(s) would be retried`);
          return 0;
        }
        const n = await q.update({ status: 'pending', attempts: 0, next_attempt_at: db.raw('NOW(3)'), error_code: null, notes: db.raw("CONCAT_WS('; ', notes, 'retried by operator')") });
        console.log(`${n} failed notification(s) back to pending`);
        if (rows.length) {
          await withNats(async (nc) => {
            for (const shard of new Set(rows.map((r) => r.shard))) nc.publish(subjects.wake(shard), encodeJson({ shard }));
            await nc.flush();
          }).catch(() => console.log('(workers will find them at their next poll)'));
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
          const n = await db('telegram_recipients').where({ chat_id: chatId }).update({ status: 'ok', reason: null, error_code: null, unreachable_since: null, migrated_to_chat_id: null });
          await withNats(async (nc) => {
            nc.publish(subjects.recipientChanged, encodeJson({ chat_id: chatId, status: 'ok', migrated_to_chat_id: null }));
            await nc.flush();
          });
          console.log(n ? `chat ${chatId} cleared: notifications to it will be sent again` : `chat ${chatId} was not marked`);
          return 0;
        }
        const r = (await db('telegram_recipients').where({ chat_id: chatId }).first()) as Record<string, unknown> | undefined;
        const counts = (await db('telegram_notifications').where({ telegram_id: chatId }).select('status').count({ n: '*' }).groupBy('status')) as Array<{ status: string; n: number }>;
        console.log(`chat ${chatId} (shard ${shardOf(chatId, config.shardCount)})`);
        console.log(r ? `  recipient: ${r.status} since ${String(r.unreachable_since ?? r.updated_at)} — ${String(r.reason ?? '')}${r.migrated_to_chat_id ? ` → ${String(r.migrated_to_chat_id)}` : ''}` : '  recipient: reachable (no record)');
        console.log(`  notifications: ${counts.map((c) => `${c.status} ${c.n}`).join(', ') || 'none'}`);
        return 0;
      });
    }
    default:
      console.error(`unknown command ${JSON.stringify(command)}\n${USAGE}`);
      return 2;
  }
}

function printStatus(s: ClusterStatus): void {
  const byOwner = new Map<string, number[]>();
  for (const [shard, owner] of Object.entries(s.map)) byOwner.set(owner, [...(byOwner.get(owner) ?? []), Number(shard)]);
  const unowned = Array.from({ length: s.shardCount }, (_, i) => i).filter((i) => !(i in s.map));
  console.log(`cluster at ${new Date(s.at).toISOString()}: ${s.members.length} member(s), ${s.shardCount} shards, budget coordinator ${s.coordinator ?? '(none: processes use the fallback share)'}`);
  if (s.budget) console.log(`bot rate: ${s.budget.rate.toFixed(2)}/s of ${((s.budget.ceiling / s.budget.windowMs) * 1000).toFixed(2)}/s configured (capacity ${s.budget.capacity} per ${s.budget.windowMs} ms)`);
  const by = (p: ClusterStatus['processes'][number]) => (p.throttledByScope ? `${p.throttledByScope.chat}/${p.throttledByScope.group}/${p.throttledByScope.global}` : String(p.throttled));
  const rows = s.processes.map((p) => [p.instance, String(p.owned.length), ranges(p.owned) || '-', String(p.queued), String(p.inFlight), String(p.sent), String(p.failed), by(p), `${p.budget.share} (${p.budget.mode})`, String(p.budget.demand)]);
  const head = ['instance', 'shards', 'which', 'queued', 'in flight', 'sent', 'failed', '429s chat/group/global', 'share/window', 'demand'];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (r: string[]) => '  ' + r.map((c, i) => c.padEnd(widths[i]!)).join('  ');
  console.log(line(head));
  for (const r of rows) console.log(line(r));
  if (unowned.length) console.log(`  unowned shards: ${ranges(unowned)}`);
  const lowered = s.processes.flatMap((p) => p.lowered ?? []).sort((a, b) => a.rate / a.ceiling - b.rate / b.ceiling);
  if (lowered.length) {
    console.log('chats whose rate a 429 lowered (per second, configured in brackets):');
    for (const l of lowered.slice(0, 10)) console.log(`  ${l.chatId}: ${l.rate < 1 ? `${(l.rate * 60).toFixed(2)}/min` : `${l.rate.toFixed(2)}/s`} (${l.ceiling < 1 ? `${(l.ceiling * 60).toFixed(0)}/min` : `${l.ceiling}/s`})`);
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
    console.error(describeError(e));
    process.exit(1);
  },
);
