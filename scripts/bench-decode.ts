/**
 * Decode + preprocess throughput (sharp): read → decode → resize shorter side to 256 → center crop
 * 224 → HWC uint8, for 1 stream and N in flight. Not a test; the numbers depend on the machine.
 *
 *   npx tsc -p . && node dist/scripts/bench-decode.js [dataset-folder] [--passes 2] [--inflight 1,2] [--shrink]
 *
 * Default dataset: ../shared/datasets/hymenoptera (all splits). --shrink also measures shrink-on-load.
 */
import path from 'node:path';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import type { ModelCard } from '../src/model/card.js';
import { discoverDataset, entrySource } from '../src/image/discover.js';
import { loadImagePixels, isImageError } from '../src/image/decode.js';
import { resolvePreprocess, type PreprocessPlan } from '../src/image/plan.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const args = process.argv.slice(2);
const flag = (name: string, def: string) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : def;
};
const data = args[0] && !args[0].startsWith('--') ? args[0] : path.resolve(repoRoot, '../shared/datasets/hymenoptera');
const passes = Number(flag('--passes', '2'));
const inflights = flag('--inflight', '1,2').split(',').map(Number);

const card: ModelCard = {
  id: 'bench',
  description: '',
  source: '',
  license: 'MIT',
  input: { size: [224, 224], layout: 'NCHW', channel_order: 'RGB', dtype: 'float32', range: [0, 1], mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] },
  resize: { policy: 'crop', crop_pct: 0.875, interpolation: 'bilinear' },
};

async function run(files: (string | Buffer)[], plan: PreprocessPlan, inflight: number): Promise<{ rate: number; errors: number }> {
  let next = 0;
  let errors = 0;
  const t0 = process.hrtime.bigint();
  const worker = async () => {
    for (;;) {
      const i = next++;
      if (i >= files.length) return;
      try {
        await loadImagePixels(files[i], plan);
      } catch (e) {
        if (!isImageError(e)) throw e;
        errors++;
      }
    }
  };
  await Promise.all(Array.from({ length: inflight }, worker));
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  return { rate: files.length / s, errors };
}

const ds = await discoverDataset(data);
const files = ds.entries.map(entrySource);
// sharp's own thread pool: libvips threads per image (default = cores). Keep the default, report it.
console.log(`dataset ${data}: ${files.length} images; ${os.cpus().length} CPUs (${os.cpus()[0]?.model ?? '?'}); sharp concurrency ${sharp.concurrency()}; load ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`);
const variants: [string, PreprocessPlan][] = [['resize 256 + crop 224 (bilinear, shrink-on-load off)', resolvePreprocess(card)]];
if (args.includes('--shrink')) variants.push(['resize 256 + crop 224 (bilinear, shrink-on-load on)', resolvePreprocess(card, { shrinkOnLoad: true })]);
await run(files.slice(0, 50), variants[0][1], 2); // warm-up (page cache, sharp init)
for (const [name, plan] of variants) {
  for (const k of inflights) {
    const rates: number[] = [];
    let errors = 0;
    for (let p = 0; p < passes; p++) {
      const r = await run(files, plan, k);
      rates.push(r.rate);
      errors = r.errors;
    }
    console.log(`${name}, ${k} in flight: ${Math.max(...rates).toFixed(1)} img/s (best of ${passes}: ${rates.map((r) => r.toFixed(1)).join(', ')}; ${errors} unreadable)`);
  }
}
