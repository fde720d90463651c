/**
 * src/ is layered in data-flow order (docs/ARCHITECTURE.md): a module imports only from its own
 * folder and the folders below it, and the library never imports the CLI. Type-only imports are
 * not dependencies at run time and are not counted.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { REPO_ROOT } from './helpers/paths.js';

/** Lowest first. A folder not listed ranks just below cli/ (nothing listed may import it). */
const ORDER = ['util', 'onnx', 'import', 'model', 'image', 'runtime', 'features', 'extract', 'heads', 'finetune', 'predict', 'sweep'];
const TOP = ['cli', 'index.ts'];
const SRC = path.join(REPO_ROOT, 'src');

function rank(name: string): number {
  const top = name.replace(/\.js$/, '.ts');
  if (top === 'errors.ts' || top === 'version.ts') return -1;
  if (TOP.includes(top)) return ORDER.length + 1;
  const i = ORDER.indexOf(top);
  return i >= 0 ? i : ORDER.length;
}

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? sources(path.join(dir, e.name)) : e.name.endsWith('.ts') ? [path.join(dir, e.name)] : []));
}

/** Relative module specifiers a file imports at run time (static, dynamic and re-exports). */
function runtimeImports(text: string): string[] {
  const out: string[] = [];
  for (const m of text.matchAll(/^\s*(import|export)\s+(type\s+)?[^;'"]*?from\s+'(\.[^']+)'/gm)) if (!m[2]) out.push(m[3]);
  for (const m of text.matchAll(/^\s*import\s+'(\.[^']+)'/gm)) out.push(m[1]);
  for (const m of text.matchAll(/import\(\s*'(\.[^']+)'\s*\)/g)) out.push(m[1]);
  return out;
}

test('src/: no module imports from a folder above its own, and only cli/ and index.ts import cli/', () => {
  const bad: string[] = [];
  for (const file of sources(SRC)) {
    const from = path.relative(SRC, file).split(path.sep)[0];
    for (const spec of runtimeImports(readFileSync(file, 'utf8'))) {
      const target = path.relative(SRC, path.resolve(path.dirname(file), spec)).split(path.sep)[0];
      if (target === from || target.startsWith('..')) continue;
      if (rank(target) > rank(from) || (target === 'cli' && from !== 'cli' && from !== 'index.ts')) bad.push(`${path.relative(REPO_ROOT, file)} imports ${spec}`);
    }
  }
  assert.deepEqual(bad, []);
});

test('the layering check sees static, dynamic and re-exported imports, and not type-only ones', () => {
  const text = "import a from '../x/a.js';\nimport type { B } from '../y/b.js';\nexport { c } from '../z/c.js';\nconst d = await import('../w/d.js');\nimport '../v/e.js';";
  assert.deepEqual(runtimeImports(text).sort(), ['../v/e.js', '../w/d.js', '../x/a.js', '../z/c.js']);
});
