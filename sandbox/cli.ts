/**
 * `npm run sandbox -- [flags]`: runs a TelegramSandbox until SIGINT/SIGTERM. Prints one JSON line with the
 * apiRoot once listening, so scripts can read it. Every flag is validated before the server starts.
 */
import { parseArgs } from 'node:util';
import { SandboxInputError, TelegramSandbox } from './server';
import type { LatencySetting, SandboxOptions } from './types';

const FLAGS = {
  port: { type: 'string', default: '8081', help: 'TCP port on 127.0.0.1 (0 = any free port)' },
  token: { type: 'string', default: '', help: 'accept only this bot token (empty = any token)' },
  'global-rate': { type: 'string', default: '30', help: 'messages/s across all chats' },
  'chat-rate': { type: 'string', default: '1', help: 'messages/s per private chat (chat_id > 0)' },
  'group-rate-per-min': { type: 'string', default: '20', help: 'messages/min per group (chat_id < 0)' },
  'group-window-ms': { type: 'string', default: '60000', help: "length of a group's window in ms (the rate stays per minute)" },
  latency: { type: 'string', default: '0', help: 'answer delay in ms: fixed "50" or uniform range "20-200"' },
  'chat-unknown-by-default': { type: 'boolean', default: false, help: 'chats without a state are "chat not found"' },
  help: { type: 'boolean', default: false, help: 'print this help and exit' },
} as const;

function usage(): string {
  const lines = Object.entries(FLAGS).map(([name, flag]) => {
    const value = flag.type === 'string' ? ' <v>' : '';
    const shown = flag.default === '' ? '""' : String(flag.default);
    return `  --${(name + value).padEnd(30)} ${flag.help}${name === 'help' ? '' : ` (default: ${shown})`}`;
  });
  return ['Usage: npm run sandbox -- [flags]', '', 'Telegram Bot API sandbox. Flags:', ...lines, ''].join('\n');
}

/** A number for `flag`, or an error that names the flag. */
function numberFlag(flag: string, raw: string, check: (n: number) => boolean, what: string): number {
  const value = Number(raw);
  if (raw.trim() === '' || !Number.isFinite(value) || !check(value)) {
    throw new SandboxInputError(`--${flag} must be ${what}, got "${raw}"`);
  }
  return value;
}

function latencyFlag(raw: string): LatencySetting {
  const [min = '', max, extra] = raw.split('-');
  if (extra !== undefined) throw new SandboxInputError(`--latency must be "<ms>" or "<min>-<max>", got "${raw}"`);
  const minMs = numberFlag('latency', min, (n) => n >= 0, 'a number of ms ≥ 0');
  const maxMs = max === undefined ? minMs : numberFlag('latency', max, (n) => n >= minMs, `a number of ms ≥ ${minMs}`);
  return { minMs, maxMs };
}

function parseOptions(argv: string[]): SandboxOptions | 'help' {
  const { values } = parseArgs({ args: argv, options: FLAGS, strict: true, allowPositionals: false });
  if (values.help) return 'help';
  const positive = (n: number): boolean => n > 0;
  return {
    port: numberFlag('port', values.port, (n) => Number.isInteger(n) && n >= 0 && n <= 65_535, 'an integer 0–65535'),
    ...(values.token === '' ? {} : { token: values.token }),
    globalRate: numberFlag('global-rate', values['global-rate'], positive, 'a positive number'),
    chatRate: numberFlag('chat-rate', values['chat-rate'], positive, 'a positive number'),
    groupRatePerMin: numberFlag('group-rate-per-min', values['group-rate-per-min'], positive, 'a positive number'),
    groupWindowMs: numberFlag('group-window-ms', values['group-window-ms'], positive, 'a positive number of ms'),
    latency: latencyFlag(values.latency),
    chatUnknownByDefault: values['chat-unknown-by-default'],
  };
}

async function main(): Promise<void> {
  let options: SandboxOptions | 'help';
  try {
    options = parseOptions(process.argv.slice(2));
  } catch (error) {
    process.stderr.write(`${error instanceof Error ? error.message : String(error)}\n\n${usage()}`);
    process.exitCode = 2;
    return;
  }
  if (options === 'help') {
    process.stdout.write(usage());
    return;
  }
  const sandbox = new TelegramSandbox(options);
  const { apiRoot, port } = await sandbox.start();
  process.stdout.write(`${JSON.stringify({ event: 'listening', apiRoot, port, limits: sandbox.stats().limits })}\n`);
  const stop = (signal: NodeJS.Signals): void => {
    sandbox.stop().then(
      () => process.stdout.write(`${JSON.stringify({ event: 'stopped', signal })}\n`),
      (error: unknown) => {
        process.stderr.write(`stop failed: ${error instanceof Error ? error.message : String(error)}\n`);
        process.exitCode = 1;
      },
    );
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

main().catch((error: unknown) => {
  process.stderr.write(`sandbox failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  process.exitCode = 1;
});
