/**
 * Running the training graph: weights and optimizer state stay in ORT tensors, each step's outputs
 * are the next step's inputs (no copies in JS), and a second session evaluates with the current weights.
 */
import ort from '../model/ort.js';
import { openSession } from '../model/session.js';
import type { DeviceSpec } from '../model/device.js';
import type { ModelProto } from '../onnx/proto.js';
import { serializeModel } from '../onnx/io.js';
import { XferError } from '../errors.js';
import { buildEvalModel, evalModelOf, groupOf, IO, trainingBuffers } from './graphs.js';
import { initialWeights } from './init.js';
import type { FinetunePlan } from './plan.js';

export interface LearningRates {
  head: number;
  /** One per block of the plan (entries of frozen blocks are not used). */
  backbone: number[];
}

export interface SessionOptions {
  threads?: number;
  device?: string;
  /** The evaluation model of a graph trained with batch statistics (graphs.ts buildEvalModel); else the training graph's forward half. */
  evalModel?: ModelProto;
}

/** What TrainingSession needs to know of the options the graph was built with, read from the graph itself. */
interface Kind {
  optimizer: 'sgd' | 'adamw';
  decay: boolean;
  beta1: number;
  beta2: number;
  weightDecay: number;
  /** The fixed batch of a graph built with NCHWc kernels (null: any batch). */
  batch?: number | null;
  /** Running statistics the graph updates (batch statistics). */
  buffers?: { name: string; shape: number[] }[];
}

const size = (s: number[]): number => s.reduce((a, b) => a * b, 1);

export class TrainingSession {
  private stepCount = 0;

  private constructor(
    private readonly train: ort.InferenceSession,
    private readonly evalSession: ort.InferenceSession,
    private readonly plan: FinetunePlan,
    private readonly kind: Kind,
    /** Parameters and optimizer state, by input name. */
    private tensors: Map<string, ort.Tensor>,
    private readonly stateNames: string[],
    readonly gradNames: string[],
    private readonly smoothing: number,
    /** Parameters, then running statistics: what weights() returns and the evaluation reads. */
    private readonly weightNames: { name: string; shape: number[] }[],
  ) {}

  static async open(model: ModelProto, plan: FinetunePlan, init: Map<string, Float32Array>, opts: SessionOptions = {}): Promise<TrainingSession> {
    const meta = new Map((model.metadataProps ?? []).map((e) => [e.key, e.value]));
    const kind = JSON.parse(meta.get('xfer.finetune') ?? 'null') as (Kind & { labelSmoothing: number }) | null;
    if (!kind) throw new XferError('TrainingSession.open: the model is not a training graph from buildTrainingModel');
    const inputs = new Set(model.graph.input.map((i) => i.name));
    const tensors = new Map<string, ort.Tensor>();
    const stateNames: string[] = [];
    for (const p of plan.params) {
      const w = init.get(p.name);
      if (!w || w.length !== size(p.shape)) throw new XferError(`fine-tune: initial weight ${p.name} is ${w ? `${w.length} values` : 'missing'}, expected [${p.shape}]`);
      tensors.set(p.name, new ort.Tensor('float32', w.slice(), p.shape));
      for (const s of [`${p.name}#m`, `${p.name}#v`, `${p.name}#mom`]) {
        if (!inputs.has(s)) continue;
        tensors.set(s, new ort.Tensor('float32', new Float32Array(size(p.shape)), p.shape));
        stateNames.push(s);
      }
    }
    const buffers = kind.buffers ?? [];
    for (const b of buffers) {
      const w = init.get(b.name);
      if (!w || w.length !== size(b.shape)) throw new XferError(`fine-tune: initial running statistic ${b.name} is ${w ? `${w.length} values` : 'missing'}, expected [${b.shape}]`);
      tensors.set(b.name, new ort.Tensor('float32', w.slice(), b.shape));
    }
    if (buffers.length && !opts.evalModel) throw new XferError('TrainingSession.open: a graph trained with batch statistics needs its evaluation model (buildEvalModel)');
    const device = { device: (opts.device ?? 'cpu') as DeviceSpec, threads: opts.threads };
    const train = await openSession(serializeModel(model), device);
    const ev = await openSession(serializeModel(opts.evalModel ?? evalModelOf(model, plan)), device);
    const gradNames = model.graph.output.map((o) => o.name).filter((n) => n.endsWith('@grad'));
    return new TrainingSession(train.session, ev.session, plan, kind, tensors, stateNames, gradNames, kind.labelSmoothing, [...plan.params, ...buffers]);
  }

  /**
   * A session on `training` (built from `model` with buildTrainingModel) starting from the model's
   * weights and a new classifier drawn with `seed`; with batch statistics, the running statistics
   * start at the model's and evaluation uses buildEvalModel.
   */
  static async start(model: ModelProto, training: ModelProto, plan: FinetunePlan, seed: number, opts: Omit<SessionOptions, 'evalModel'> = {}): Promise<TrainingSession> {
    const buffers = trainingBuffers(training);
    return TrainingSession.open(training, plan, initialWeights(model, plan, seed, buffers), { ...opts, ...(buffers.length ? { evalModel: buildEvalModel(model, plan, buffers) } : {}) });
  }

  /**
   * One optimizer step on a batch: `x` holds n samples at `from`, `y` their class indices; with
   * `mix` (mixup), row i's target is lam·target(y[i]) + (1 − lam)·target(partner[i]).
   * Returns the batch's mean loss (before the update).
   */
  async step(x: Float32Array, y: Int32Array, n: number, lr: LearningRates, mix?: { partner: Int32Array; lam: number }): Promise<{ loss: number; gradients?: Map<string, Float32Array> }> {
    const { plan, kind } = this;
    const K = plan.nClasses;
    this.checkBatch(x, n);
    if (y.length < n) throw new XferError(`fine-tune step: ${y.length} labels for ${n} samples`);
    // A fixed-batch graph takes a short batch padded with zero rows that weigh 0 in the loss.
    const rows = kind.batch ?? n;
    if (n > rows) throw new XferError(`fine-tune step: ${n} samples for a training graph built for batches of ${rows}`);
    const rowSize = size(plan.fromShape);
    let xs = x.subarray(0, n * rowSize);
    if (rows > n) {
      xs = new Float32Array(rows * rowSize);
      xs.set(x.subarray(0, n * rowSize));
    }
    const invN = new Float32Array(rows).fill(1 / n, 0, n);
    if (lr.backbone.length < plan.blocks.length) throw new XferError(`fine-tune step: ${lr.backbone.length} backbone learning rates for ${plan.blocks.length} blocks`);
    const target = new Float32Array(rows * K);
    const off = this.smoothing / K;
    const lam = mix ? mix.lam : 1;
    if (mix && (!(lam >= 0 && lam <= 1) || mix.partner.length < n)) throw new XferError(`fine-tune step: mixup weight ${lam} with ${mix.partner.length} partner labels for ${n} samples`);
    for (let i = 0; i < n; i++) {
      const c = y[i];
      const c2 = mix ? mix.partner[i] : c;
      for (const l of [c, c2]) if (!(l >= 0 && l < K)) throw new XferError(`fine-tune step: label ${l} outside 0..${K - 1}`);
      target.fill(off, i * K, (i + 1) * K);
      target[i * K + c] += lam * (1 - this.smoothing);
      target[i * K + c2] += (1 - lam) * (1 - this.smoothing);
    }
    const t = ++this.stepCount;
    const scalar = (v: number): ort.Tensor => new ort.Tensor('float32', Float32Array.of(v), []);
    const feeds: Record<string, ort.Tensor> = {
      [IO.x]: new ort.Tensor('float32', xs, [rows, ...plan.fromShape]),
      [IO.target]: new ort.Tensor('float32', target, [rows, K]),
      [IO.invN]: new ort.Tensor('float32', invN, [rows, 1]),
    };
    const bc1 = kind.optimizer === 'adamw' ? 1 - kind.beta1 ** t : 1;
    if (kind.optimizer === 'adamw') feeds[IO.bc2] = scalar(Math.sqrt(1 - kind.beta2 ** t));
    for (const g of new Set(plan.params.map(groupOf))) {
      const rate = g === 'head' ? lr.head : lr.backbone[Number(g)];
      if (!(rate >= 0) || !Number.isFinite(rate)) throw new XferError(`fine-tune step: learning rate ${rate} for ${g === 'head' ? 'the classifier' : `block ${plan.blocks[Number(g)]}`}`, { hint: 'learning rates must be finite numbers ≥ 0' });
      feeds[IO.lr(g)] = scalar(rate / bc1);
      if (kind.decay) feeds[IO.decay(g)] = scalar(1 - rate * kind.weightDecay);
    }
    for (const [k, v] of this.tensors) feeds[k] = v;
    const out = await this.train.run(feeds);
    const next = new Map<string, ort.Tensor>();
    for (const k of this.tensors.keys()) next.set(k, out[IO.next(k)]);
    this.tensors = next;
    const loss = (out[IO.loss].data as Float32Array)[0];
    if (this.gradNames.length === 0) return { loss };
    return { loss, gradients: new Map(this.gradNames.map((g) => [g.slice(0, -'@grad'.length), (out[g].data as Float32Array).slice()])) };
  }

  private checkBatch(x: Float32Array, n: number): void {
    if (!Number.isInteger(n) || n < 1) throw new XferError(`fine-tune: batch size ${n}`);
    if (x.length < n * size(this.plan.fromShape)) throw new XferError(`fine-tune: ${x.length} values for ${n} samples of [${this.plan.fromShape}]`);
  }

  /** Logits [n, K] with the current weights (evaluation mode), or with `weights` (e.g. their moving average). */
  async logits(x: Float32Array, n: number, weights?: Map<string, Float32Array>): Promise<Float32Array> {
    this.checkBatch(x, n);
    const feeds: Record<string, ort.Tensor> = { [IO.x]: new ort.Tensor('float32', x.subarray(0, n * size(this.plan.fromShape)), [n, ...this.plan.fromShape]) };
    for (const p of this.weightNames) {
      const w = weights?.get(p.name);
      feeds[p.name] = w ? new ort.Tensor('float32', w, p.shape) : this.tensors.get(p.name)!;
    }
    const out = await this.evalSession.run(feeds);
    return (out[IO.logits].data as Float32Array).slice();
  }

  /** Copies of the current trainable weights (and running statistics, when trained with batch statistics). */
  async weights(): Promise<Map<string, Float32Array>> {
    return new Map(this.weightNames.map((p) => [p.name, (this.tensors.get(p.name)!.data as Float32Array).slice()]));
  }

  /**
   * avg ← decay·avg + (1 − decay)·w for every trainable weight, read in place from the step's output
   * tensors (a copy per step would be megabytes of garbage per batch).
   */
  accumulateAverage(avg: Map<string, Float32Array>, decay: number): void {
    for (const p of this.weightNames) {
      const w = this.tensors.get(p.name)!.data as Float32Array;
      const a = avg.get(p.name);
      if (!a || a.length !== w.length) throw new XferError(`fine-tune: weight average of ${p.name} is ${a ? `${a.length} values` : 'missing'}, expected ${w.length}`);
      const k = 1 - decay;
      for (let i = 0; i < w.length; i++) a[i] += k * (w[i] - a[i]);
    }
  }

  /** Everything a resumed run needs: the step count, weights and optimizer state. */
  async state(): Promise<{ step: number; tensors: Map<string, Float32Array> }> {
    return { step: this.stepCount, tensors: new Map([...this.tensors].map(([k, v]) => [k, (v.data as Float32Array).slice()])) };
  }

  async setState(s: { step: number; tensors: Map<string, Float32Array> }): Promise<void> {
    for (const [k, v] of this.tensors) {
      const w = s.tensors.get(k);
      if (!w || w.length !== v.size) throw new XferError(`fine-tune checkpoint: ${k} is ${w ? `${w.length} values` : 'missing'}, expected ${v.size}`, { hint: 'the checkpoint belongs to another plan or optimizer; start again without --resume' });
    }
    this.tensors = new Map([...this.tensors].map(([k, v]) => [k, new ort.Tensor('float32', s.tensors.get(k)!.slice(), v.dims as number[])]));
    this.stepCount = s.step;
  }

  async close(): Promise<void> {
    await this.train.release();
    await this.evalSession.release();
  }

  /** Names of the optimizer-state tensors (for checkpoints). */
  get optimizerState(): string[] {
    return this.stateNames;
  }
}
