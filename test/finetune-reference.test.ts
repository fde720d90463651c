/**
 * The training graph against PyTorch autograd (fixtures from scripts/make-finetune-reference.py):
 * loss, every parameter's gradient, and the weight changes after two SGD-momentum and two AdamW
 * steps, for the built-in MobileNetV2's top from block_13 and a (narrowed) ResNet-18 layer4 export.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { readOnnxFile } from '../src/onnx/io.js';
import { builtinOnnxPath } from '../src/import/keras/nsfwjs.js';
import { planFinetune, buildTrainingModel, trainingBuffers, nchwcBlock, TrainingSession, Rng, type FinetunePlan, type TrainGraphOptions } from '../src/finetune/index.js';
import type { ModelProto } from '../src/onnx/proto.js';

const FIX = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'test', 'fixtures', 'finetune');
const REF = JSON.parse(readFileSync(path.join(FIX, 'reference.json'), 'utf8')) as Reference;

interface Summary { norm: number; dot: number; maxabs: number; idx: number[]; val: number[]; rows?: number[] }
interface Case {
  from: string; n: number; classes: number; x: { seed: number; lo: number; hi: number };
  loss: number; params: string[]; grads: Record<string, Summary>;
  sgd: Steps; adamw: Steps;
}
/** After the steps: each parameter's change and (batch-statistics BN) each running statistic. */
interface Steps { losses: number[]; deltas: Record<string, Summary>; buffers?: Record<string, Summary> }
interface Reference { settings: Record<string, number>; cases: Record<string, Case> }

const TOL = 1e-4;

/**
 * The same summary as the Python script: norm, dot with a mulberry32 probe, 8 sampled entries;
 * relative error ≤ TOL of the reference's scale, plus `floor` per entry (the float32 rounding of
 * the weights themselves, for weight changes).
 */
function check(what: string, a: Float32Array, ref: Summary, k: number, floor = 0): void {
  const probeRng = new Rng(1000 + k);
  let norm = 0;
  let dot = 0;
  let probeNorm = 0;
  for (let i = 0; i < a.length; i++) {
    const v = probeRng.next() * 2 - 1;
    norm += a[i] * a[i];
    dot += a[i] * v;
    probeNorm += v * v;
  }
  norm = Math.sqrt(norm);
  const scale = Math.max(ref.norm, 1e-12);
  const noise = floor * Math.sqrt(a.length);
  assert.ok(Math.abs(norm - ref.norm) <= TOL * scale + noise, `${what}: norm ${norm} vs PyTorch ${ref.norm}`);
  assert.ok(Math.abs(dot - ref.dot) <= (TOL * scale + noise) * Math.sqrt(probeNorm), `${what}: probe ${dot} vs PyTorch ${ref.dot}`);
  if (ref.rows) {
    // Per output channel: |row| (the value itself for 1-D parameters) within TOL of the largest.
    const width = a.length / ref.rows.length;
    const top = Math.max(...ref.rows);
    ref.rows.forEach((want, r) => {
      let s = 0;
      for (let i = r * width; i < (r + 1) * width; i++) s += a[i] * a[i];
      const got = width === 1 ? Math.abs(a[r]) : Math.sqrt(s);
      assert.ok(Math.abs(got - want) <= TOL * top, `${what} row ${r}: |row| ${got} vs PyTorch ${want}`);
    });
  }
  ref.idx.forEach((j, i) => {
    assert.ok(Math.abs(a[j] - ref.val[i]) <= TOL * Math.max(ref.maxabs, 1e-12) + floor, `${what}[${j}]: ${a[j]} vs PyTorch ${ref.val[i]}`);
  });
}

/**
 * `nchwc`: build the graph as a CPU run does (NCHWc depthwise kernels) for batches of `nchwc.batch`.
 * `batchNorm` 'batch': BatchNormalization with batch statistics (PyTorch's train mode); the running
 * statistics after the steps are checked too.
 */
async function runCase(model: ModelProto, c: Case, nchwc?: { block: number; batch: number }, batchNorm: 'frozen' | 'batch' = 'frozen'): Promise<void> {
  const s = REF.settings;
  const plan: FinetunePlan = planFinetune(model, { from: c.from, nClasses: c.classes });
  assert.deepEqual(plan.params.map((p) => p.name).sort(), c.params.slice().sort());
  const size = c.n * plan.fromShape.reduce((a, b) => a * b, 1);
  const x = new Rng(c.x.seed).uniform(size, c.x.lo, c.x.hi);
  const y = Int32Array.from({ length: c.n }, (_, i) => i % c.classes);
  const lr = { head: s.lr_head, backbone: plan.blocks.map(() => s.lr_backbone) };
  const k = new Map(c.params.map((p, i) => [p, i]));
  // With batch statistics a β that only feeds 1×1 Convs followed by batch-statistics BNs (MobileNetV2's
  // projection BNs, through the residual stream) shifts values that the next BN subtracts again: its
  // gradient is exactly 0 (PyTorch float64: ~1e-16). Float32 leaves cancellation noise there, which
  // Adam rescales to a full-size step (PyTorch in float32 does the same), so those are checked to be
  // noise-sized and their updates are not compared.
  const top = Math.max(...Object.values(c.grads).map((g) => g.norm));
  const zero = new Set(c.params.filter((p) => c.grads[p].norm <= 1e-9 * top));
  if (batchNorm === 'frozen') assert.equal(zero.size, 0);
  for (const opt of ['sgd', 'adamw'] as const) {
    const opts: TrainGraphOptions = { optimizer: opt, momentum: s.momentum, weightDecay: opt === 'sgd' ? s.sgd_wd : s.adamw_wd, labelSmoothing: s.label_smoothing, outputGradients: opt === 'sgd', batchNorm, ...(batchNorm === 'batch' ? { eps: s.adamw_eps_batch_bn } : {}), ...(nchwc ? { nchwc } : {}) };
    const train = buildTrainingModel(model, plan, opts);
    const buffers = trainingBuffers(train);
    const refBuffers = Object.keys(c[opt].buffers ?? {});
    assert.deepEqual(buffers.map((b) => b.name).sort(), refBuffers.slice().sort(), 'the running statistics PyTorch updates');
    const sess = await TrainingSession.start(model, train, plan, s.head_seed, { threads: 1, device: 'cpu' });
    const init = await sess.weights();
    try {
      for (let step = 0; step < s.steps; step++) {
        const r = await sess.step(x, y, c.n, lr);
        assert.ok(Math.abs(r.loss - c[opt].losses[step]) <= TOL * c[opt].losses[step], `${opt} step ${step + 1}: loss ${r.loss} vs PyTorch ${c[opt].losses[step]}`);
        if (step === 0 && r.gradients) {
          assert.ok(Math.abs(r.loss - c.loss) <= TOL * c.loss);
          for (const [name, g] of r.gradients) {
            if (!zero.has(name)) check(`grad ${name}`, g, c.grads[name], k.get(name)!);
            else assert.ok(Math.hypot(...g) <= 1e-5 * top, `grad ${name}: ${Math.hypot(...g)}, PyTorch's is 0`);
          }
        }
      }
      const after = await sess.weights();
      for (const [name, w] of after) {
        if (refBuffers.includes(name)) {
          const big = w.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
          check(`${opt} running statistic ${name}`, w, c[opt].buffers![name], 100 + refBuffers.indexOf(name), big * 2 ** -23);
          continue;
        }
        if (zero.has(name)) continue;
        const d = new Float32Array(w.length);
        const w0 = init.get(name)!;
        let big = 0;
        for (let i = 0; i < w.length; i++) {
          d[i] = w[i] - w0[i];
          big = Math.max(big, Math.abs(w0[i]), Math.abs(w[i]));
        }
        check(`${opt} update of ${name}`, d, c[opt].deltas[name], k.get(name)!, big * 2 ** -23);
      }
    } finally {
      await sess.close();
    }
  }
}

test('fine-tune graph matches PyTorch: built-in MobileNetV2 top from block_13 (gradients, SGD, AdamW)', async () => {
  const { model } = await readOnnxFile(await builtinOnnxPath('mobilenet_v2'));
  await runCase(model, REF.cases.mobilenet_v2);
});

test('fine-tune graph on NCHWc kernels, its fixed batch padded by 3 rows, matches PyTorch: MobileNetV2 top from block_13', async (t) => {
  const block = await nchwcBlock();
  if (!block) return t.skip('this onnxruntime build has no NCHWc kernels (fine-tuning uses plain Conv ops here)');
  const { model } = await readOnnxFile(await builtinOnnxPath('mobilenet_v2'));
  const c = REF.cases.mobilenet_v2;
  await runCase(model, c, { block, batch: c.n + 3 });
});

test('fine-tune graph matches PyTorch: ResNet-18 layer4 (narrowed) exported by torch.onnx, from the input', async () => {
  const { model } = await readOnnxFile(path.join(FIX, 'resnet18_layer4_small.onnx'));
  const plan = planFinetune(model, { from: 'input', nClasses: 4 });
  assert.deepEqual(plan.blocks, ['/layer4/layer4.0', '/layer4/layer4.1']);
  await runCase(model, REF.cases.resnet18_layer4);
});

test('with batch-statistics BN (PyTorch train mode) the graph matches PyTorch: MobileNetV2 top from block_13, plain and on NCHWc with 3 padding rows', async () => {
  const { model } = await readOnnxFile(await builtinOnnxPath('mobilenet_v2'));
  const c = REF.cases.mobilenet_v2_batch_bn;
  await runCase(model, c, undefined, 'batch');
  const block = await nchwcBlock();
  if (block) await runCase(model, c, { block, batch: c.n + 3 }, 'batch');
});

test('with batch-statistics BN the graph matches PyTorch: ResNet-18 layer4 (narrowed), from the input', async () => {
  const { model } = await readOnnxFile(path.join(FIX, 'resnet18_layer4_small.onnx'));
  await runCase(model, REF.cases.resnet18_layer4_batch_bn, undefined, 'batch');
});
