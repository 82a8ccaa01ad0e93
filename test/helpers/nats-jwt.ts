import { createHash, randomBytes } from 'node:crypto';
import { nkeys } from 'nats/lib/nats-base-client/nkeys';

/**
 * Just enough of NATS decentralized auth (operator → account → user JWTs, signed with
 * ed25519 NKEYs) to test `.creds` files against a real nats-server in operator mode.
 */
export interface KeyPair {
  getPublicKey(): string;
  getSeed(): Uint8Array;
  sign(d: Uint8Array): Uint8Array;
}

/** nkeys.js, typed (nats ships it as `any`). */
export const nk = nkeys as { createOperator(): KeyPair; createAccount(): KeyPair; createUser(): KeyPair };

const b64u = (b: Uint8Array | string): string => Buffer.from(b).toString('base64url');

function jwt(issuer: KeyPair, subject: string, name: string, nats: Record<string, unknown>): string {
  const claims = {
    jti: createHash('sha256').update(randomBytes(16)).digest('hex').slice(0, 52).toUpperCase(),
    iat: Math.floor(Date.now() / 1000),
    iss: issuer.getPublicKey(),
    name,
    sub: subject,
    nats: { ...nats, version: 2 },
  };
  const head = `${b64u(JSON.stringify({ typ: 'JWT', alg: 'ed25519-nkey' }))}.${b64u(JSON.stringify(claims))}`;
  return `${head}.${b64u(issuer.sign(new TextEncoder().encode(head)))}`;
}

export interface Decentralized {
  /** Server configuration lines: operator, memory resolver with the account preloaded. */
  serverConf: string;
  /** A `.creds` file for a user of the account with `permissions` ({pub:{allow}, sub:{allow}}). */
  creds(name: string, permissions?: Record<string, unknown>): string;
}

export function decentralized(): Decentralized {
  const operator = nk.createOperator();
  const account = nk.createAccount();
  const operatorJwt = jwt(operator, operator.getPublicKey(), 'test-operator', { type: 'operator' });
  const accountJwt = jwt(operator, account.getPublicKey(), 'notify', {
    type: 'account',
    limits: { subs: -1, data: -1, payload: -1, imports: -1, exports: -1, wildcards: true, conn: -1, leaf: -1 },
    default_permissions: { pub: {}, sub: {} },
  });
  return {
    serverConf: `operator: ${operatorJwt}\nresolver: MEMORY\nresolver_preload: {\n  ${account.getPublicKey()}: ${accountJwt}\n}\n`,
    creds(name, permissions = {}) {
      const user = nk.createUser();
      const userJwt = jwt(account, user.getPublicKey(), name, { type: 'user', subs: -1, data: -1, payload: -1, pub: {}, sub: {}, ...permissions });
      const seed = new TextDecoder().decode(user.getSeed());
      return `-----BEGIN NATS USER JWT-----\n${userJwt}\n------END NATS USER JWT------\n\n************************* IMPORTANT *************************\nNKEY Seed printed below can be used to sign and prove identity.\n\n-----BEGIN USER NKEY SEED-----\n${seed}\n------END USER NKEY SEED------\n`;
    },
  };
}
