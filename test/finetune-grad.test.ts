/**
 * Finite-difference checks of the training graph's gradients on small graphs covering every op the
 * backward pass supports, plus the plan's checks, the inference model and checkpoint round trips.
 * The finite differences come from a float64 interpreter of the original ops (finetune-f64.ts),
 * along one random direction per parameter; the float32 graph must agree to ~1e-4.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import ort from '../src/model/ort.js';
import { serializeModel } from '../src/onnx/io.js';
import { logits64 } from './finetune-f64.js';
import { emptyGraph, floatTensor, int64Tensor, makeModel, node, valueInfo } from '../src/onnx/builder.js';
import { DataType, type ModelProto, type NodeProto, type TensorProto } from '../src/onnx/proto.js';
import { XferError } from '../src/errors.js';
import { emaDecay } from '../src/finetune/fit.js';
import {
  planFinetune, buildTrainingModel, buildInferenceModel, trainingBuffers, initialWeights, nchwcBlock, TrainingSession, Rng, type FinetunePlan,
} from '../src/finetune/index.js';

const N = 2;
const C = 4;
const HW = 6;
const K = 3;
const SMOOTH = 0.1;

/** A model: input `in` [N, 4, 6, 6] → `nodes` → (GlobalAveragePool → Flatten if 4-D) → Gemm to 5 outputs (the old classifier). */
function model(nodes: NodeProto[], inits: TensorProto[], last: string, lastIs4d = true): ModelProto {
  const g = emptyGraph('t');
  g.input.push(valueInfo('in', DataType.FLOAT, ['N', C, HW, HW]));
  g.node.push(...nodes);
  let feat = last;
  if (lastIs4d) {
    g.node.push(node('GlobalAveragePool', [last], ['gap']), node('Flatten', ['gap'], ['feat'], { axis: 1 }));
    feat = 'feat';
  }
  g.node.push(node('Gemm', [feat, 'old.w'], ['old'], { transB: 1 }));
  g.output.push(valueInfo('old', DataType.FLOAT, ['N', 5]));
  g.initializer.push(...inits);
  return makeModel(g, { opset: 17 });
}

let seed = 100;
const w = (name: string, dims: number[], lo = -0.5, hi = 0.5): TensorProto => floatTensor(name, dims, new Rng(seed++).uniform(dims.reduce((a, b) => a * b, 1), lo, hi));
const bn = (p: string, c: number): TensorProto[] => [w(`${p}.g`, [c], 0.5, 1.5), w(`${p}.b`, [c], -0.2, 0.2), w(`${p}.m`, [c], -0.2, 0.2), w(`${p}.v`, [c], 0.5, 1.5)];
const bnNode = (x: string, p: string, out: string): NodeProto => node('BatchNormalization', [x, `${p}.g`, `${p}.b`, `${p}.m`, `${p}.v`], [out], { epsilon: 1e-3 });
const old = (f: number): TensorProto => w('old.w', [5, f]);

interface Case { name: string; model: ModelProto; freeze?: number }

function cases(): Case[] {
  const out: Case[] = [];
  out.push({ name: 'Conv 3×3 + BatchNormalization + Relu', model: model([node('Conv', ['in', 'c1'], ['z1'], { kernel_shape: [3, 3], pads: [1, 1, 1, 1] }), bnNode('z1', 'bn1', 'b1'), node('Relu', ['b1'], ['r1'])], [w('c1', [6, C, 3, 3]), ...bn('bn1', 6), old(6)], 'r1') });
  out.push({
    name: 'Conv stride 2 with bias + Clip (bounds as inputs)',
    model: model([node('Conv', ['in', 'c0'], ['z0'], { kernel_shape: [1, 1] }), node('Relu', ['z0'], ['r0']), node('Conv', ['r0', 'c1', 'cb'], ['z1'], { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1] }), node('Clip', ['z1', 'lo', 'hi'], ['r1'])],
      [w('c0', [C, C, 1, 1]), w('c1', [6, C, 3, 3]), w('cb', [6]), floatTensor('lo', [], [-0.3]), floatTensor('hi', [], [0.3]), old(6)], 'r1'),
  });
  out.push({
    name: 'depthwise 3×3 stride 1 + pointwise, BN folded',
    model: model([node('Conv', ['in', 'c0'], ['z0'], { kernel_shape: [1, 1] }), node('Relu', ['z0'], ['r0']), node('Conv', ['r0', 'dw'], ['z1'], { kernel_shape: [3, 3], pads: [1, 1, 1, 1], group: C }), bnNode('z1', 'bn1', 'b1'), node('Clip', ['b1', 'lo', 'hi'], ['r1']), node('Conv', ['r1', 'pw'], ['z2'], { kernel_shape: [1, 1] }), bnNode('z2', 'bn2', 'b2')],
      [w('c0', [C, C, 1, 1]), w('dw', [C, 1, 3, 3]), ...bn('bn1', C), floatTensor('lo', [], [0]), floatTensor('hi', [], [6]), w('pw', [8, C, 1, 1]), ...bn('bn2', 8), old(8)], 'b2'),
  });
  out.push({
    name: 'Keras-style Pad + depthwise stride 2 (ConvTranspose with groups)',
    model: model([node('Conv', ['in', 'c0'], ['z0'], { kernel_shape: [1, 1] }), node('Relu', ['z0'], ['r0']), node('Pad', ['r0', 'pads'], ['p0'], { mode: 'constant' }), node('Conv', ['p0', 'dw'], ['z1'], { kernel_shape: [3, 3], strides: [2, 2], group: C }), bnNode('z1', 'bn1', 'b1'), node('Relu', ['b1'], ['r1']), node('Conv', ['r1', 'pw'], ['z2'], { kernel_shape: [1, 1] })],
      [w('c0', [C, C, 1, 1]), int64Tensor('pads', [8], [0, 0, 0, 0, 0, 0, 1, 1]), w('dw', [C, 1, 3, 3]), ...bn('bn1', C), w('pw', [6, C, 1, 1]), old(6)], 'z2'),
  });
  out.push({
    name: 'Conv 3×3 stride 2 without padding (output_padding 1) and dilation 2',
    model: model([node('Conv', ['in', 'c0'], ['z0'], { kernel_shape: [3, 3], dilations: [2, 2], pads: [2, 2, 2, 2] }), node('Relu', ['z0'], ['r0']), node('Conv', ['r0', 'c1'], ['z1'], { kernel_shape: [3, 3], strides: [2, 2] }), node('Relu', ['z1'], ['r1'])],
      [w('c0', [C, C, 3, 3]), w('c1', [6, C, 3, 3]), old(6)], 'r1'),
  });
  const residual = model([
    node('Conv', ['in', 'c0'], ['z0'], { kernel_shape: [1, 1] }), node('Relu', ['z0'], ['r0']),
    node('Conv', ['r0', 'c1'], ['z1'], { kernel_shape: [3, 3], pads: [1, 1, 1, 1] }), bnNode('z1', 'bn1', 'b1'), node('Add', ['b1', 'r0'], ['a1']), node('Relu', ['a1'], ['r1']),
    node('Conv', ['r1', 'c2'], ['z2'], { kernel_shape: [3, 3], pads: [1, 1, 1, 1] }), node('Sum', ['z2', 'r1', 'r0'], ['a2']), node('Relu', ['a2'], ['r2']),
  ], [w('c0', [C, C, 1, 1]), w('c1', [C, C, 3, 3]), ...bn('bn1', C), w('c2', [C, C, 3, 3]), old(C)], 'r2');
  out.push({ name: 'residual Add and three-way Sum', model: residual });
  out.push({ name: 'residual, bottom block frozen', model: residual, freeze: 1 });
  out.push({
    name: 'HardSwish, Sigmoid, SiLU (Mul), HardSigmoid',
    model: model([node('Conv', ['in', 'c0'], ['z0'], { kernel_shape: [1, 1] }), node('HardSwish', ['z0'], ['h0']), node('Conv', ['h0', 'c1'], ['z1'], { kernel_shape: [1, 1] }), node('Sigmoid', ['z1'], ['s1']), node('Mul', ['z1', 's1'], ['silu']), node('Conv', ['silu', 'c2'], ['z2'], { kernel_shape: [1, 1] }), node('HardSigmoid', ['z2'], ['hs'], { alpha: 0.3, beta: 0.4 })],
      [w('c0', [C, C, 1, 1], -2, 2), w('c1', [C, C, 1, 1], -1, 1), w('c2', [C, C, 1, 1], -1, 1), old(C)], 'hs'),
  });
  out.push({
    name: 'squeeze-excitation: broadcast Mul, Mul by a constant, Add of a constant',
    model: model([node('Conv', ['in', 'c0'], ['z0'], { kernel_shape: [1, 1] }), node('Relu', ['z0'], ['r0']), node('GlobalAveragePool', ['r0'], ['g0']), node('Conv', ['g0', 'se', 'seb'], ['z1'], { kernel_shape: [1, 1] }), node('Sigmoid', ['z1'], ['s1']), node('Mul', ['r0', 's1'], ['m0']), node('Mul', ['m0', 'k'], ['m1']), node('Add', ['m1', 'kb'], ['m2'])],
      [w('c0', [C, C, 1, 1]), w('se', [C, C, 1, 1]), w('seb', [C]), w('k', [C, 1, 1]), w('kb', [1, C, 1, 1]), old(C)], 'm2'),
  });
  out.push({
    name: 'standalone Pad, global AveragePool, Transpose, Reshape, Dropout',
    model: model([node('Conv', ['in', 'c0'], ['z0'], { kernel_shape: [3, 3], pads: [1, 1, 1, 1] }), node('Relu', ['z0'], ['r0']), node('Pad', ['r0', 'pads'], ['p0'], { mode: 'constant' }), node('AveragePool', ['p0'], ['a0'], { kernel_shape: [8, 8] }), node('Transpose', ['a0'], ['t0'], { perm: [0, 2, 3, 1] }), node('Dropout', ['t0'], ['d0']), node('Reshape', ['d0', 'shape'], ['f0'])],
      [w('c0', [C, C, 3, 3]), int64Tensor('pads', [8], [0, 0, 1, 1, 0, 0, 1, 1]), int64Tensor('shape', [2], [0, -1]), old(C)], 'f0', false),
  });
  out.push({
    name: 'ReduceMean (keepdims 0), Identity, Flatten',
    model: model([node('Conv', ['in', 'c0'], ['z0'], { kernel_shape: [3, 3], pads: [1, 1, 1, 1] }), node('Relu', ['z0'], ['r0']), node('Identity', ['r0'], ['i0']), node('ReduceMean', ['i0'], ['m0'], { axes: [2, 3], keepdims: 1 }), node('Flatten', ['m0'], ['f0'], { axis: 1 })],
      [w('c0', [C, C, 3, 3]), old(C)], 'f0', false),
  });
  return out;
}

function lossOf(logits: Float64Array, y: Int32Array): number {
  let loss = 0;
  for (let i = 0; i < N; i++) {
    const row = Array.from(logits.subarray(i * K, (i + 1) * K), Number);
    const mx = Math.max(...row);
    const lse = mx + Math.log(row.reduce((a, v) => a + Math.exp(v - mx), 0));
    for (let k = 0; k < K; k++) loss -= ((k === y[i] ? 1 - SMOOTH : 0) + SMOOTH / K) * (row[k] - lse);
  }
  return loss / N;
}

/** BatchNormalization nodes (by output) that a 'batch' graph normalises by batch statistics: those whose γ trains. */
function batchBns(m: ModelProto, plan: FinetunePlan): Set<string> {
  const trained = new Set(plan.params.map((p) => p.name));
  return new Set(m.graph.node.filter((n) => n.opType === 'BatchNormalization' && trained.has(n.input[1])).map((n) => n.output[0]));
}

async function checkGradients(c: Case, batchNorm: 'frozen' | 'batch'): Promise<void> {
  const plan = planFinetune(c.model, { from: 'in', nClasses: K, freeze: c.freeze });
  const train = buildTrainingModel(c.model, plan, { optimizer: 'sgd', momentum: 0, weightDecay: 0, labelSmoothing: SMOOTH, outputGradients: true, batchNorm });
  const buffers = trainingBuffers(train);
  const x = new Rng(7).uniform(N * C * HW * HW, -1, 1);
  const y = Int32Array.from({ length: N }, (_, i) => i % K);
  const sess = await TrainingSession.start(c.model, train, plan, 3, { threads: 1, device: 'cpu' });
  const init = await sess.weights();
  const { gradients } = await sess.step(x, y, N, { head: 0, backbone: plan.blocks.map(() => 0) });
  const after = await sess.weights();
  await sess.close();
  assert.ok(gradients);
  assert.deepEqual([...gradients.keys()].sort(), plan.params.map((p) => p.name).sort());
  const bns = batchNorm === 'batch' ? batchBns(c.model, plan) : new Set<string>();
  assert.equal(buffers.length, 2 * bns.size, 'a running mean and variance per batch-statistics BN');
  const x64 = Float64Array.from(x);
  const w64 = new Map([...init].map(([k, v]) => [k, Float64Array.from(v)]));
  const trace = new Map<string, { shape: number[]; data: Float64Array }>();
  const lossAt = (weights: Map<string, Float64Array>, tr?: typeof trace): number => lossOf(logits64(c.model, plan, x64, N, weights, bns, tr), y);
  lossAt(w64, trace);
  // the running statistics moved 10 % of the way to the batch's mean and unbiased variance (PyTorch)
  for (const n of c.model.graph.node.filter((b) => bns.has(b.output[0]))) {
    const z = trace.get(n.input[0])!;
    const ch = z.shape[1];
    const per = z.data.length / ch;
    const hw = per / N;
    const mu = new Float64Array(ch);
    const ss = new Float64Array(ch);
    z.data.forEach((v, i) => (mu[Math.floor(i / hw) % ch] += v / per));
    z.data.forEach((v, i) => (ss[Math.floor(i / hw) % ch] += (v - mu[Math.floor(i / hw) % ch]) ** 2));
    const [rm, rv] = [n.input[3], n.input[4]].map((k) => init.get(k)!);
    for (let q = 0; q < ch; q++) {
      const wantM = 0.9 * rm[q] + 0.1 * mu[q];
      const wantV = 0.9 * rv[q] + 0.1 * (ss[q] / (per - 1));
      assert.ok(Math.abs(after.get(n.input[3])![q] - wantM) <= 1e-5, `${n.input[3]}[${q}]: ${after.get(n.input[3])![q]} vs ${wantM}`);
      assert.ok(Math.abs(after.get(n.input[4])![q] - wantV) <= 1e-5 * (1 + wantV), `${n.input[4]}[${q}]: ${after.get(n.input[4])![q]} vs ${wantV}`);
    }
  }
  let k = 0;
  for (const p of plan.params) {
    const g = gradients.get(p.name)!;
    const v = new Rng(500 + k++).uniform(g.length, -1, 1);
    const h = 1e-6;
    const at = (sign: number): number => {
      const wp = Float64Array.from(w64.get(p.name)!);
      for (let i = 0; i < wp.length; i++) wp[i] += sign * h * v[i];
      return lossAt(new Map([...w64, [p.name, wp]]));
    };
    const fd = (at(1) - at(-1)) / (2 * h);
    let an = 0;
    let gn = 0;
    for (let i = 0; i < g.length; i++) {
      an += g[i] * v[i];
      gn += g[i] * g[i];
    }
    const tol = 1e-4 * (Math.abs(an) + Math.sqrt(gn)) + 1e-7;
    assert.ok(Math.abs(fd - an) <= tol, `${p.name}: finite difference ${fd}, gradient·v ${an} (|g| ${Math.sqrt(gn)})`);
  }
}

for (const c of cases()) {
  test(`finite differences: ${c.name}`, () => checkGradients(c, 'frozen'));
  const plan = planFinetune(c.model, { from: 'in', nClasses: K, freeze: c.freeze });
  if (batchBns(c.model, plan).size > 0) test(`finite differences, BatchNormalization with batch statistics: ${c.name}`, () => checkGradients(c, 'batch'));
}

test('NCHWc depthwise kernels (stride 1, Keras Pad + stride 2, dilation 2) give the plain graph\'s loss, gradients and running statistics, for a full and a padded batch, with frozen and batch-statistics BN', async (t) => {
  const block = await nchwcBlock();
  if (!block) return t.skip('this onnxruntime build has no NCHWc kernels');
  const D = 2 * block;
  const m = model([
    node('Conv', ['in', 'c0'], ['z0'], { kernel_shape: [1, 1] }), node('Relu', ['z0'], ['r0']),
    node('Conv', ['r0', 'dw1'], ['z1'], { kernel_shape: [3, 3], pads: [1, 1, 1, 1], group: D }), bnNode('z1', 'bn1', 'b1'), node('Clip', ['b1', 'lo', 'hi'], ['r1']),
    node('Pad', ['r1', 'pads'], ['p1'], { mode: 'constant' }), node('Conv', ['p1', 'dw2'], ['z2'], { kernel_shape: [3, 3], strides: [2, 2], group: D }), node('Relu', ['z2'], ['r2']),
    node('Conv', ['r2', 'dw3'], ['z3'], { kernel_shape: [3, 3], pads: [2, 2, 2, 2], dilations: [2, 2], group: D }), node('Relu', ['z3'], ['r3']),
    node('Conv', ['r3', 'pw'], ['z4'], { kernel_shape: [1, 1] }),
  ], [w('c0', [D, C, 1, 1]), w('dw1', [D, 1, 3, 3]), ...bn('bn1', D), floatTensor('lo', [], [0]), floatTensor('hi', [], [6]), int64Tensor('pads', [8], [0, 0, 0, 0, 0, 0, 1, 1]),
    w('dw2', [D, 1, 3, 3]), w('dw3', [D, 1, 3, 3]), w('pw', [6, D, 1, 1]), old(6)], 'z4');
  const plan = planFinetune(m, { from: 'in', nClasses: K });
  for (const batchNorm of ['frozen', 'batch'] as const) {
    const opts = { optimizer: 'sgd', momentum: 0, weightDecay: 0, labelSmoothing: SMOOTH, outputGradients: true, batchNorm } as const;
    const blocked = buildTrainingModel(m, plan, { ...opts, nchwc: { block, batch: 3 } });
    assert.equal(blocked.graph.node.filter((n) => n.domain === 'com.microsoft.nchwc' && n.opType === 'Conv').length, 3 + 3 + 1, 'forward and weight-gradient Convs on NCHWc, and the input gradient of the stride-1 undilated one');
    const buffers = trainingBuffers(blocked);
    assert.equal(buffers.length, batchNorm === 'batch' ? 2 : 0);
    const plain = await TrainingSession.start(m, buildTrainingModel(m, plan, opts), plan, 3, { threads: 1, device: 'cpu' });
    const fast = await TrainingSession.start(m, blocked, plan, 3, { threads: 1, device: 'cpu' });
    const zero = { head: 0, backbone: plan.blocks.map(() => 0) };
    try {
      for (const n of [3, 2]) {
        const x = new Rng(11 + n).uniform(n * C * HW * HW, -1, 1);
        const y = Int32Array.from({ length: n }, (_, i) => i % K);
        const a = await plain.step(x, y, n, zero);
        const b = await fast.step(x, y, n, zero);
        assert.ok(Math.abs(a.loss - b.loss) <= 1e-5 * Math.abs(a.loss), `n=${n}: loss ${b.loss} vs ${a.loss}`);
        for (const [name, ga] of a.gradients!) {
          const gb = b.gradients!.get(name)!;
          const scale = Math.max(...ga.map(Math.abs));
          ga.forEach((v, i) => assert.ok(Math.abs(v - gb[i]) <= 1e-5 * scale + 1e-9, `${batchNorm} n=${n} ${name}[${i}]: ${gb[i]} vs ${v}`));
        }
        // padding rows are not in the batch statistics
        const [wa, wb] = [await plain.weights(), await fast.weights()];
        for (const b of buffers) wa.get(b.name)!.forEach((v, i) => assert.ok(Math.abs(v - wb.get(b.name)![i]) <= 1e-5 * (1 + Math.abs(v)), `n=${n} ${b.name}[${i}]: ${wb.get(b.name)![i]} vs ${v}`));
      }
      await assert.rejects(fast.step(new Float32Array(4 * C * HW * HW), new Int32Array(4), 4, zero), /4 samples for a training graph built for batches of 3/);
    } finally {
      await plain.close();
      await fast.close();
    }
  }
});

test('a mixup step: loss and gradients are λ·(those towards y) + (1 − λ)·(those towards the partner labels)', async () => {
  const m = cases()[0].model;
  const plan = planFinetune(m, { from: 'in', nClasses: K });
  const s = await TrainingSession.open(buildTrainingModel(m, plan, { optimizer: 'sgd', momentum: 0, weightDecay: 0, labelSmoothing: SMOOTH, outputGradients: true }), plan, initialWeights(m, plan, 4), { threads: 1, device: 'cpu' });
  const zero = { head: 0, backbone: plan.blocks.map(() => 0) }; // weights stay, so the three steps see the same ones
  try {
    const x = new Rng(21).uniform(N * C * HW * HW, -1, 1);
    const y = Int32Array.from([0, 2]);
    const partner = Int32Array.from([1, 0]);
    const lam = 0.3;
    const a = await s.step(x, y, N, zero);
    const b = await s.step(x, partner, N, zero);
    const mixed = await s.step(x, y, N, zero, { lam, partner });
    const want = lam * a.loss + (1 - lam) * b.loss;
    assert.ok(Math.abs(mixed.loss - want) <= 1e-5 * Math.abs(want), `loss ${mixed.loss} vs ${want}`);
    for (const [name, ga] of a.gradients!) {
      const gb = b.gradients!.get(name)!;
      const gm = mixed.gradients!.get(name)!;
      const scale = Math.max(...ga.map(Math.abs), ...gb.map(Math.abs));
      gm.forEach((v, i) => assert.ok(Math.abs(v - (lam * ga[i] + (1 - lam) * gb[i])) <= 1e-5 * scale + 1e-9, `${name}[${i}]`));
    }
    await assert.rejects(s.step(x, y, N, zero, { lam: 1.5, partner }), /mixup weight 1.5/);
  } finally {
    await s.close();
  }
});

test('the weights\' moving average: avg ← d·avg + (1 − d)·w after each step, and logits with it are the average\'s', async () => {
  const m = cases()[0].model;
  const plan = planFinetune(m, { from: 'in', nClasses: K });
  const s = await TrainingSession.open(buildTrainingModel(m, plan, { optimizer: 'adamw', momentum: 0.9, weightDecay: 0.01, labelSmoothing: SMOOTH }), plan, initialWeights(m, plan, 5), { threads: 1, device: 'cpu' });
  try {
    const x = new Rng(22).uniform(N * C * HW * HW, -1, 1);
    const y = Int32Array.from([0, 2]);
    const lr = { head: 0.05, backbone: plan.blocks.map(() => 0.02) };
    const avg = await s.weights();
    const want = new Map([...avg].map(([k, v]) => [k, Float64Array.from(v)]));
    for (let t = 1; t <= 4; t++) {
      await s.step(x, y, N, lr);
      const d = emaDecay(0.9, t);
      s.accumulateAverage(avg, d);
      for (const [k, w] of await s.weights()) want.get(k)!.forEach((a, i, arr) => (arr[i] = d * a + (1 - d) * w[i]));
    }
    assert.deepEqual([1, 2, 30, 1000].map((t) => emaDecay(0.9, t)), [2 / 11, 3 / 12, 0.775, 0.9]);
    const now = await s.weights();
    for (const [k, a] of avg) {
      a.forEach((v, i) => assert.ok(Math.abs(v - want.get(k)![i]) <= 1e-6 * (1 + Math.abs(v)), `${k}[${i}]: ${v} vs ${want.get(k)![i]}`));
      assert.ok(a.some((v, i) => Math.abs(v - now.get(k)![i]) > 1e-6), `${k}: the average differs from the last weights`);
    }
    // logits with the average equal a session whose weights are the average
    const viaAvg = await s.logits(x, N, avg);
    const t = await TrainingSession.open(buildTrainingModel(m, plan, { optimizer: 'adamw', momentum: 0.9, weightDecay: 0.01, labelSmoothing: SMOOTH }), plan, avg, { threads: 1, device: 'cpu' });
    try {
      const direct = await t.logits(x, N);
      direct.forEach((v, i) => assert.ok(Math.abs(v - viaAvg[i]) <= 1e-6, `logit ${i}: ${viaAvg[i]} vs ${v}`));
      const cur = await s.logits(x, N);
      assert.ok(cur.some((v, i) => Math.abs(v - viaAvg[i]) > 1e-5), 'the current weights give other logits');
    } finally {
      await t.close();
    }
  } finally {
    await s.close();
  }
});

test('a model tensor named like one of the training graph\'s own (loss) is refused with the node named', () => {
  const m = model([node('Conv', ['in', 'c0'], ['loss'], { kernel_shape: [1, 1] }), node('Relu', ['loss'], ['r0'])], [w('c0', [C, C, 1, 1]), old(C)], 'r0');
  const plan = planFinetune(m, { from: 'in', nClasses: K });
  assert.throws(() => buildTrainingModel(m, plan, { optimizer: 'sgd', momentum: 0.9, weightDecay: 0, labelSmoothing: 0 }), (e: unknown) => e instanceof XferError && /tensor named "loss" \(node loss\)/.test(e.message));
});

test('plan: frozen blocks are not trained, blocks follow residual units', () => {
  const m = cases().find((c) => c.freeze === 1)!.model;
  const all = planFinetune(m, { from: 'in', nClasses: K });
  // Two residual units, named after their Add/Sum: up to the first Add's Relu, then up to the Sum's Relu (pooling joins it).
  assert.deepEqual(all.blocks, ['a1', 'a2']);
  assert.deepEqual(all.params.map((p) => `${p.name}:${p.block}`), ['c0:0', 'c1:0', 'bn1.g:0', 'bn1.b:0', 'c2:1', 'head.weight:2', 'head.bias:2']);
  const frozen = planFinetune(m, { from: 'in', nClasses: K, freeze: 1 });
  assert.deepEqual(frozen.params.map((p) => p.name), ['c2', 'head.weight', 'head.bias']);
  assert.throws(() => planFinetune(m, { from: 'in', nClasses: K, freeze: 9 }), (e: unknown) => e instanceof XferError && /--freeze 9/.test(e.message));
  assert.throws(() => planFinetune(m, { from: 'in', nClasses: 1 }), (e: unknown) => e instanceof XferError && /at least 2 classes/.test(e.message));
});

test('plan: a tensor inside a residual branch, an unknown tensor and an unsupported op are refused before training', () => {
  const m = cases().find((c) => c.freeze === 1)!.model;
  assert.throws(() => planFinetune(m, { from: 'z1', nClasses: K }), (e: unknown) => e instanceof XferError && /not on a single path/.test(e.message) && /deepest taps .*r2/.test(e.hint ?? ''));
  assert.throws(() => planFinetune(m, { from: 'nope', nClasses: K }), (e: unknown) => e instanceof XferError && /no tensor named nope/.test(e.message));
  const bad = model([node('Conv', ['in', 'c0'], ['z0'], { kernel_shape: [1, 1] }), node('LeakyRelu', ['z0'], ['r0'])], [w('c0', [C, C, 1, 1]), old(C)], 'r0');
  assert.throws(() => planFinetune(bad, { from: 'in', nClasses: K }), (e: unknown) => e instanceof XferError && /unsupported op LeakyRelu node r0/.test(e.message));
  assert.equal(planFinetune(bad, { from: 'r0', nClasses: K }).params.length, 2);
});

test('inference model = evaluation logits; state round trip resumes exactly', async () => {
  const m = cases()[2].model;
  const plan: FinetunePlan = JSON.parse(JSON.stringify(planFinetune(m, { from: 'in', nClasses: K })));
  const train = buildTrainingModel(m, plan, { optimizer: 'adamw', momentum: 0, weightDecay: 0.01, labelSmoothing: 0 });
  const x = new Rng(9).uniform(N * C * HW * HW, -1, 1);
  const y = Int32Array.from([0, 2]);
  const lr = { head: 0.05, backbone: plan.blocks.map(() => 0.01) };
  const a = await TrainingSession.open(train, plan, initialWeights(m, plan, 1), { threads: 1 });
  await a.step(x, y, N, lr);
  const saved = await a.state();
  const l2 = (await a.step(x, y, N, lr)).loss;
  const logits = await a.logits(x, N);
  const inf = await ort.InferenceSession.create(serializeModel(buildInferenceModel(m, plan, await a.weights())));
  const out = await inf.run({ in: new ort.Tensor('float32', x, [N, C, HW, HW]) });
  const got = out.logits.data as Float32Array;
  for (let i = 0; i < got.length; i++) assert.ok(Math.abs(got[i] - logits[i]) <= 1e-5, `logit ${i}: ${got[i]} vs ${logits[i]}`);
  const p = out.probabilities.data as Float32Array;
  assert.ok(Math.abs(p[0] + p[1] + p[2] - 1) < 1e-6);
  const b = await TrainingSession.open(train, plan, initialWeights(m, plan, 2), { threads: 1 });
  await b.setState(saved);
  assert.equal((await b.step(x, y, N, lr)).loss, l2);
  await assert.rejects(b.step(x, y, N, { head: Number.NaN, backbone: lr.backbone }), /learning rate NaN/);
  await Promise.all([a.close(), b.close(), inf.release()]);
});
