import assert from 'node:assert/strict';
import { parseDecimalId } from '../../src/nats/ads-payloads';
import { validator } from '../../src/nats/codec';
import { EnqueueRequest, MAX_CHAT_ID } from '../../src/nats/payloads';
import { isAppError } from '../../src/errors';
import { checkEnqueue } from '../../src/outbox/enqueue';

const code = (f: () => unknown): string | undefined => {
  try {
    f();
    return undefined;
  } catch (e) {
    return isAppError(e) ? e.code : 'THROWN';
  }
};

describe('bounds at the edge (issue 10 item 2)', () => {
  it('parseDecimalId reads 1 … 2^53 − 1 exactly and refuses everything else by its digits, naming the field', () => {
    for (const ok of ['1', '42', '9007199254740991', '999999999999999', '1000000000000000']) assert.equal(parseDecimalId(ok, 'id'), Number(ok));
    for (const bad of [
      '0',
      '01',
      '-1',
      '+1',
      '1e3',
      ' 1',
      '1 ',
      '1.0',
      '',
      'x',
      '9007199254740992',
      '9007199254740993',
      '9999999999999999',
      '10000000000000000',
      '123456789012345678901',
    ]) {
      assert.equal(
        code(() => parseDecimalId(bad, 'params/id')),
        'BAD_PAYLOAD',
        bad,
      );
    }
    assert.throws(
      () => parseDecimalId('9007199254740993', 'params/id'),
      /params\/id must be a decimal integer from 1 to 9007199254740991; got "9007199254740993"/,
    );
  });

  it('EnqueueRequest: chat ids within ±(2^52 − 1), not 0; order ids within 2^53 − 1', () => {
    const v = validator(EnqueueRequest);
    for (const chat_id of [1, -1, MAX_CHAT_ID, -MAX_CHAT_ID, -1001234567890])
      assert.equal(
        code(() => v({ chat_id, text: 'x' })),
        undefined,
        String(chat_id),
      );
    for (const chat_id of [0, MAX_CHAT_ID + 1, -MAX_CHAT_ID - 1, 2 ** 53, 1e20, 1.5])
      assert.equal(
        code(() => v({ chat_id, text: 'x' })),
        'BAD_PAYLOAD',
        String(chat_id),
      );
    for (const order_id of [0, -1, 2 ** 53, 1e20, 2.5])
      assert.equal(
        code(() => v({ chat_id: 1, text: 'x', order_id })),
        'BAD_PAYLOAD',
        String(order_id),
      );
    assert.equal(
      code(() => v({ chat_id: 1, text: 'x', order_id: Number.MAX_SAFE_INTEGER })),
      undefined,
    );
  });

  it('checkEnqueue refuses text with nothing visible, in HTML after real tags go', () => {
    for (const text of [' ', '\n\t', '\u00a0\u2003', '<b> </b>', '<i></i>', '&#32;'])
      assert.equal(
        code(() => checkEnqueue({ chat_id: 1, text })),
        'BAD_PAYLOAD',
        JSON.stringify(text),
      );
    for (const text of ['.', '<>', 'a<b', '<b>x</b>', '&amp;'])
      assert.equal(
        code(() => checkEnqueue({ chat_id: 1, text })),
        undefined,
        JSON.stringify(text),
      );
    assert.equal(
      code(() => checkEnqueue({ chat_id: 1, text: '<b> </b>', parse_mode: null })),
      undefined,
      'plain text: the tags are visible',
    );
  });
});
