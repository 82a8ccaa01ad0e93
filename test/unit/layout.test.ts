import { strict as assert } from 'node:assert';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, normalize, resolve } from 'node:path';

/**
 * The dependency rule of the layout (docs/architecture.md): entry points → roles →
 * actors → libraries. Checked on the source text, so a new import that breaks it fails
 * here rather than in a review.
 */
const ROOT = resolve(__dirname, '../..');

interface Edge {
  from: string;
  to: string;
  typeOnly: boolean;
  dynamic: boolean;
}

function tsFiles(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(join(ROOT, dir))) {
    const rel = join(dir, name);
    if (statSync(join(ROOT, rel)).isDirectory()) out.push(...tsFiles(rel));
    else if (name.endsWith('.ts')) out.push(rel);
  }
  return out;
}

function resolveSpec(from: string, spec: string): string {
  const base = normalize(join(dirname(from), spec));
  for (const candidate of [`${base}.ts`, join(base, 'index.ts')]) {
    try {
      if (statSync(join(ROOT, candidate)).isFile()) return candidate;
    } catch {
      /* try the next form */
    }
  }
  throw new Error(`${from}: cannot resolve ${spec}`);
}

function edges(files: string[]): Edge[] {
  const out: Edge[] = [];
  const re = /(?:^|\n)\s*(import|export)\s+(type\s+)?[^'";]*?from\s+'(\.{1,2}\/[^']+)'|import\(\s*'(\.{1,2}\/[^']+)'\s*\)/g;
  for (const from of files) {
    const text = readFileSync(join(ROOT, from), 'utf8');
    for (const m of text.matchAll(re)) {
      const spec = m[3] ?? m[4]!;
      out.push({ from, to: resolveSpec(from, spec), typeOnly: Boolean(m[2]), dynamic: m[4] !== undefined });
    }
  }
  return out;
}

const files = [...tsFiles('src'), ...tsFiles('actors'), ...tsFiles('sandbox')];
const all = edges(files);
const isEntry = (f: string): boolean => f === 'src/main.ts' || f === 'src/cli.ts';
const isRole = (f: string): boolean => f.startsWith('src/roles/');
const isActor = (f: string): boolean => f.startsWith('actors/');
const isLibrary = (f: string): boolean => f.startsWith('src/') && !isEntry(f) && !isRole(f);

describe('layout: dependencies point one way', () => {
  it('finds the imports it checks (the scanner itself works)', () => {
    assert.ok(all.length > 100, `only ${all.length} imports found`);
    assert.ok(all.some((e) => e.from === 'src/main.ts' && isRole(e.to)));
  });

  it('libraries (src/ but entry points and roles) never import actors, roles or entry points', () => {
    const bad = all.filter((e) => isLibrary(e.from) && (isActor(e.to) || isRole(e.to) || isEntry(e.to)));
    assert.deepEqual(
      bad.map((e) => `${e.from} → ${e.to}`),
      [],
    );
  });

  it('actors never import roles or entry points', () => {
    const bad = all.filter((e) => isActor(e.from) && (isRole(e.to) || isEntry(e.to)));
    assert.deepEqual(
      bad.map((e) => `${e.from} → ${e.to}`),
      [],
    );
  });

  it('roles never import entry points, nor each other except for types', () => {
    const bad = all.filter((e) => isRole(e.from) && (isEntry(e.to) || (isRole(e.to) && !e.typeOnly)));
    assert.deepEqual(
      bad.map((e) => `${e.from} → ${e.to}`),
      [],
    );
  });

  it('the sandbox is loaded only by a dynamic import (production never loads its code)', () => {
    const bad = all.filter((e) => !e.from.startsWith('sandbox/') && e.to.startsWith('sandbox/') && !e.dynamic && !e.typeOnly);
    assert.deepEqual(
      bad.map((e) => `${e.from} → ${e.to}`),
      [],
    );
    // The sandbox shares only the rate-to-window mapping (src/limits/window.ts), so it enforces the windows the senders plan for.
    const sandboxOut = all.filter((e) => e.from.startsWith('sandbox/') && !e.to.startsWith('sandbox/') && e.to !== 'src/limits/window.ts');
    assert.deepEqual(
      sandboxOut.map((e) => `${e.from} → ${e.to}`),
      [],
      'the sandbox stands alone',
    );
  });

  it('actors/root.ts is the only place outside an actor’s own folder that spawns a top-level actor', () => {
    const rootText = readFileSync(join(ROOT, 'actors/root.ts'), 'utf8');
    const topLevel = [...new Set([...rootText.matchAll(/\b(spawn[A-Z]\w*)\(/g)].map((m) => m[1]!))].filter((f) => f !== 'spawnRoot');
    // The scanner itself works: the root spawns the pipeline, the cluster's actors, the ads actors and the fetcher.
    assert.ok(topLevel.length >= 7 && topLevel.includes('spawnPipeline'), `root.ts spawns only ${topLevel.join(', ')}`);
    const definedIn = new Map<string, string>();
    for (const f of files) for (const m of readFileSync(join(ROOT, f), 'utf8').matchAll(/export function (spawn[A-Z]\w*)\(/g)) definedIn.set(m[1]!, f);
    const bad: string[] = [];
    for (const f of files) {
      if (f === 'actors/root.ts') continue;
      const text = readFileSync(join(ROOT, f), 'utf8');
      for (const name of topLevel) {
        const calls = [...text.matchAll(new RegExp(`(?<!function )\\b${name}\\(`, 'g'))];
        const home = definedIn.get(name);
        if (calls.length > 0 && (!home || dirname(home) !== dirname(f))) bad.push(`${f} calls ${name}`);
      }
    }
    assert.deepEqual(bad, []);
  });

  it('no import loop between library folders', () => {
    const folderOf = (f: string): string => dirname(f);
    const graph = new Map<string, Set<string>>();
    for (const e of all) {
      if (!isLibrary(e.from) || !isLibrary(e.to)) continue;
      // The Objection models refer to each other lazily (relationMappings); a pair inside one folder is no loop between folders.
      const a = folderOf(e.from);
      const b = folderOf(e.to);
      if (a === b) continue;
      if (!graph.has(a)) graph.set(a, new Set());
      graph.get(a)!.add(b);
    }
    const loops: string[] = [];
    const visit = (node: string, path: string[]): void => {
      for (const next of graph.get(node) ?? []) {
        const i = path.indexOf(next);
        if (i >= 0) loops.push([...path.slice(i), next].join(' → '));
        else visit(next, [...path, next]);
      }
    };
    for (const start of graph.keys()) visit(start, [start]);
    assert.deepEqual([...new Set(loops)], []);
  });
});
