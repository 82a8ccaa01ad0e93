import Ajv, { type ValidateFunction, type ErrorObject } from 'ajv';
import type { Static, TSchema } from '@sinclair/typebox';
import { InputError } from '../errors';

const ajv = new Ajv({ allErrors: false, coerceTypes: false, useDefaults: true, removeAdditional: false, strict: true });
const enc = new TextEncoder();
const dec = new TextDecoder('utf-8', { fatal: true });

/** Encodes a value as JSON bytes for NATS. */
export function encodeJson(value: unknown): Uint8Array {
  return enc.encode(JSON.stringify(value));
}

/**
 * A compiled decoder for one payload schema: bytes → UTF-8 → JSON → schema.
 * Each failure is an InputError whose message says exactly what is wrong.
 */
export interface Decoder<T> {
  (data: Uint8Array): T;
  readonly schema: TSchema;
}

export function decoder<S extends TSchema>(schema: S, opts: { maxBytes?: number } = {}): Decoder<Static<S>> {
  const validate: ValidateFunction = ajv.compile(schema);
  const fn = (data: Uint8Array): Static<S> => {
    if (opts.maxBytes !== undefined && data.byteLength > opts.maxBytes) {
      throw new InputError('PAYLOAD_TOO_LARGE', `payload is ${data.byteLength} bytes; the limit is ${opts.maxBytes}`);
    }
    let text: string;
    try {
      text = dec.decode(data);
    } catch {
      throw new InputError('BAD_JSON', 'payload is not valid UTF-8');
    }
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (e) {
      throw new InputError('BAD_JSON', `payload is not JSON: ${(e as Error).message}`);
    }
    return check(validate, value);
  };
  return Object.assign(fn, { schema });
}

/** Validates an already-parsed value (HTTP bodies, tests). */
export function validator<S extends TSchema>(schema: S): (value: unknown) => Static<S> {
  const validate = ajv.compile(schema);
  return (value) => check(validate, value);
}

function check(validate: ValidateFunction, value: unknown): unknown {
  if (!validate(value)) throw new InputError('BAD_PAYLOAD', describeAjvError(validate.errors?.[0]));
  return value;
}

/** One precise sentence from ajv's first error, e.g. "/text must NOT have fewer than 1 characters". */
export function describeAjvError(e: ErrorObject | undefined): string {
  if (!e) return 'payload does not match the schema';
  const where = e.instancePath || '(root)';
  if (e.keyword === 'additionalProperties') return `${where}: unknown field ${JSON.stringify((e.params as { additionalProperty: string }).additionalProperty)}`;
  if (e.keyword === 'required') return `${where}: missing required field ${JSON.stringify((e.params as { missingProperty: string }).missingProperty)}`;
  return `${where} ${e.message ?? 'is invalid'}`;
}
