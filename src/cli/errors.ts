import { redactUrl } from '../config/core';
import { describeError } from '../errors';

/** An error the CLI prints as it is (one human sentence), with exit code 1. */
export class CliError extends Error {
  override name = 'CliError';
  /** 2 for a usage mistake (bad option), 1 otherwise. */
  constructor(
    message: string,
    readonly exitCode: 1 | 2 = 1,
  ) {
    super(message);
  }
}

/** NATS connect failures in words, naming NATS_URL. */
export function natsConnectError(url: string, e: unknown): CliError {
  const code = (e as { code?: string }).code ?? describeError(e);
  const why =
    code === 'CONNECTION_REFUSED'
      ? 'connection refused (is nats-server running?)'
      : code === 'AUTHORIZATION_VIOLATION'
        ? 'the server refused our credentials (NATS_USER/NATS_PASSWORD/NATS_TOKEN)'
        : code === 'TIMEOUT'
          ? 'no answer (wrong host, or a firewall?)'
          : code;
  return new CliError(`cannot connect to NATS at ${redactUrl(url)} (NATS_URL): ${why}`);
}

/** A request nobody answered (503 no responders, or a timeout), naming what should answer. */
export function requestError(subject: string, who: string, e: unknown): CliError {
  const code = (e as { code?: string }).code ?? '';
  if (code === '503') return new CliError(`nothing answers ${subject}: no ${who} is running with this NATS_URL and subject prefix (start one with npm start)`);
  if (code === 'TIMEOUT') return new CliError(`no answer on ${subject} within the timeout: the ${who} may be overloaded or stuck`);
  return new CliError(`request to ${subject} failed: ${describeError(e)}`);
}

/** Database failures in words, naming DATABASE_URL. */
export function dbError(url: string, e: unknown): CliError {
  const err = e as { code?: string; errno?: number; sqlMessage?: string };
  const why =
    err.code === 'ECONNREFUSED'
      ? 'connection refused (is MariaDB running?)'
      : err.code === 'ER_ACCESS_DENIED_ERROR'
        ? 'access denied (user or password in DATABASE_URL)'
        : err.code === 'ER_BAD_DB_ERROR'
          ? 'the database does not exist (start the system once with npm start: it creates the default one and migrates)'
          : err.code === 'ER_NO_SUCH_TABLE'
            ? `${err.sqlMessage ?? 'a table is missing'} (run npm run migrate)`
            : (err.sqlMessage ?? describeError(e));
  return new CliError(`database ${redactUrl(url)} (DATABASE_URL): ${why}`);
}
