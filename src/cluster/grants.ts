import { Type } from '@sinclair/typebox';
import type { NatsConnection } from 'nats';
import { decoder, encodeJson } from '../nats/codec';
import type { BudgetGrant } from '../nats/payloads';
import type { SubjectSet } from '../nats/subjects';
import type { GrantAck, Split } from './budget-plan';

/**
 * A member's answer to a grant (src/cluster/budget-client.ts answers it): validated like any
 * input, since it decides how much of the bot's budget the coordinator counts as in use.
 */
const decodeAck = decoder(
  Type.Object({
    ok: Type.Boolean(),
    share: Type.Optional(Type.Integer({ minimum: 0 })),
    free_at: Type.Optional(Type.Union([Type.Number({ minimum: 0 }), Type.Null()])),
  }),
  { maxBytes: 4096 },
);

/** One answer per grant of the split, in order, with when it came; `ack` undefined: no (valid) answer. */
export type GrantAnswers = Array<{ ack: GrantAck | undefined; at: number }>;

/**
 * Sends a round of grants and collects the answers; never rejects. A grant with no answer
 * may or may not be in force: the coordinator keeps it reserved until it expires.
 */
export function sendGrants(
  nc: NatsConnection,
  subjects: SubjectSet,
  split: Split,
  grant: Omit<BudgetGrant, 'share' | 'issued_at' | 'expires_at'>,
  /** How long to wait for each answer (a round runs 4 times a second). */
  timeoutMs = 200,
): Promise<GrantAnswers> {
  const body = { ...grant, issued_at: split.issuedAt, expires_at: split.expiresAt };
  return Promise.all(
    split.grants.map(async (g) => {
      try {
        const r = await nc.request(subjects.budgetGrant(g.holder), encodeJson({ share: g.share, ...body }), { timeout: timeoutMs });
        return { ack: decodeAck(r.data), at: Date.now() };
      } catch {
        return { ack: undefined, at: Date.now() };
      }
    }),
  );
}
