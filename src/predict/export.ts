/**
 * Export backbone + head as ONE ONNX file:
 *
 *   xfer_pixels  uint8 [N, H, W, 3]  (the card's channel order and size; preprocessing is in-graph,
 *                                     exactly the input `buildTapModel` makes)
 *   → backbone taps (pooled, float32, pruned to what the taps need) → Flatten each → Concat
 *   → the head's transforms (standardize: Sub mean, Mul 1/scale; l2: x / max(‖x‖₂, 1e-12);
 *     pca: MatMul componentsᵀ, Sub mean·componentsᵀ)
 *   → the head's own nodes (`Head.toOnnx`, in each head's file: the exporter knows no head kind)
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
import { valueInfo } from '../onnx/builder.js';
import { GraphPart, rowSumSq, transposed } from '../onnx/graph-part.js';
import { externalWeightsDigest, readOnnxFile, serializeModel, writeOnnxFile } from '../onnx/io.js';
import { DataType, type ModelProto } from '../onnx/proto.js';
import type { CardFlags } from '../model/card-flags.js';
import { buildTapModel } from '../model/tap-model.js';
import { PIXEL_INPUT } from '../model/taps.js';
import '../heads/index.js';
import { loadHead, type TrainedHead } from '../heads/model.js';
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
      cur = g.op('MatMul', [cur, g.const('pca_components_t', [d, k], transposed(comps, k, d))]);
      cur = g.op('Sub', [cur, g.const('pca_mean_proj', [k], mc)]);
      d = k;
    } else {
      throw new XferError(`head: unknown transform '${String((tr as { kind: string }).kind)}'`, { hint: 'upgrade xfer or retrain the head' });
    }
  }
  return { out: cur, d };
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
  if (head.head.nFeatures !== tr.d) throw new XferError(`head: expects ${head.head.nFeatures} features but the transforms give ${tr.d}`, { hint: 'the head folder is damaged; train it again' });
  const { scores, probs, opset } = head.head.toOnnx(g, tr.out);
  if (opset) {
    // the head's own graph may use a newer opset than the backbone's (same op semantics in between for the ops it uses)
    const imports = tapModel.model.opsetImport ?? [];
    const def = imports.find((o) => !o.domain);
    if (def && Number(def.version) < opset) def.version = opset;
    else if (!def) imports.push({ domain: '', version: opset });
  }
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
