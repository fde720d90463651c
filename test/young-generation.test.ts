/**
 * keepYoungGenerationSmall (src/cli/young-generation.ts): V8's young generation stops growing. A
 * child process keeps tens of thousands of small objects alive across scavenges (what makes V8 grow
 * it) with and without the call, and reports its new space before and after.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';

const MODULE = new URL('../src/cli/young-generation.js', import.meta.url).href;

function newSpaceGrowth(cap: boolean): { before: number; after: number } {
  const script = `
    import v8 from 'node:v8';
    const { keepYoungGenerationSmall } = await import(${JSON.stringify(MODULE)});
    if (${cap}) keepYoungGenerationSmall();
    const ns = () => v8.getHeapSpaceStatistics().find((s) => s.space_name === 'new_space').space_size;
    const before = ns();
    const keep = [];
    for (let i = 0; i < 400000; i++) { keep.push({ a: i, b: [i, i + 1] }); if (keep.length > 60000) keep.splice(0, 30000); }
    process.stdout.write(JSON.stringify({ before, after: ns() }));`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout) as { before: number; after: number };
}

test('keepYoungGenerationSmall: the new space stays near its start size where V8 would grow it 32-fold', () => {
  const free = newSpaceGrowth(false);
  const kept = newSpaceGrowth(true);
  assert.ok(free.after >= 8 * free.before, `the control grows it (${free.before} → ${free.after} bytes)`);
  assert.ok(kept.after <= 2 * kept.before, `kept small: ${kept.before} → ${kept.after} bytes`);
});
