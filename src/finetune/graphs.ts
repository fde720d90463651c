/**
 * The three models built from a plan: the training step (forward, loss, backward, optimizer update
 * in one graph; weights and optimizer state in, updated ones out), the evaluation forward with the
 * weights as inputs, and the stand-alone inference model with the weights baked in.
 */
import type { ModelProto, TensorProto } from '../onnx/proto.js';
import { DataType } from '../onnx/proto.js';
import { floatTensor, makeModel, valueInfo } from '../onnx/builder.js';
import { XferError } from '../errors.js';
import { Lowering, type BatchStatsOptions, type NchwcOptions } from './lower.js';
import { NCHWC_DOMAIN } from './emit.js';
import { HEAD_BIAS, HEAD_WEIGHT, partOf, type FinetunePlan, type ParamInfo } from './plan.js';

export interface TrainGraphOptions {
  optimizer: 'sgd' | 'adamw';
  momentum: number;
  weightDecay: number;
  labelSmoothing: number;
  /** AdamW betas and epsilon (PyTorch defaults 0.9, 0.999, 1e-8). */
  beta1?: number;
  beta2?: number;
  eps?: number;
  /** Also output every parameter's gradient as `<name>@grad` (tests). */
  outputGradients?: boolean;
  /**
   * CPU only: depthwise convolutions on ORT's NCHWc kernels (nchwcBlock() gives the block). The
   * graph then takes exactly `batch` rows; TrainingSession pads a smaller batch with rows of weight 0.
   */
  nchwc?: NchwcOptions;
  /**
   * 'frozen' (default): every BatchNormalization keeps the source's running statistics, folded into
   * its Conv. 'batch': those of trained blocks normalise by batch statistics and update their
   * running statistics with `bnMomentum` (PyTorch's train mode; default momentum 0.1).
   */
  batchNorm?: 'frozen' | 'batch';
  bnMomentum?: number;
}

/** Running statistics a training graph reads and updates (batchNorm 'batch'), from its metadata. */
export function trainingBuffers(training: ModelProto): { name: string; shape: number[] }[] {
  const meta = (training.metadataProps ?? []).find((e) => e.key === 'xfer.finetune');
  return meta ? ((JSON.parse(meta.value) as { buffers?: { name: string; shape: number[] }[] }).buffers ?? []) : [];
}

/** Names shared by the graphs and TrainingSession. */
export const IO = {
  x: 'x',
  target: 'target',
  invN: 'inv_n',
  loss: 'loss',
  logits: 'logits',
  probabilities: 'probabilities',
  next: (t: string): string => `${t}@next`,
  grad: (p: string): string => `${p}@grad`,
  /** Optimizer state tensors of a parameter. */
  state: (p: string, opt: 'sgd' | 'adamw', momentum: number): string[] => (opt === 'adamw' ? [`${p}#m`, `${p}#v`] : momentum !== 0 ? [`${p}#mom`] : []),
  /** Per-group hyper-parameter inputs (group = block index, or 'head'). */
  lr: (g: string): string => `lr:${g}`,
  decay: (g: string): string => `decay:${g}`,
  bc2: 'sqrt_bc2',
} as const;

export const groupOf = (p: ParamInfo): string => (p.group === 'head' ? 'head' : String(p.block));

function opsetOf(model: ModelProto): number {
  const v = model.opsetImport.find((o) => !o.domain || o.domain === 'ai.onnx')?.version ?? 17;
  return Math.max(17, Number(v));
}

function finish(model: ModelProto, lw: Lowering, inputs: ReturnType<typeof valueInfo>[], outputs: ReturnType<typeof valueInfo>[], name: string, initializers: TensorProto[] = []): ModelProto {
  const m = makeModel({ name, node: lw.em.nodes, initializer: [...lw.em.inits, ...initializers], input: inputs, output: outputs, valueInfo: [] }, { opset: opsetOf(model) });
  if (lw.em.nodes.some((n) => n.domain === NCHWC_DOMAIN)) m.opsetImport.push({ domain: NCHWC_DOMAIN, version: 1 });
  return m;
}

/** Forward of the part and the classifier; returns the logits tensor name. */
function forward(lw: Lowering, plan: FinetunePlan, input: string): { logits: string; feats: string } {
  const em = lw.em;
  if (input !== plan.from) em.op('Identity', [input], {}, '', plan.from);
  lw.forward();
  const feats = plan.toShape.length > 1 ? em.op('Reshape', [plan.to, em.i64([0, plan.featureDim])], {}, 'features') : plan.to;
  const logits = em.op('Gemm', [feats, HEAD_WEIGHT, HEAD_BIAS], { transB: 1 }, IO.logits, IO.logits);
  return { logits, feats };
}

/** The names the training graph gives its own tensors must not be tensors of the model's part. */
function refuseNameClashes(part: ReturnType<typeof partOf>, plan: FinetunePlan): void {
  const own = new Set<string>([IO.target, IO.invN, IO.loss, IO.logits, IO.probabilities, IO.bc2, HEAD_WEIGHT, HEAD_BIAS]);
  if (plan.from !== IO.x) own.add(IO.x);
  for (const n of part.nodes) {
    for (const t of [...n.input, ...n.output]) {
      if (t && (own.has(t) || /^(lr|decay):|@next$|@grad$|#(m|v|mom)$/.test(t))) {
        throw new XferError(`fine-tune: the model has a tensor named "${t}" (node ${n.name || n.output[0]}), a name the training graph uses for its own tensors`, {
          hint: 'rename that tensor in the ONNX file (e.g. with onnx.helper in Python) and extract again',
        });
      }
    }
  }
}

function activationsIn(plan: FinetunePlan, name: string): ReturnType<typeof valueInfo> {
  return valueInfo(name, DataType.FLOAT, ['N', ...plan.fromShape]);
}

function checkOptions(opts: TrainGraphOptions): void {
  const bad = (flag: string, v: unknown, want: string): never => {
    throw new XferError(`${flag}: expected ${want}, got ${String(v)}`);
  };
  if (opts.optimizer !== 'sgd' && opts.optimizer !== 'adamw') bad('--optimizer', opts.optimizer, 'sgd or adamw');
  if (!(opts.momentum >= 0 && opts.momentum < 1)) bad('--momentum', opts.momentum, 'a number in [0, 1)');
  if (!(opts.weightDecay >= 0) || !Number.isFinite(opts.weightDecay)) bad('--weight-decay', opts.weightDecay, 'a number ≥ 0');
  if (!(opts.labelSmoothing >= 0 && opts.labelSmoothing < 1)) bad('--label-smoothing', opts.labelSmoothing, 'a number in [0, 1)');
  if (opts.batchNorm !== undefined && opts.batchNorm !== 'frozen' && opts.batchNorm !== 'batch') bad('--batch-norm', opts.batchNorm, 'frozen or batch');
  if (opts.bnMomentum !== undefined && !(opts.bnMomentum > 0 && opts.bnMomentum <= 1)) bad('--bn-momentum', opts.bnMomentum, 'a number in (0, 1]');
}

/**
 * The training step. Inputs: `x` [N, ...fromShape], `target` [N, K] (smoothed one-hot rows),
 * `inv_n` [N, 1] (each row's weight in the mean loss: 1/n, 0 for padding rows), per-group `lr:<g>` (SGD: the rate; AdamW: rate / (1 − β1^t)), AdamW's
 * `decay:<g>` (1 − rate·weight decay) and `sqrt_bc2` (√(1 − β2^t)), every parameter and its
 * optimizer state. Outputs: `loss`, then `<name>@next` for every parameter and state tensor.
 */
export function buildTrainingModel(model: ModelProto, plan: FinetunePlan, opts: TrainGraphOptions): ModelProto {
  checkOptions(opts);
  const part = partOf(model, plan);
  refuseNameClashes(part, plan);
  const trainable = new Set(plan.params.map((p) => p.name));
  if (opts.nchwc && !(Number.isInteger(opts.nchwc.batch) && opts.nchwc.batch > 0 && opts.nchwc.block > 1)) throw new XferError(`fine-tune: NCHWc options ${JSON.stringify(opts.nchwc)}`);
  const stats: BatchStatsOptions | undefined = opts.batchNorm === 'batch' ? { rowWeights: IO.invN, momentum: opts.bnMomentum ?? 0.1, next: IO.next } : undefined;
  const lw = new Lowering(part, trainable, opts.nchwc, stats);
  const em = lw.em;
  const { logits, feats } = forward(lw, plan, IO.x);
  // Softmax cross-entropy; the label smoothing is in the target rows, and `inv_n` weighs each row
  // (1/n, or 0 for the rows that pad a short batch to a fixed-batch graph's size).
  const logp = em.op('LogSoftmax', [logits], { axis: 1 }, 'logp');
  const loss = em.op('Neg', [em.op('ReduceSum', [em.op('Mul', [em.op('Mul', [IO.target, logp]), IO.invN])], { keepdims: 0 })], {}, IO.loss, IO.loss);
  const dlogits = em.op('Mul', [em.op('Sub', [em.op('Exp', [logp]), IO.target]), IO.invN], {}, 'd/logits');
  lw.paramGrads.set(HEAD_WEIGHT, em.op('Gemm', [dlogits, feats], { transA: 1 }, `d/${HEAD_WEIGHT}`));
  lw.paramGrads.set(HEAD_BIAS, em.op('ReduceSum', [dlogits, em.i64([0])], { keepdims: 0 }, `d/${HEAD_BIAS}`));
  if (lw.needsGrad(plan.to)) {
    const df = em.op('MatMul', [dlogits, HEAD_WEIGHT], {}, 'd/features');
    lw.seed(plan.to, plan.toShape.length > 1 ? em.op('Reshape', [df, em.i64([0, ...plan.toShape])]) : df);
    lw.backward();
  }
  const inputs = [activationsIn(plan, IO.x), valueInfo(IO.target, DataType.FLOAT, ['N', plan.nClasses]), valueInfo(IO.invN, DataType.FLOAT, ['N', 1])];
  const outputs = [valueInfo(loss, DataType.FLOAT, [])];
  const groups = [...new Set(plan.params.map(groupOf))];
  for (const g of groups) {
    inputs.push(valueInfo(IO.lr(g), DataType.FLOAT, []));
    if (opts.optimizer === 'adamw' && opts.weightDecay !== 0) inputs.push(valueInfo(IO.decay(g), DataType.FLOAT, []));
  }
  if (opts.optimizer === 'adamw') inputs.push(valueInfo(IO.bc2, DataType.FLOAT, []));
  for (const b of lw.buffers) {
    inputs.push(valueInfo(b.name, DataType.FLOAT, b.shape));
    outputs.push(valueInfo(IO.next(b.name), DataType.FLOAT, b.shape));
  }
  const wd = opts.weightDecay;
  const b1 = opts.beta1 ?? 0.9;
  const b2 = opts.beta2 ?? 0.999;
  const eps = opts.eps ?? 1e-8;
  for (const p of plan.params) {
    const g = lw.paramGrads.get(p.name);
    if (!g) throw new Error(`fine-tune: no gradient reached ${p.name}`);
    inputs.push(valueInfo(p.name, DataType.FLOAT, p.shape));
    const state = IO.state(p.name, opts.optimizer, opts.momentum);
    for (const s of state) inputs.push(valueInfo(s, DataType.FLOAT, p.shape));
    const lr = IO.lr(groupOf(p));
    if (opts.outputGradients) outputs.push(valueInfo(em.op('Identity', [g], {}, '', IO.grad(p.name)), DataType.FLOAT, p.shape));
    const declare = (t: string): string => {
      outputs.push(valueInfo(IO.next(t), DataType.FLOAT, p.shape));
      return IO.next(t);
    };
    // The update runs on flat views: ORT broadcasts a scalar over a [O, I, 1, 1] kernel about 100×
    // slower than over the same values as a vector. `out` writes an updated tensor to its output
    // (the op itself, or a Reshape — an alias — of it; an Identity would be a copy) and returns the
    // flat value for the ops after it.
    const many = p.shape.length > 1;
    const flat = (t: string): string => (many ? em.op('Reshape', [t, em.i64([-1])]) : t);
    const out = (op: string, ins: string[], t: string): string => {
      if (!many) return em.op(op, ins, {}, '', declare(t));
      const r = em.op(op, ins);
      em.op('Reshape', [r, em.i64(p.shape)], {}, '', declare(t));
      return r;
    };
    const P = flat(p.name);
    const G = flat(g);
    const S = state.map(flat);
    if (opts.optimizer === 'sgd') {
      // PyTorch SGD: g += wd·p; buf = μ·buf + g; p -= lr·buf.
      const gw = wd !== 0 ? em.op('Add', [G, em.op('Mul', [P, em.f32([wd])])]) : G;
      const buf = opts.momentum !== 0 ? out('Add', [em.op('Mul', [S[0], em.f32([opts.momentum])]), gw], state[0]) : gw;
      out('Sub', [P, em.op('Mul', [buf, lr])], p.name);
    } else {
      // PyTorch AdamW: p *= 1 − lr·wd; m, v moments; p −= lr/(1−β1^t) · m / (√v/√(1−β2^t) + ε).
      const p1 = wd !== 0 ? em.op('Mul', [P, IO.decay(groupOf(p))]) : P;
      const m = out('Add', [em.op('Mul', [S[0], em.f32([b1])]), em.op('Mul', [G, em.f32([1 - b1])])], state[0]);
      const v = out('Add', [em.op('Mul', [S[1], em.f32([b2])]), em.op('Mul', [em.op('Mul', [G, G]), em.f32([1 - b2])])], state[1]);
      const denom = em.op('Add', [em.op('Div', [em.op('Sqrt', [v]), IO.bc2]), em.f32([eps])]);
      out('Sub', [p1, em.op('Mul', [em.op('Div', [m, denom]), lr])], p.name);
    }
  }
  const m = finish(model, lw, inputs, outputs, 'xfer-finetune-train');
  const kind = { optimizer: opts.optimizer, decay: opts.optimizer === 'adamw' && wd !== 0, beta1: b1, beta2: b2, weightDecay: wd, labelSmoothing: opts.labelSmoothing, batch: opts.nchwc?.batch ?? null, buffers: lw.buffers };
  m.metadataProps = [{ key: 'xfer.finetune', value: JSON.stringify(kind) }];
  return m;
}

/** The forward half of a training graph, `x` and the weights → `logits` (evaluation during training). */
export function evalModelOf(training: ModelProto, plan: FinetunePlan): ModelProto {
  const g = training.graph;
  const producer = new Map(g.node.flatMap((n) => n.output.map((o) => [o, n] as const)));
  const keep = new Set<(typeof g.node)[number]>();
  const used = new Set<string>();
  const stack = [IO.logits as string];
  while (stack.length > 0) {
    const t = stack.pop()!;
    if (used.has(t)) continue;
    used.add(t);
    const n = producer.get(t);
    if (n && !keep.has(n)) {
      keep.add(n);
      stack.push(...n.input.filter((i) => i));
    }
  }
  const inputs = [activationsIn(plan, IO.x), ...plan.params.map((p) => valueInfo(p.name, DataType.FLOAT, p.shape))];
  const graph = { name: 'xfer-finetune-eval', node: g.node.filter((n) => keep.has(n)), initializer: g.initializer.filter((t) => used.has(t.name!)), input: inputs, output: [valueInfo(IO.logits, DataType.FLOAT, ['N', plan.nClasses])], valueInfo: [] };
  return { ...training, graph, metadataProps: [] };
}

/**
 * Evaluation while training with batch statistics: `x`, the weights and the running statistics
 * (inputs, as the training graph updates them) → `logits`.
 */
export function buildEvalModel(model: ModelProto, plan: FinetunePlan, buffers: { name: string; shape: number[] }[]): ModelProto {
  const part = partOf(model, plan);
  const lw = new Lowering(part, new Set([...plan.params.map((p) => p.name), ...buffers.map((b) => b.name)]));
  const { logits } = forward(lw, plan, IO.x);
  const inputs = [activationsIn(plan, IO.x), ...plan.params.map((p) => valueInfo(p.name, DataType.FLOAT, p.shape)), ...buffers.map((b) => valueInfo(b.name, DataType.FLOAT, b.shape))];
  return finish(model, lw, inputs, [valueInfo(logits, DataType.FLOAT, ['N', plan.nClasses])], 'xfer-finetune-eval');
}

/**
 * The fine-tuned part as a stand-alone model: input named like `plan.from` [N, ...fromShape],
 * outputs `logits` and `probabilities` [N, K], the weights baked in. Entries of `weights` that are
 * not parameters replace the model's constants of that name (running statistics trained with
 * batch statistics).
 */
export function buildInferenceModel(model: ModelProto, plan: FinetunePlan, weights: Map<string, Float32Array>): ModelProto {
  const part = partOf(model, plan);
  const isParam = new Set(plan.params.map((p) => p.name));
  const consts = new Map(part.consts);
  for (const [k, v] of weights) {
    if (isParam.has(k)) continue;
    const c = consts.get(k);
    const dims = (c?.dims ?? []).map(Number);
    if (!c || dims.reduce((a, b) => a * b, 1) !== v.length) throw new XferError(`fine-tuned weights: ${k} is ${c ? `${v.length} values for a constant of shape [${dims}]` : 'not a constant of the model'}`, { hint: 'the weights do not belong to this plan; train again' });
    consts.set(k, floatTensor(k, dims, v));
  }
  part.consts = consts;
  const lw = new Lowering(part, new Set(plan.params.map((p) => p.name)));
  const { logits } = forward(lw, plan, plan.from);
  lw.em.op('Softmax', [logits], { axis: 1 }, '', IO.probabilities);
  const inits = plan.params.map((p) => {
    const w = weights.get(p.name);
    const n = p.shape.reduce((a, b) => a * b, 1);
    if (!w || w.length !== n) throw new XferError(`fine-tuned weights: ${p.name} is ${w ? `${w.length} values` : 'missing'}, expected [${p.shape}]`, { hint: 'the weights do not belong to this plan; train again' });
    return floatTensor(p.name, p.shape, w);
  });
  const outs = [valueInfo(logits, DataType.FLOAT, ['N', plan.nClasses]), valueInfo(IO.probabilities, DataType.FLOAT, ['N', plan.nClasses])];
  return finish(model, lw, [activationsIn(plan, plan.from)], outs, 'xfer-finetune', inits);
}
