/**
 * A fine-tuned network as a head: its input is the backbone's unpooled activations at the tap it was
 * fine-tuned from (one flattened row per image, as `--pool none` features and `xfer predict`'s tap
 * give them), its graph is the fine-tuned top of the backbone plus the new classifier
 * (`buildInferenceModel`: activations → `logits`, `probabilities`), saved as `finetune.onnx` in the
 * head folder. So `xfer eval`, `predict`, `classify` and `export` treat it as any other head.
 * Importing this module registers the kind.
 */
import ort from '../model/ort.js';
import { XferError } from '../errors.js';
import { decodeOnnxBytes } from '../onnx/io.js';
import type { GraphPart, OnnxHeadOutputs } from '../onnx/graph-part.js';
import { checkFitted, checkPredictInput, registerHead, type FitContext, type Head, type HeadParams, type HeadState } from '../heads/head.js';
import type { Matrix } from '../heads/matrix.js';

export const FINETUNE_MODEL_FILE = 'finetune.onnx';
export const FINETUNE_OUTPUTS = { logits: 'logits', probabilities: 'probabilities' } as const;
/** Rows run per session call (bounds the activations held at once). */
const CHUNK = 64;

export interface FinetuneHeadInit {
  params: HeadParams;
  nClasses: number;
  /** Per-row input shape (the tap's activations without the batch axis). */
  rowShape: number[];
  /** The inference graph (serialized ONNX). */
  model: Uint8Array;
  info: Record<string, unknown>;
}

export class FinetuneHead implements Head {
  readonly kind = 'finetune' as const;
  readonly probabilistic = true;
  readonly params: HeadParams;
  nClasses: number;
  nFeatures: number;
  info: Record<string, unknown>;
  readonly rowShape: number[];
  readonly model: Uint8Array;
  private session: Promise<ort.InferenceSession> | null = null;
  private last: { X: Float32Array; rows: number; logits: Float32Array; probs: Float32Array } | null = null;

  constructor(init: FinetuneHeadInit) {
    this.params = init.params;
    this.nClasses = init.nClasses;
    this.rowShape = init.rowShape;
    this.nFeatures = init.rowShape.reduce((a, b) => a * b, 1);
    this.model = init.model;
    this.info = { ...init.info, rowShape: init.rowShape };
  }

  fit(_X: Matrix, _y: Int32Array, _k: number, _ctx?: FitContext): Promise<this> {
    throw new XferError('the finetune head is trained by `xfer train --head finetune --from <tap>` (API: finetune()), not by fit()', { hint: 'see docs/finetune.md' });
  }

  private open(): Promise<ort.InferenceSession> {
    this.session ??= ort.InferenceSession.create(this.model, { executionProviders: ['cpu'], graphOptimizationLevel: 'all' });
    return this.session;
  }

  /** Both outputs for X (remembered for the last X: predict asks for scores and probabilities in turn). */
  private async run(X: Matrix): Promise<{ logits: Float32Array; probs: Float32Array }> {
    checkPredictInput(this, X);
    if (this.last && this.last.X === X.data && this.last.rows === X.rows) return this.last;
    const s = await this.open();
    const K = this.nClasses;
    const d = this.nFeatures;
    const logits = new Float32Array(X.rows * K);
    const probs = new Float32Array(X.rows * K);
    for (let a = 0; a < X.rows; a += CHUNK) {
      const n = Math.min(CHUNK, X.rows - a);
      const x = new ort.Tensor('float32', X.data.subarray(a * d, (a + n) * d), [n, ...this.rowShape]);
      const out = await s.run({ [s.inputNames[0]]: x });
      logits.set(out[FINETUNE_OUTPUTS.logits].data as Float32Array, a * K);
      probs.set(out[FINETUNE_OUTPUTS.probabilities].data as Float32Array, a * K);
    }
    this.last = { X: X.data, rows: X.rows, logits, probs };
    return this.last;
  }

  async decisionFunction(X: Matrix): Promise<Float32Array> {
    return (await this.run(X)).logits;
  }

  async predictProba(X: Matrix): Promise<Float32Array> {
    return (await this.run(X)).probs;
  }

  async predict(X: Matrix): Promise<Int32Array> {
    const P = await this.predictProba(X);
    const K = this.nClasses;
    const out = new Int32Array(X.rows);
    for (let i = 0; i < X.rows; i++) {
      let b = 0;
      for (let c = 1; c < K; c++) if (P[i * K + c] > P[i * K + b]) b = c;
      out[i] = b;
    }
    return out;
  }

  toState(): HeadState {
    return { kind: 'finetune', params: this.params, nClasses: this.nClasses, nFeatures: this.nFeatures, info: this.info, arrays: {}, shapes: {}, files: { [FINETUNE_MODEL_FILE]: this.model } };
  }

  /** Its own graph (finetune.onnx), tensors prefixed, fed by x [N, d] reshaped to the tap's shape; its opset travels with it. */
  toOnnx(g: GraphPart, x: string): OnnxHeadOutputs {
    checkFitted(this);
    const rowShape = this.info.rowShape;
    if (!Array.isArray(rowShape)) throw new XferError('head: info.rowShape missing', { hint: 'the head folder is damaged; train it again' });
    const m = decodeOnnxBytes(this.model, FINETUNE_MODEL_FILE);
    const inits = new Set(m.graph.initializer.map((t) => t.name));
    const input = m.graph.input.find((i) => !inits.has(i.name))?.name;
    if (!input) throw new XferError(`head: ${FINETUNE_MODEL_FILE} has no input`, { hint: 'the head folder is damaged; train it again' });
    const xin = g.op('Reshape', [x, g.int64('ft_shape', [rowShape.length + 1], [-1, ...(rowShape as number[])])]);
    const ren = (t: string): string => (t === '' ? '' : t === input ? xin : `xfer_ft/${t}`);
    for (const n of m.graph.node) g.nodes.push({ ...n, name: n.name ? `xfer_ft/${n.name}` : n.name, input: n.input.map(ren), output: n.output.map(ren) });
    for (const t of m.graph.initializer) g.inits.push({ ...t, name: ren(t.name ?? '') });
    const opset = m.opsetImport.find((o) => !o.domain)?.version ?? 0;
    return { scores: ren(FINETUNE_OUTPUTS.logits), probs: ren(FINETUNE_OUTPUTS.probabilities), opset: Number(opset) };
  }

  /** Release the inference session (it is opened on first use). */
  async close(): Promise<void> {
    const s = this.session;
    this.session = null;
    this.last = null;
    if (s) await (await s).release();
  }
}

registerHead('finetune', {
  create: () => {
    throw new XferError('the finetune head is trained by `xfer train --head finetune --from <tap>` (API: finetune())', { hint: 'see docs/finetune.md' });
  },
  fromState: (s: HeadState) => {
    const model = s.files?.[FINETUNE_MODEL_FILE];
    const rowShape = s.info.rowShape;
    if (!model || !Array.isArray(rowShape)) throw new XferError(`finetune head: ${FINETUNE_MODEL_FILE} or info.rowShape missing`, { hint: 'the head folder is damaged; train it again' });
    return new FinetuneHead({ params: s.params, nClasses: s.nClasses, rowShape: rowShape as number[], model, info: s.info });
  },
  defaults: {},
  defaultTransforms: 'none',
});
