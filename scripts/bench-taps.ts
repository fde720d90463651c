/**
 * Benchmark: what tapping an early layer saves. Times one batch through the derived model for an
 * early tap, a middle tap and the card's default (last) tap, plus the unmodified full model, all on
 * the same random pixels and thread count, and prints the ratios against the full model.
 *
 *   npm run bench:taps -- [--model mobilenet_v2] [--card card.json] [--batch 32] [--threads 1] [--reps 5]
 *     [--early block_2_add] [--mid block_6_expand_relu]
 */
import { parseArgs } from 'node:util';
import ort from '../src/model/ort.js';
import { openTappedBackbone } from '../src/model/runner.js';
import { resolveBackbone, requireCard } from '../src/model/registry.js';
import { pixelAffine } from '../src/model/card.js';

const { values } = parseArgs({
  options: {
    model: { type: 'string', default: 'mobilenet_v2' },
    card: { type: 'string' },
    batch: { type: 'string', default: '32' },
    threads: { type: 'string', default: '1' },
    reps: { type: 'string', default: '5' },
    early: { type: 'string' },
    mid: { type: 'string' },
  },
});
const batch = Number(values.batch);
const threads = Number(values.threads);
const reps = Number(values.reps);

const b = await resolveBackbone(values.model!, { card: values.card, onNotice: (m) => console.error(m) });
const card = requireCard(b, 'the benchmark');
const rec = card.taps?.recommended ?? [];
const early = values.early ?? rec[0];
const mid = values.mid ?? rec[Math.floor(rec.length / 2)];
const last = card.taps?.default ?? rec[rec.length - 1];
const [h, w] = card.input.size;
const pixels = Uint8Array.from({ length: batch * h * w * 3 }, (_, i) => (i * 2654435761) >>> 24);

async function timeIt(run: () => Promise<unknown>): Promise<number> {
  await run(); // warm-up
  const times: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    await run();
    times.push(performance.now() - t0);
  }
  times.sort((a, c) => a - c);
  return times[Math.floor(times.length / 2)];
}

// Anchor: the unmodified model on the same (JS-normalised) input.
const { scale, bias } = pixelAffine(card.input);
const full = await ort.InferenceSession.create(b.file, { intraOpNumThreads: threads, interOpNumThreads: 1, graphOptimizationLevel: 'all' });
const inName = card.input.name ?? full.inputNames[0];
const x = new Float32Array(batch * h * w * 3);
for (let i = 0; i < x.length; i++) x[i] = pixels[i] * scale[i % 3] + bias[i % 3];
let fullInput: ort.Tensor;
if (card.input.layout === 'NHWC') fullInput = new ort.Tensor('float32', x, [batch, h, w, 3]);
else {
  const t = new Float32Array(x.length);
  for (let n = 0; n < batch; n++) for (let p = 0; p < h * w; p++) for (let c = 0; c < 3; c++) t[(n * 3 + c) * h * w + p] = x[(n * h * w + p) * 3 + c];
  fullInput = new ort.Tensor('float32', t, [batch, 3, h, w]);
}
let fullMs = NaN;
if (card.input.dtype === 'float32') fullMs = await timeIt(() => full.run({ [inName]: fullInput }));
await full.release();

console.log(`model ${b.id}  batch ${batch}  threads ${threads}  median of ${reps}`);
console.log(`${'tap'.padEnd(28)} ${'ms/batch'.padStart(9)} ${'img/s'.padStart(7)} ${'vs full'.padStart(8)}`);
if (!Number.isNaN(fullMs)) console.log(`${'(unmodified full model)'.padEnd(28)} ${fullMs.toFixed(1).padStart(9)} ${((batch / fullMs) * 1000).toFixed(0).padStart(7)} ${'1.00'.padStart(8)}`);
for (const name of [early, mid, last]) {
  const tb = await openTappedBackbone(values.model!, { card: values.card, taps: [{ name, pool: 'avg' }], device: { device: 'cpu', threads } });
  const ms = await timeIt(() => tb.run(pixels, batch));
  await tb.close();
  const ratio = Number.isNaN(fullMs) ? '-' : (ms / fullMs).toFixed(2);
  console.log(`${name.padEnd(28)} ${ms.toFixed(1).padStart(9)} ${((batch / ms) * 1000).toFixed(0).padStart(7)} ${ratio.padStart(8)}`);
}
