import { strict as assert } from 'node:assert';
import { createHash } from 'node:crypto';
import { readFileSync, readdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { migrations } from '../../migrations';

/**
 * A migration that has landed may have run on someone's database: editing it would leave
 * that database different from a fresh one, silently. `migrations/landed.json` records
 * each file's SHA-256 when it lands; this test fails when one changes, and when a
 * migration in the list has no recorded hash (record it in the commit that lands it).
 */
const DIR = resolve(__dirname, '../../migrations');
const landed = JSON.parse(readFileSync(join(DIR, 'landed.json'), 'utf8')) as Record<string, string>;
const sha256 = (file: string): string =>
  createHash('sha256')
    .update(readFileSync(join(DIR, file)))
    .digest('hex');

describe('landed migrations are never edited', () => {
  it('every landed migration file still has the hash recorded when it landed', () => {
    const changed = Object.entries(landed)
      .filter(([file, hash]) => sha256(file) !== hash)
      .map(([file]) => file);
    assert.deepEqual(changed, [], 'add a new migration instead of editing a landed one');
  });

  it('every migration file and every entry of the ordered list has a recorded hash', () => {
    const files = readdirSync(DIR).filter((f) => /^\d{4}_.+\.ts$/.test(f));
    assert.deepEqual(
      files.filter((f) => !(f in landed)),
      [],
      'record new migrations in migrations/landed.json',
    );
    assert.deepEqual(
      migrations.map((m) => `${m.name}.ts`).filter((f) => !(f in landed)),
      [],
    );
  });

  it('the ordered list is append-only: names strictly increase', () => {
    const names = migrations.map((m) => m.name);
    assert.deepEqual([...names].sort(), names);
    assert.equal(new Set(names).size, names.length);
  });
});
