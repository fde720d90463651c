/**
 * `npm run stress:lock [-- <rounds>]` (default 20): two `xfer extract --resume` processes started at
 * the same moment on one half-finished feature folder (left by a run killed with -9), round after
 * round. Passes when, every round, exactly one run writes (exit 0) and the other is refused (exit 2,
 * "in use by ... pid ... host ... since"), and the folder ends byte-identical to an uninterrupted run
 * and opens cleanly (index rows 0..n-1, distinct shard positions and paths). A third variant races
 * --resume against --overwrite. Not part of `npm test` (about a second per run on an idle machine).
 */
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { makeDataset, makeTinyModel, CLI } from '../test/extract-helpers.js';
import { openFeatures } from '../src/features/reader.js';

interface Run {
  code: number | null;
  stderr: string;
}

/** The extract CLI under test: XFER_STRESS_CLI points at another build's dist/test/extract-cli.js (e.g. one without the lock, to see it fail). */
const cli = process.env.XFER_STRESS_CLI ?? CLI;

function run(args: string[], env: NodeJS.ProcessEnv = {}): { done: Promise<Run>; kill: () => void } {
  const child = spawn(process.execPath, [cli, ...args], { env: { ...process.env, XFER_NO_AUTO_SHARD: '1', ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  return { done: new Promise((r) => child.on('close', (code) => r({ code, stderr }))), kill: () => child.kill('SIGKILL') };
}

async function files(dir: string, rel = ''): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  for (const e of await readdir(path.join(dir, rel), { withFileTypes: true })) {
    const r = rel ? `${rel}/${e.name}` : e.name;
    if (e.isDirectory()) for (const [k, v] of await files(dir, r)) out.set(k, v);
    else if (r !== 'meta.json') out.set(r, await readFile(path.join(dir, r)));
  }
  return out;
}

/** Differences between two feature folders (every file but meta.json by bytes; meta.json without its run-specific fields). */
async function differences(a: string, b: string): Promise<string[]> {
  const fa = await files(a);
  const fb = await files(b);
  const d: string[] = [];
  for (const k of new Set([...fa.keys(), ...fb.keys()])) if (!fa.get(k)?.equals(fb.get(k) ?? Buffer.alloc(0))) d.push(k);
  const meta = async (x: string) => {
    const m = JSON.parse(await readFile(path.join(x, 'meta.json'), 'utf8'));
    delete m.created;
    delete m.batch;
    return JSON.stringify(m);
  };
  if ((await meta(a)) !== (await meta(b))) d.push('meta.json');
  return d;
}

async function committedShards(out: string): Promise<number> {
  try {
    return JSON.parse(await readFile(path.join(out, 'meta.json'), 'utf8')).counts.shards as number;
  } catch {
    return 0;
  }
}

async function main(): Promise<void> {
  const rounds = Number(process.argv[2] ?? 20);
  const dir = await mkdtemp(path.join(os.tmpdir(), 'xfer-stress-lock-'));
  const { model, card } = await makeTinyModel(dir);
  const data = path.join(dir, 'data');
  await makeDataset(data, ['ants', 'bees', 'wasps'], 8);
  const base = ['extract', '--model', model, '--card', card, '--data', data, '--batch', '2', '--shard-rows', '4', '--quiet'];
  const ref = path.join(dir, 'ref');
  const r0 = await run([...base, '--out', ref]).done;
  if (r0.code !== 0) throw new Error(`reference run failed: ${r0.stderr}`);
  // Each batch waits this long, so the two runs overlap for the whole of one of them.
  const slow = { XFER_TEST_BATCH_DELAY_MS: '25' };
  const tally = new Map<string, number>();
  const problems: string[] = [];
  const t0 = performance.now();
  for (let i = 0; i < rounds; i++) {
    const out = path.join(dir, `round-${i}`);
    // A half-finished folder: a run killed with -9 after its second shard.
    const first = run([...base, '--out', out], slow);
    for (;;) {
      if ((await committedShards(out)) >= 2) break;
      await new Promise((r) => setTimeout(r, 5));
    }
    first.kill();
    await first.done;
    const second = i % 3 === 2 ? '--overwrite' : '--resume';
    const [a, b] = await Promise.all([run([...base, '--out', out, '--resume'], slow).done, run([...base, '--out', out, second], slow).done]);
    const key = `${a.code}/${b.code}`;
    tally.set(key, (tally.get(key) ?? 0) + 1);
    const refused = [a, b].filter((x) => x.code === 2 && /in use by xfer extract \(pid \d+ on host .+, since /.test(x.stderr));
    const wrote = [a, b].filter((x) => x.code === 0);
    if (wrote.length === 2) problems.push(`round ${i}: both runs exited 0`);
    if (wrote.length !== 1 || refused.length !== 1) problems.push(`round ${i}: exits ${key} (expected one 0 and one refused 2): ${a.stderr.trim()} | ${b.stderr.trim()}`);
    try {
      await openFeatures(out);
      const d = await differences(out, ref);
      if (d.length > 0) problems.push(`round ${i}: folder differs from the uninterrupted run in ${d.join(', ')}`);
    } catch (e) {
      problems.push(`round ${i}: folder unreadable: ${(e as Error).message}`);
    }
    await rm(out, { recursive: true, force: true });
  }
  const seconds = (performance.now() - t0) / 1000;
  console.log(`${rounds} rounds in ${seconds.toFixed(1)} s (machine load ${os.loadavg()[0].toFixed(1)}); exit codes (run A/run B): ${[...tally].map(([k, n]) => `${k} ×${n}`).join(', ')}`);
  await rm(dir, { recursive: true, force: true });
  if (problems.length > 0) {
    console.log(`FAILED:\n${problems.join('\n')}`);
    process.exitCode = 1;
  } else console.log('ok: every round one run wrote, the other was refused naming the holder; every folder identical to an uninterrupted run');
}

await main();
