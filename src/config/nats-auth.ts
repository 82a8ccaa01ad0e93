/**
 * How this process proves who it is to NATS, read from the environment once at start-up
 * (docs/security.md). One mechanism at most: user+password, token, an NKEY seed file or a
 * `.creds` file (JWT + seed); TLS (CA, client certificate and key) combines with any of them.
 * Every file is read and checked here so a bad path or a malformed file stops start-up with
 * an error naming the variable, never at the first reconnect.
 */
import { readFileSync } from 'node:fs';
import { ConfigError } from '../errors';

/** The NATS credential variables as read by src/config/core.ts (paths, not contents). Secrets: never logged. */
export interface NatsAuthSettings {
  natsUser: string | undefined;
  natsPassword: string | undefined;
  natsToken: string | undefined;
  /** NATS_NKEY_SEED_FILE: a file holding a user NKEY seed (`SU…`), as written by `nk -gen user`. */
  natsNkeySeedFile: string | undefined;
  /** NATS_CREDS_FILE: a `.creds` file (user JWT + seed), as written by `nsc`. */
  natsCredsFile: string | undefined;
  /** NATS_TLS_CA_FILE: PEM CA bundle that signed the server's certificate (enables TLS). */
  natsTlsCaFile: string | undefined;
  /** NATS_TLS_CERT_FILE / NATS_TLS_KEY_FILE: PEM client certificate and key (mutual TLS); both or neither. */
  natsTlsCertFile: string | undefined;
  natsTlsKeyFile: string | undefined;
}

/** What connectNats needs: contents, not paths; `secrets` are registered with the log scrubber. */
export interface NatsAuth {
  user?: string;
  password?: string;
  token?: string;
  nkeySeed?: Uint8Array;
  creds?: Uint8Array;
  tls?: { ca?: string; cert?: string; key?: string };
  secrets: string[];
}

type Reader = { optionalString(name: string): string | undefined };

const SEED = /^SU[A-Z2-7]{56}$/;
const CREDS_BLOCK = /-{3,}[^\n]*-{3,}\s*\n\s*(\S+)\s*\n\s*-{3,}[^\n]*-{3,}/g;

function readText(variable: string, path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? 'unreadable';
    throw new ConfigError(variable, `cannot read ${JSON.stringify(path)} (${code}); give the path of a readable file`);
  }
}

function pem(variable: string, path: string, kind: RegExp, what: string): string {
  const text = readText(variable, path);
  if (!kind.test(text)) throw new ConfigError(variable, `${JSON.stringify(path)} is not a PEM ${what} (no "-----BEGIN …" block found)`);
  return text;
}

/** Reads the variables; the error names the first bad one. Values of secrets are never echoed. */
export function readNatsAuthSettings(r: Reader): NatsAuthSettings {
  const s: NatsAuthSettings = {
    natsUser: r.optionalString('NATS_USER'),
    natsPassword: r.optionalString('NATS_PASSWORD'),
    natsToken: r.optionalString('NATS_TOKEN'),
    natsNkeySeedFile: r.optionalString('NATS_NKEY_SEED_FILE'),
    natsCredsFile: r.optionalString('NATS_CREDS_FILE'),
    natsTlsCaFile: r.optionalString('NATS_TLS_CA_FILE'),
    natsTlsCertFile: r.optionalString('NATS_TLS_CERT_FILE'),
    natsTlsKeyFile: r.optionalString('NATS_TLS_KEY_FILE'),
  };
  loadNatsAuth(s); // validates every file now
  return s;
}

/** Turns the settings into credentials, reading and checking every file. Throws ConfigError. */
export function loadNatsAuth(s: NatsAuthSettings): NatsAuth {
  const out: NatsAuth = { secrets: [] };
  if (s.natsPassword !== undefined && s.natsUser === undefined) throw new ConfigError('NATS_PASSWORD', 'is set but NATS_USER is not; set both or neither');
  const mechanisms = [
    s.natsUser !== undefined && 'NATS_USER',
    s.natsToken !== undefined && 'NATS_TOKEN',
    s.natsNkeySeedFile !== undefined && 'NATS_NKEY_SEED_FILE',
    s.natsCredsFile !== undefined && 'NATS_CREDS_FILE',
  ].filter((x): x is string => typeof x === 'string');
  const [first, second] = mechanisms;
  if (first !== undefined && second !== undefined)
    throw new ConfigError(second, `cannot be combined with ${first}: set one NATS authentication mechanism (user+password, token, NKEY seed or .creds file)`);
  if (s.natsUser !== undefined) {
    out.user = s.natsUser;
    if (s.natsPassword !== undefined) {
      out.password = s.natsPassword;
      out.secrets.push(s.natsPassword);
    }
  }
  if (s.natsToken !== undefined) {
    out.token = s.natsToken;
    out.secrets.push(s.natsToken);
  }
  if (s.natsNkeySeedFile !== undefined) {
    const seed = readText('NATS_NKEY_SEED_FILE', s.natsNkeySeedFile).trim();
    if (!SEED.test(seed))
      throw new ConfigError(
        'NATS_NKEY_SEED_FILE',
        `${JSON.stringify(s.natsNkeySeedFile)} does not hold a user NKEY seed (one line starting with "SU", 58 characters; contents not shown)`,
      );
    out.nkeySeed = new TextEncoder().encode(seed);
    out.secrets.push(seed);
  }
  if (s.natsCredsFile !== undefined) {
    const text = readText('NATS_CREDS_FILE', s.natsCredsFile);
    const blocks = [...text.matchAll(CREDS_BLOCK)].map((m) => m[1] ?? '');
    const jwt = blocks[0];
    const seed = blocks[1];
    if (!jwt || jwt.split('.').length !== 3 || !seed || !SEED.test(seed)) {
      throw new ConfigError(
        'NATS_CREDS_FILE',
        `${JSON.stringify(s.natsCredsFile)} is not a NATS .creds file (expected a "BEGIN NATS USER JWT" block and a "BEGIN USER NKEY SEED" block; contents not shown)`,
      );
    }
    out.creds = new TextEncoder().encode(text);
    out.secrets.push(seed, jwt);
  }
  if ((s.natsTlsCertFile === undefined) !== (s.natsTlsKeyFile === undefined)) {
    const missing = s.natsTlsCertFile === undefined ? 'NATS_TLS_CERT_FILE' : 'NATS_TLS_KEY_FILE';
    throw new ConfigError(
      missing,
      'must be set together with ' + (missing === 'NATS_TLS_CERT_FILE' ? 'NATS_TLS_KEY_FILE' : 'NATS_TLS_CERT_FILE') + ' (client certificate and its key)',
    );
  }
  if (s.natsTlsCaFile !== undefined || s.natsTlsCertFile !== undefined) {
    const tls: NonNullable<NatsAuth['tls']> = {};
    if (s.natsTlsCaFile !== undefined) tls.ca = pem('NATS_TLS_CA_FILE', s.natsTlsCaFile, /-----BEGIN CERTIFICATE-----/, 'certificate');
    if (s.natsTlsCertFile !== undefined) tls.cert = pem('NATS_TLS_CERT_FILE', s.natsTlsCertFile, /-----BEGIN CERTIFICATE-----/, 'certificate');
    if (s.natsTlsKeyFile !== undefined) {
      tls.key = pem('NATS_TLS_KEY_FILE', s.natsTlsKeyFile, /-----BEGIN [A-Z ]*PRIVATE KEY-----/, 'private key');
      out.secrets.push(tls.key.trim());
    }
    out.tls = tls;
  }
  return out;
}

/** The settings safe to log: which mechanism, file paths, never contents or passwords. */
export function describeNatsAuth(s: NatsAuthSettings): Record<string, unknown> {
  const mechanism = s.natsCredsFile ? 'creds' : s.natsNkeySeedFile ? 'nkey' : s.natsToken ? 'token' : s.natsUser ? 'user' : 'none';
  return {
    mechanism,
    user: s.natsUser,
    nkeySeedFile: s.natsNkeySeedFile,
    credsFile: s.natsCredsFile,
    tls: s.natsTlsCaFile || s.natsTlsCertFile ? { caFile: s.natsTlsCaFile, certFile: s.natsTlsCertFile, keyFile: s.natsTlsKeyFile } : undefined,
  };
}
