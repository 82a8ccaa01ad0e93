import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { connectNats, type NatsAuthSettings, type NatsConnection } from '../../src/nats/connection';
import { loadConfig, describeConfig } from '../../src/config/core';
import { ConfigError } from '../../src/errors';
import { captureLogger, waitFor } from '../helpers/services';
import { startPrivateNats, type PrivateNats } from '../helpers/nats-private';
import { decentralized, nk } from '../helpers/nats-jwt';

const sh = promisify(execFile);
const NONE: NatsAuthSettings = {
  natsUser: undefined,
  natsPassword: undefined,
  natsToken: undefined,
  natsNkeySeedFile: undefined,
  natsCredsFile: undefined,
  natsTlsCaFile: undefined,
  natsTlsCertFile: undefined,
  natsTlsKeyFile: undefined,
};

/** Publishes on one connection and receives on another: the server let both in. */
async function roundTrip(nc: NatsConnection, subject = 'auth.check'): Promise<void> {
  const sub = nc.subscribe(subject, { max: 1 });
  await nc.flush();
  nc.publish(subject, new TextEncoder().encode('hi'));
  for await (const m of sub) assert.equal(m.string(), 'hi');
}

describe('NATS authentication: NKEY seed, .creds (JWT) and TLS from the environment', function () {
  this.timeout(60_000);
  let dir: string;
  const servers: PrivateNats[] = [];
  const file = (name: string, text: string): string => {
    const p = join(dir, name);
    writeFileSync(p, text, { mode: 0o600 });
    return p;
  };

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'nats-auth-'));
  });
  after(async () => {
    for (const s of servers) await s.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  describe('start-up validation: each error names the variable and never shows a secret', () => {
    const fails = (env: Record<string, string>, variable: string, re?: RegExp): void => {
      assert.throws(
        () => loadConfig(env),
        (e: unknown) => {
          assert.ok(e instanceof ConfigError, String(e));
          assert.equal(e.variable, variable, e.message);
          if (re) assert.match(e.message, re);
          return true;
        },
      );
    };
    it('a missing or malformed seed file', () => {
      fails({ NATS_NKEY_SEED_FILE: join(dir, 'nope.nk') }, 'NATS_NKEY_SEED_FILE', /ENOENT/);
      const secretish = 'SXnot-a-seed-but-secret';
      fails({ NATS_NKEY_SEED_FILE: file('bad.nk', secretish) }, 'NATS_NKEY_SEED_FILE', /SU/);
      try {
        loadConfig({ NATS_NKEY_SEED_FILE: join(dir, 'bad.nk') });
      } catch (e) {
        assert.ok(!(e as Error).message.includes(secretish));
      }
    });
    it('a file that is not a .creds file', () => {
      fails({ NATS_CREDS_FILE: file('bad.creds', 'hello') }, 'NATS_CREDS_FILE', /BEGIN NATS USER JWT/);
    });
    it('two mechanisms at once, a password without a user', () => {
      fails({ NATS_USER: 'a', NATS_PASSWORD: 'b', NATS_TOKEN: 'c' }, 'NATS_TOKEN', /cannot be combined with NATS_USER/);
      fails({ NATS_PASSWORD: 'b' }, 'NATS_PASSWORD');
    });
    it('a client certificate without its key, a CA file that is not PEM', () => {
      fails({ NATS_TLS_CERT_FILE: file('c.pem', '-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n') }, 'NATS_TLS_KEY_FILE');
      fails({ NATS_TLS_CA_FILE: file('ca.txt', 'not pem') }, 'NATS_TLS_CA_FILE', /PEM/);
    });
  });

  it('NKEY: a seed file authenticates against a server that knows only the public key; the seed is never logged', async () => {
    const user = nk.createUser();
    const seed = new TextDecoder().decode(user.getSeed());
    const s = await startPrivateNats(`authorization { users: [ { nkey: ${user.getPublicKey()} } ] }\n`, {});
    servers.push(s);
    const cfg = loadConfig({ NATS_URL: s.url, NATS_NKEY_SEED_FILE: file('user.nk', `${seed}\n`) });
    const logs = captureLogger();
    const nc = await connectNats({ url: cfg.natsUrl, name: 'nkey-test', auth: cfg }, logs.log);
    try {
      await roundTrip(nc);
      logs.log.info({ config: describeConfig(cfg), leaked: `seed is ${seed}` }, 'started');
      await new Promise((r) => setImmediate(r));
      assert.ok(!logs.text().includes(seed), logs.text());
      assert.match(logs.text(), /"mechanism":"nkey"/);
    } finally {
      await nc.close();
    }
    await assert.rejects(connectNats({ url: s.url, name: 'no-auth', waitOnFirstConnect: false }, logs.log), /Authorization Violation/i);
  });

  it('.creds: a user JWT signed by the account authenticates (operator mode); its permissions are enforced; a stranger is refused', async () => {
    const d = decentralized();
    const s = await startPrivateNats(d.serverConf, {});
    servers.push(s);
    const credsPath = file(
      'producer.creds',
      d.creds('producer', { pub: { allow: ['notify.enqueue', 'auth.check'] }, sub: { allow: ['_INBOX.>', 'auth.check'] } }),
    );
    const cfg = loadConfig({ NATS_URL: s.url, NATS_CREDS_FILE: credsPath });
    const logs = captureLogger();
    const nc = await connectNats({ url: cfg.natsUrl, name: 'creds-test', auth: cfg }, logs.log);
    try {
      await roundTrip(nc);
      nc.publish('notify.budget.flood', new TextEncoder().encode('{}'));
      await nc.flush();
      await waitFor(() => logs.text().includes('NATS_PERMISSION'), 5_000, 20, 'permission error logged');
      assert.match(logs.text(), /"subject":"notify.budget.flood"/);
    } finally {
      await nc.close();
    }
    const stranger = file('stranger.creds', decentralized().creds('stranger'));
    await assert.rejects(
      connectNats({ url: s.url, name: 'stranger', waitOnFirstConnect: false, auth: { ...NONE, natsCredsFile: stranger } }, logs.log),
      /Authorization Violation/i,
    );
  });

  it('TLS: CA + client certificate from the environment connect to a server that verifies clients; no client certificate is refused', async () => {
    const ossl = (...args: string[]): Promise<unknown> => sh('openssl', args, { cwd: dir });
    const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
    await ossl('req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '1', '-subj', '/CN=notify-test-ca');
    for (const [name, ext] of [
      ['server', 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth'],
      ['client', 'extendedKeyUsage=clientAuth'],
    ] as const) {
      await ossl('req', ...ec, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`);
      file(`${name}.ext`, `${ext}\n`);
      await ossl(
        'x509',
        '-req',
        '-in',
        `${name}.csr`,
        '-CA',
        'ca.pem',
        '-CAkey',
        'ca.key',
        '-CAcreateserial',
        '-out',
        `${name}.pem`,
        '-days',
        '1',
        '-extfile',
        `${name}.ext`,
      );
    }
    const p = (f: string): string => JSON.stringify(join(dir, f));
    const s = await startPrivateNats(
      `tls {\n  cert_file: ${p('server.pem')}\n  key_file: ${p('server.key')}\n  ca_file: ${p('ca.pem')}\n  verify: true\n}\n`,
      {},
    );
    servers.push(s);
    const cfg = loadConfig({
      NATS_URL: s.url,
      NATS_TLS_CA_FILE: join(dir, 'ca.pem'),
      NATS_TLS_CERT_FILE: join(dir, 'client.pem'),
      NATS_TLS_KEY_FILE: join(dir, 'client.key'),
    });
    const logs = captureLogger();
    const nc = await connectNats({ url: cfg.natsUrl, name: 'tls-test', auth: cfg }, logs.log);
    try {
      await roundTrip(nc);
      assert.equal(nc.info?.tls_required, true);
    } finally {
      await nc.close();
    }
    // Without a client certificate the server drops the handshake (the client sees a timeout).
    const { connect } = await import('nats');
    await assert.rejects(connect({ servers: s.url, tls: { ca: readFileSync(join(dir, 'ca.pem'), 'utf8') }, timeout: 2_000 }));
    await waitFor(() => /TLS handshake error/i.test(s.logs()), 5_000, 20, 'the server logs the refused handshake');
  });
});
