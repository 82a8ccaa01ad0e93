import { strict as assert } from 'node:assert';
import { connect, type NatsConnection } from 'nats';
import { Type } from '@sinclair/typebox';
import { decoder, encodeJson } from '../../../src/nats/codec';
import { NatsIntake, requestValidated, decodeKvValue } from '../../../src/nats/intake';
import { AppError, InputError, isAppError } from '../../../src/errors';
import { Metrics } from '../../../src/metrics';
import { NATS_URL, captureLogger, uniq, waitFor } from '../../helpers/services';

const Ping = Type.Object({ n: Type.Integer({ minimum: 0, maximum: 100 }) }, { additionalProperties: false });
const decodePing = decoder(Ping, { maxBytes: 256 });
const Pong = Type.Object({ ok: Type.Literal(true), doubled: Type.Integer() }, { additionalProperties: false });
const decodePong = decoder(Pong);

const json = (data: Uint8Array): unknown => JSON.parse(new TextDecoder().decode(data));

describe('the NATS intake (real nats-server)', () => {
  let nc: NatsConnection;
  let metrics: Metrics;
  let intake: NatsIntake;
  let subject: string;
  const cap = captureLogger();

  beforeEach(async () => {
    nc = await connect({ servers: NATS_URL });
    metrics = new Metrics();
    intake = new NatsIntake({ nc, log: cap.log, metrics });
    subject = uniq('intake.');
  });
  afterEach(async () => {
    await intake.drain();
    await nc.close();
  });

  const counted = async (name: string): Promise<Array<{ labels: Record<string, unknown>; value: number }>> => {
    const m = await metrics.registry.getSingleMetric(name)!.get();
    return m.values.map((v) => ({ labels: v.labels, value: v.value }));
  };

  it('serves valid requests and answers every kind of bad input with a coded error, counted once', async () => {
    intake.serve(subject, decodePing, (p) => ({ ok: true as const, doubled: p.n * 2 }));
    assert.deepEqual(await requestValidated(nc, subject, { n: 21 }, decodePong, 2000), { ok: true, doubled: 42 });

    const cases: Array<[Uint8Array, string]> = [
      [new TextEncoder().encode('{not json'), 'BAD_JSON'],
      [new Uint8Array([0xff, 0xfe]), 'BAD_JSON'],
      [encodeJson({ n: 101 }), 'BAD_PAYLOAD'],
      [encodeJson({ n: 1, extra: true }), 'BAD_PAYLOAD'],
      [encodeJson({ n: 'x'.repeat(300) }), 'PAYLOAD_TOO_LARGE'],
    ];
    for (const [data, code] of cases) {
      const r = json((await nc.request(subject, data, { timeout: 2000 })).data) as { ok: boolean; error: { code: string } };
      assert.equal(r.ok, false);
      assert.equal(r.error.code, code);
    }
    const bad = await counted('nats_bad_payloads_total');
    assert.equal(
      bad.reduce((s, v) => s + v.value, 0),
      cases.length,
    );
    assert.ok(bad.every((v) => v.labels.subject === subject));
    // One warning per subject and code, however many arrive (a hostile client cannot flood the log).
    const warned = cap.lines().filter((l) => l.msg === 'bad NATS payload rejected' && l.subject === subject);
    assert.deepEqual(warned.map((l) => l.code).sort(), ['BAD_JSON', 'BAD_PAYLOAD', 'PAYLOAD_TOO_LARGE']);
  });

  it("answers our own errors with their code, and hides any other error's text", async () => {
    intake.serve(subject, decodePing, (p) => {
      if (p.n === 1) throw new InputError('NOT_FOUND', 'no such thing');
      throw new Error('ER_ACCESS_DENIED_ERROR: secret database detail');
    });
    await assert.rejects(requestValidated(nc, subject, { n: 1 }, decodePong, 2000), (e: unknown) => isAppError(e) && e.code === 'NOT_FOUND');
    const r = json((await nc.request(subject, encodeJson({ n: 2 }), { timeout: 2000 })).data) as { error: { code: string; message: string } };
    assert.equal(r.error.code, 'INTERNAL');
    assert.doesNotMatch(r.error.message, /secret|ER_ACCESS/);
    assert.match(cap.text(), /secret database detail/, 'the detail is in the log for the operator');
  });

  it('listens to events: bad ones are counted and never reach the handler; a failing handler never crashes', async () => {
    const seen: number[] = [];
    intake.listen(subject, decodePing, (p) => {
      if (p.n === 13) throw new Error('handler bug');
      seen.push(p.n);
    });
    nc.publish(subject, encodeJson({ n: 1 }));
    nc.publish(subject, encodeJson({ n: -1 }));
    nc.publish(subject, encodeJson({ n: 13 }));
    nc.publish(subject, encodeJson({ n: 2 }));
    await waitFor(() => seen.length === 2, 2000, 10, 'the good events');
    assert.deepEqual(seen, [1, 2]);
    assert.equal(
      (await counted('nats_bad_payloads_total')).reduce((s, v) => s + v.value, 0),
      1,
    );
    assert.equal(
      (await counted('nats_handler_errors_total')).reduce((s, v) => s + v.value, 0),
      1,
    );
  });

  it('validates replies: a reply of the wrong shape is BAD_PAYLOAD, not a value', async () => {
    const sub = nc.subscribe(subject, { callback: (_e, m) => m.respond(encodeJson({ ok: true, doubled: 'many' })) });
    await assert.rejects(requestValidated(nc, subject, { n: 1 }, decodePong, 2000), (e: unknown) => e instanceof AppError && e.code === 'BAD_PAYLOAD');
    sub.unsubscribe();
  });

  it('validates KV values', async () => {
    const bucket = uniq('kvintake');
    const kv = await nc.jetstream().views.kv(bucket, { history: 1 });
    try {
      await kv.put('good', encodeJson({ n: 5 }));
      await kv.put('bad', encodeJson({ n: 'five' }));
      assert.deepEqual(decodeKvValue(await kv.get('good'), decodePing), { n: 5 });
      assert.equal(decodeKvValue(await kv.get('missing'), decodePing), undefined);
      assert.equal(decodeKvValue(null, decodePing), undefined);
      const badEntry = await kv.get('bad');
      assert.throws(
        () => decodeKvValue(badEntry, decodePing),
        (e: unknown) => isAppError(e) && e.code === 'BAD_PAYLOAD' && e.message.includes(`${bucket}/bad`),
      );
    } finally {
      await kv.destroy();
    }
  });

  it('drain stops every subscription and is safe to call twice', async () => {
    const seen: number[] = [];
    intake.listen(subject, decodePing, (p) => void seen.push(p.n));
    nc.publish(subject, encodeJson({ n: 1 }));
    await waitFor(() => seen.length === 1, 2000, 10, 'first event');
    await Promise.all([intake.drain(), intake.drain()]);
    nc.publish(subject, encodeJson({ n: 2 }));
    await nc.flush();
    // A request-reply round trip on another subject orders us after any delivery of n: 2.
    const probe = uniq('probe.');
    const s = nc.subscribe(probe, { callback: (_e, m) => m.respond(encodeJson({})) });
    await nc.request(probe, encodeJson({}), { timeout: 1000 });
    s.unsubscribe();
    assert.deepEqual(seen, [1]);
    assert.throws(() => intake.listen(subject, decodePing, () => undefined), /draining/);
  });
});
