/**
 * Export backbone + head as ONE ONNX file:
 *
 *   xfer_pixels  uint8 [N, H, W, 3]  (the card's channel order and size; preprocessing is in-graph,
 *                                     exactly the input `buildTapModel` makes)
 *   → backbone taps (pooled, float32, pruned to what the taps need) → Flatten each → Concat
 *   → the head's transforms (standardize: Sub mean, Mul 1/scale; l2: x / max(‖x‖₂, 1e-12);
 *     pca: MatMul componentsᵀ, Sub mean·componentsᵀ)
 *   → the head:
 *       linear  MatMul + Add → Softmax
 *       svm     MatMul + Add; probabilities = Platt sigmoid per class normalised to sum 1 when the
 *               head is calibrated, else Softmax of the margins (what predictProba does)
 *       mlp     (MatMul + Add + Relu)* → MatMul + Add → Softmax
 *       svm-rbf kernel against the support vectors (‖x−sv‖² = ‖x‖² + ‖sv‖² − 2·x·svᵀ, Exp; or the
 *               polynomial kernel), MatMul with the dense one-vs-one coefficients − rho, then the
 *               one-vs-one vote as matrix products (votes + conf / (3(|conf| + 1)), sklearn's 'ovr'
 *               shape) → Softmax
 *       knn     MatMul against the stored rows → TopK → weighted one-hot vote (heads/knn.ts, knnOnnx)
 *   outputs: `probabilities` float [N, K] (= predictProba), `scores` float [N, K]
 *            (= decisionFunction), `label` int64 [N] (ArgMax of probabilities, first on ties).
 *
 * metadata_props: xfer.labels (JSON array, head class order), xfer.card (JSON card), xfer.head
 * (kind, params, transforms, layers, backbone id + sha256, and external_sha256 for external weights), xfer.preprocessing (the plan the head's
 * features were extracted with: resize policy, crop_pct, interpolation, ICC handling, background …,
 * as in meta.json), xfer.input / xfer.outputs (descriptions).
 */
import ort from '../model/ort.js';
import { XferError } from '../errors.js';
import { floatTensor, int64Tensor, node, valueInfo } from '../onnx/builder.js';
import { externalWeightsDigest, readOnnxFile, serializeModel, writeOnnxFile } from '../onnx/io.js';
import { DataType, type ModelProto, type NodeProto, type TensorProto } from '../onnx/proto.js';
import type { CardFlags } from '../model/card-flags.js';
import { buildTapModel } from '../model/tap-model.js';
import { PIXEL_INPUT } from '../model/taps.js';
import '../heads/index.js';
import { loadHead, type TrainedHead } from '../heads/model.js';
import { knnOnnx } from '../heads/knn.js';
import { checkExternalWeights, headPlan, headPreprocessingRecord, headTaps, resolveHeadBackbone } from './predict.js';
import { describePlan } from '../image/plan.js';

export const EXPORT_OUTPUTS = { probabilities: 'probabilities', scores: 'scores', label: 'label' } as const;

export interface ExportOptions {
  /** Backbone spec overriding the head's recorded backbone (must have the same sha256). */
  model?: string;
  card?: string;
  cardFlags?: CardFlags;
  /** Load and run the written model once on a blank image to check it (default true). */
  verify?: boolean;
  onNotice?: (msg: string) => void;
}

export interface ExportResult {
  file: string;
  sha256: string;
  size: number;
  kind: string;
  labels: string[];
  input: { name: string; shape: (number | string)[]; dtype: 'uint8' };
  outputs: { name: string; shape: (number | string)[]; dtype: 'float32' | 'int64' }[];
  /** Fixed batch when the backbone cannot run batched (then N must be this), else null. */
  fixedBatch: number | null;
}

/** Accumulates the head part of the graph with unique, prefixed names. */
class GraphPart {
  readonly nodes: NodeProto[] = [];
  readonly inits: TensorProto[] = [];
  private n = 0;
  constructor(private readonly prefix: string) {}
  name(s: string): string {
    return `${this.prefix}/${s}_${this.n++}`;
  }
  const(s: string, dims: number[], data: Float32Array | number[]): string {
    const name = this.name(s);
    this.inits.push(floatTensor(name, dims, data));
    return name;
  }
  op(opType: string, inputs: string[], attrs: Parameters<typeof node>[3] = {}, out?: string): string {
    const o = out ?? this.name(opType.toLowerCase());
    this.nodes.push(node(opType, inputs, [o], attrs));
    return o;
  }
  opN(opType: string, inputs: string[], outputs: number, attrs: Parameters<typeof node>[3] = {}): string[] {
    const outs = Array.from({ length: outputs }, () => this.name(opType.toLowerCase()));
    this.nodes.push(node(opType, inputs, outs, attrs));
    return outs;
  }
  int64(s: string, dims: number[], data: number[]): string {
    const name = this.name(s);
    this.inits.push(int64Tensor(name, dims, data));
    return name;
  }
}

/** x [N, d] → per-row sum of squares [N, 1] (MatMul with ones: no opset-dependent Reduce* axes). */
function rowSumSq(g: GraphPart, x: string, d: number): string {
  const sq = g.op('Mul', [x, x]);
  return g.op('MatMul', [sq, g.const('ones', [d, 1], new Float32Array(d).fill(1))]);
}

/** d × k row-major → k × d row-major. */
function transpose(a: Float32Array, rows: number, cols: number): Float32Array {
  const t = new Float32Array(rows * cols);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) t[j * rows + i] = a[i * cols + j];
  return t;
}

function f32(h: TrainedHead, name: string): Float32Array {
  const a = h.head.toState().arrays[name];
  if (!(a instanceof Float32Array)) throw new XferError(`head: array ${name} missing or not float32`, { hint: 'the head folder is damaged; train it again' });
  return a;
}

function i32(h: TrainedHead, name: string): Int32Array {
  const a = h.head.toState().arrays[name];
  if (!(a instanceof Int32Array)) throw new XferError(`head: array ${name} missing or not int32`, { hint: 'the head folder is damaged; train it again' });
  return a;
}

/** Transforms: x [N, dIn] → [N, dOut]. */
function transformNodes(g: GraphPart, t: TrainedHead, x: string): { out: string; d: number } {
  let cur = x;
  let d = t.source.width;
  for (const tr of t.transforms) {
    if (tr.dIn !== d) throw new XferError(`head: transform ${tr.kind} expects ${tr.dIn} columns but gets ${d}`, { hint: 'the head folder is damaged; train it again' });
    if (tr.kind === 'standardize') {
      const inv = new Float32Array(d);
      for (let j = 0; j < d; j++) inv[j] = 1 / tr.arrays.scale[j];
      cur = g.op('Sub', [cur, g.const('std_mean', [d], tr.arrays.mean)]);
      cur = g.op('Mul', [cur, g.const('std_inv_scale', [d], inv)]);
    } else if (tr.kind === 'l2') {
      const norm = g.op('Sqrt', [rowSumSq(g, cur, d)]);
      const safe = g.op('Max', [norm, g.const('l2_eps', [], [1e-30])]);
      cur = g.op('Div', [cur, safe]);
    } else if (tr.kind === 'pca') {
      const k = tr.dOut;
      const comps = tr.arrays.components; // k × d
      const mc = new Float32Array(k);
      for (let r = 0; r < k; r++) {
        let s = 0;
        for (let j = 0; j < d; j++) s += tr.arrays.mean[j] * comps[r * d + j];
        mc[r] = s;
      }
      cur = g.op('MatMul', [cur, g.const('pca_components_t', [d, k], transpose(comps, k, d))]);
      cur = g.op('Sub', [cur, g.const('pca_mean_proj', [k], mc)]);
      d = k;
    } else {
      throw new XferError(`head: unknown transform '${String((tr as { kind: string }).kind)}'`, { hint: 'upgrade xfer or retrain the head' });
    }
  }
  return { out: cur, d };
}

/** The head: x [N, d] → { scores [N, K], probs [N, K] }. */
function headNodes(g: GraphPart, t: TrainedHead, x: string, d: number): { scores: string; probs: string } {
  const h = t.head;
  const K = h.nClasses;
  const st = h.toState();
  if (h.nFeatures !== d) throw new XferError(`head: expects ${h.nFeatures} features but the transforms give ${d}`, { hint: 'the head folder is damaged; train it again' });
  const softmax = (s: string): string => g.op('Softmax', [s], { axis: 1 });
  switch (h.kind) {
    case 'linear':
    case 'svm': {
      const z = g.op('MatMul', [x, g.const('W', [d, K], f32(t, 'W'))]);
      const scores = g.op('Add', [z, g.const('b', [K], f32(t, 'b'))]);
      const platt = st.arrays.platt;
      if (h.kind === 'svm' && platt instanceof Float32Array) {
        // p_c = 1 / (1 + exp(A_c s_c + B_c)) = sigmoid(−(A_c s_c + B_c)), normalised to sum 1
        const A = new Float32Array(K);
        const B = new Float32Array(K);
        for (let c = 0; c < K; c++) {
          A[c] = -platt[2 * c];
          B[c] = -platt[2 * c + 1];
        }
        const p = g.op('Sigmoid', [g.op('Add', [g.op('Mul', [scores, g.const('platt_negA', [K], A)]), g.const('platt_negB', [K], B)])]);
        const sum = g.op('MatMul', [p, g.const('ones', [K, 1], new Float32Array(K).fill(1))]);
        return { scores, probs: g.op('Div', [p, sum]) };
      }
      return { scores, probs: softmax(scores) };
    }
    case 'mlp': {
      let cur = x;
      let l = 0;
      let inDim = d;
      while (`W${l}` in st.arrays) {
        const [i, o] = st.shapes[`W${l}`];
        if (i !== inDim) throw new XferError(`head: mlp layer ${l} expects ${i} inputs but gets ${inDim}`, { hint: 'the head folder is damaged; train it again' });
        cur = g.op('Add', [g.op('MatMul', [cur, g.const(`W${l}`, [i, o], f32(t, `W${l}`))]), g.const(`b${l}`, [o], f32(t, `b${l}`))]);
        inDim = o;
        l++;
        if (`W${l}` in st.arrays) cur = g.op('Relu', [cur]);
      }
      if (l === 0 || inDim !== K) throw new XferError(`head: mlp has no layers or ends in ${inDim} outputs for ${K} classes`, { hint: 'the head folder is damaged; train it again' });
      return { scores: cur, probs: softmax(cur) };
    }
    case 'svm-rbf': {
      const SV = f32(t, 'SV');
      const nSv = SV.length / d;
      const pairStart = i32(t, 'pairStart');
      const pairSv = i32(t, 'pairSv');
      const pairCoef = f32(t, 'pairCoef');
      const rho = f32(t, 'rho');
      const nP = (K * (K - 1)) / 2;
      const kernel = h.params.kernel === 'poly' ? 'poly' : 'rbf';
      const gamma = Number(st.info.gamma);
      if (!(gamma > 0)) throw new XferError('head: svm-rbf has no valid gamma in head.json info', { hint: 'the head folder is damaged; train it again' });
      const G = g.op('MatMul', [x, g.const('sv_t', [d, nSv], transpose(SV, nSv, d))]);
      let Kx: string;
      if (kernel === 'rbf') {
        const svn = new Float32Array(nSv);
        for (let i = 0; i < nSv; i++) {
          let s = 0;
          for (let j = 0; j < d; j++) s += SV[i * d + j] * SV[i * d + j];
          svn[i] = s;
        }
        const xn = rowSumSq(g, x, d); // [N, 1]
        const twoG = g.op('Mul', [G, g.const('two', [], [2])]);
        const d2 = g.op('Sub', [g.op('Add', [xn, g.const('sv_norms', [1, nSv], svn)]), twoG]);
        const d2c = g.op('Max', [d2, g.const('zero', [], [0])]);
        Kx = g.op('Exp', [g.op('Mul', [d2c, g.const('neg_gamma', [], [-gamma])])]);
      } else {
        const base = g.op('Add', [g.op('Mul', [G, g.const('gamma', [], [gamma])]), g.const('coef0', [], [Number(h.params.coef0)])]);
        Kx = g.op('Pow', [base, g.const('degree', [], [Number(h.params.degree)])]);
      }
      // dense one-vs-one coefficients [nSv, nP] (an SV may serve several pairs)
      const coef = new Float32Array(nSv * nP);
      for (let p = 0; p < nP; p++) for (let q = pairStart[p]; q < pairStart[p + 1]; q++) coef[pairSv[q] * nP + p] += pairCoef[q];
      const P = g.op('Sub', [g.op('MatMul', [Kx, g.const('dual_coef', [nSv, nP], coef)]), g.const('rho', [nP], rho)]);
      // votes: pair p = (a, b) gives a vote to a when P > 0, else to b; conf_a += P, conf_b −= P
      const Aw = new Float32Array(nP * K);
      const Bw = new Float32Array(nP * K);
      let p = 0;
      for (let a = 0; a < K; a++) {
        for (let b = a + 1; b < K; b++) {
          Aw[p * K + a] = 1;
          Bw[p * K + b] = 1;
          p++;
        }
      }
      const AmB = Aw.map((v, i) => v - Bw[i]);
      const pos = g.op('Cast', [g.op('Greater', [P, g.const('zero', [], [0])])], { to: DataType.FLOAT });
      const neg = g.op('Sub', [g.const('one', [], [1]), pos]);
      const votes = g.op('Add', [g.op('MatMul', [pos, g.const('vote_a', [nP, K], Aw)]), g.op('MatMul', [neg, g.const('vote_b', [nP, K], Bw)])]);
      const conf = g.op('MatMul', [P, g.const('conf', [nP, K], AmB)]);
      const denom = g.op('Mul', [g.op('Add', [g.op('Abs', [conf]), g.const('one', [], [1])]), g.const('three', [], [3])]);
      const scores = g.op('Add', [votes, g.op('Div', [conf, denom])]);
      return { scores, probs: softmax(scores) };
    }
    case 'knn':
      return knnOnnx(g, st, x);
    default:
      throw new XferError(`head: cannot export head kind '${String(h.kind)}'`, { hint: 'export supports linear, svm, svm-rbf, mlp and knn heads' });
  }
}

/** Build the combined model in memory (see the file comment). */
export async function buildExportModel(headDir: string, opts: ExportOptions = {}): Promise<{ model: ModelProto; head: TrainedHead; fixedBatch: number | null; backboneId: string }> {
  const notice = opts.onNotice ?? (() => {});
  const head = await loadHead(headDir);
  const taps = headTaps(head, headDir);
  const { spec, backbone } = await resolveHeadBackbone(head, headDir, opts);
  if (!backbone.card) {
    throw new XferError(`${backbone.file}: no model card, needed for export (the file takes raw pixels and preprocesses them in-graph)`, { hint: 'pass --card <card.json> or card flags' });
  }
  const card = backbone.card;
  // The card must feed the backbone as it did for the head's features (throws otherwise).
  const plan = headPlan(await headPreprocessingRecord(head), headDir, card);
  const loaded = await readOnnxFile(backbone.file);
  const externalSha256 = externalWeightsDigest(loaded.file, loaded.external);
  checkExternalWeights(head, externalSha256, loaded.file, headDir);
  const tapModel = await buildTapModel(loaded.model, card, taps, spec, notice);
  if (tapModel.fixedBatch !== null) notice(`warning: the exported model runs ${tapModel.fixedBatch} image(s) per call (the backbone has a fixed batch)`);
  const graph = tapModel.model.graph;
  const g = new GraphPart('xfer_head');
  // taps → Flatten (pool 'none' keeps the layer's shape) → Concat
  const flat = tapModel.taps.map((tp) => g.op('Flatten', [tp.output], { axis: 1 }));
  const X = flat.length === 1 ? flat[0] : g.op('Concat', flat, { axis: 1 });
  const tr = transformNodes(g, head, X);
  const { scores, probs } = headNodes(g, head, tr.out, tr.d);
  const K = head.head.nClasses;
  g.op('Identity', [probs], {}, EXPORT_OUTPUTS.probabilities);
  g.op('Identity', [scores], {}, EXPORT_OUTPUTS.scores);
  g.op('ArgMax', [probs], { axis: 1, keepdims: 0 }, EXPORT_OUTPUTS.label);
  const N: number | string = tapModel.fixedBatch ?? 'N';
  graph.node.push(...g.nodes);
  graph.initializer.push(...g.inits);
  graph.output = [
    valueInfo(EXPORT_OUTPUTS.probabilities, DataType.FLOAT, [N, K]),
    valueInfo(EXPORT_OUTPUTS.scores, DataType.FLOAT, [N, K]),
    valueInfo(EXPORT_OUTPUTS.label, DataType.INT64, [N]),
  ];
  graph.name = `${graph.name ?? 'graph'}_xfer_${head.head.kind}`;
  const { dir: _dir, ...cardJson } = card;
  const [Hh, Ww] = card.input.size;
  const st = head.head.toState();
  const meta: Record<string, string> = {
    'xfer.labels': JSON.stringify(head.classLabels),
    'xfer.card': JSON.stringify(cardJson),
    'xfer.head': JSON.stringify({
      kind: st.kind,
      params: st.params,
      n_classes: K,
      n_features: head.source.width,
      probabilistic: head.head.probabilistic,
      transforms: head.transforms.map((t) => (t.kind === 'pca' ? `pca:${t.k}` : t.kind)),
      layers: head.source.layers.map((l) => ({ name: l.name, pool: l.pool, shape: l.shape })),
      backbone: { id: head.source.model.id, sha256: head.source.model.sha256, ...(externalSha256 ? { external_sha256: externalSha256 } : {}) },
    }),
    'xfer.input': `${PIXEL_INPUT}: uint8 [N, ${Hh}, ${Ww}, 3], ${card.input.channel_order} channel order, resized/cropped as xfer.preprocessing says; normalisation is in the graph`,
    'xfer.preprocessing': JSON.stringify(describePlan(plan)),
    'xfer.outputs': `${EXPORT_OUTPUTS.probabilities}: float [N, ${K}] (${head.head.probabilistic ? 'probabilities' : 'softmax of uncalibrated scores'}); ${EXPORT_OUTPUTS.scores}: float [N, ${K}] decision scores; ${EXPORT_OUTPUTS.label}: int64 [N] index into xfer.labels`,
  };
  const existing = (tapModel.model.metadataProps ?? []).filter((p) => !p.key.startsWith('xfer.'));
  const model: ModelProto = {
    ...tapModel.model,
    producerName: 'xfer',
    docString: `xfer export: ${head.source.model.id} taps ${head.source.layers.map((l) => `${l.name}/${l.pool ?? 'none'}`).join(', ')} + ${head.head.kind} head (${K} classes)`,
    metadataProps: [...existing, ...Object.entries(meta).map(([key, value]) => ({ key, value }))],
  };
  return { model, head, fixedBatch: tapModel.fixedBatch, backboneId: backbone.id };
}

/** Export backbone + head to one ONNX file; see the file comment for the graph. */
export async function exportOnnx(headDir: string, out: string, opts: ExportOptions = {}): Promise<ExportResult> {
  const { model, head, fixedBatch } = await buildExportModel(headDir, opts);
  const K = head.head.nClasses;
  const size = (model.graph.input.find((i) => i.name === PIXEL_INPUT)?.type?.tensorType?.shape?.dim ?? []).map((d) => d.dimValue ?? d.dimParam ?? '?');
  if (opts.verify ?? true) {
    const bytes = serializeModel(model);
    let session: ort.InferenceSession;
    try {
      session = await ort.InferenceSession.create(bytes, { executionProviders: ['cpu'] });
    } catch (e) {
      throw new XferError(`export of ${headDir}: onnxruntime refuses the combined model (${(e as Error).message.split('\n')[0]})`, { hint: 'report this as a bug, with the head folder', cause: e, exitCode: 1 });
    }
    try {
      const [h, w] = [Number(size[1]), Number(size[2])];
      const n = fixedBatch ?? 1;
      const res = await session.run({ [PIXEL_INPUT]: new ort.Tensor('uint8', new Uint8Array(n * h * w * 3), [n, h, w, 3]) });
      const p = res[EXPORT_OUTPUTS.probabilities];
      if (p.dims.length !== 2 || p.dims[1] !== K) throw new Error(`probabilities have shape [${p.dims.join(', ')}], expected [${n}, ${K}]`);
    } catch (e) {
      throw new XferError(`export of ${headDir}: the combined model does not run (${(e as Error).message.split('\n')[0]})`, { hint: 'report this as a bug, with the head folder', cause: e, exitCode: 1 });
    } finally {
      await session.release();
    }
  }
  const { sha256, size: bytes } = await writeOnnxFile(out, model);
  const N: number | string = fixedBatch ?? 'N';
  return {
    file: out,
    sha256,
    size: bytes,
    kind: head.head.kind,
    labels: head.classLabels,
    fixedBatch,
    input: { name: PIXEL_INPUT, shape: size, dtype: 'uint8' },
    outputs: [
      { name: EXPORT_OUTPUTS.probabilities, shape: [N, K], dtype: 'float32' },
      { name: EXPORT_OUTPUTS.scores, shape: [N, K], dtype: 'float32' },
      { name: EXPORT_OUTPUTS.label, shape: [N], dtype: 'int64' },
    ],
  };
}
