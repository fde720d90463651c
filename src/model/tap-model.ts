/**
 * Building a tap model: from a backbone's ONNX model and card, derive the model with in-graph
 * preprocessing (uint8 NHWC pixels in) and the requested taps as float32 outputs (pooled in the
 * graph), with a symbolic batch when that is safe. The heavy part of opening a backbone (parse,
 * derive, serialize); prepare.ts caches its result on disk.
 */
import ort from './ort.js';
import { XferError } from '../errors.js';
import { externalWeightsDigest, readOnnxFile, serializeModel, type ExternalStamp } from '../onnx/io.js';
import type { ModelProto } from '../onnx/proto.js';
import { pixelAffine, type ModelCard } from './card.js';
import { inferDtypes, listTensors, realInputs } from './graph.js';
import { checkBatching, hasFixedBatch, withSymbolicBatch } from './batch.js';
import { dummyInput } from './probe.js';
import { deriveTapModel, MODEL_OUTPUT_TAP, PIXEL_INPUT, resolveTapOrInput, type ResolvedTap, type TapRequest } from './taps.js';

/** The model's image input (named by the card or the only real input). */
export function imageInputName(model: ModelProto, card: ModelCard, file: string): string {
  const ins = realInputs(model.graph);
  if (card.input.name) {
    if (!ins.some((i) => i.name === card.input.name)) {
      throw new XferError(`${file}: card input "${card.input.name}" is not an input of the model (inputs: ${ins.map((i) => i.name).join(', ')})`);
    }
    return card.input.name;
  }
  if (ins.length !== 1) {
    throw new XferError(`${file}: the model has ${ins.length} inputs (${ins.map((i) => i.name).join(', ')}); say which is the image`, { hint: 'set "input.name" in the model card' });
  }
  return ins[0].name;
}

/**
 * Ranks of the tapped tensors, from one batch-1 run of the pruned model with the raw tensors as
 * outputs (cheap: only the compute the taps need). Null when the probe cannot run; pooling then
 * uses its rank-agnostic form.
 */
async function tapRanks(model: ModelProto, taps: TapRequest[], file: string): Promise<Map<string, number> | undefined> {
  // Declared shapes first (converted models declare them): no probe run needed.
  const tensors = listTensors(model);
  const declared = taps.map((t) => resolveTapOrInput(t.name, model, tensors, file));
  if (declared.every((t) => t.shape !== null)) return new Map(declared.map((t) => [t.name, t.shape!.length]));
  const { model: raw, taps: resolved } = deriveTapModel(model, taps.map((t) => ({ name: t.name, pool: 'none' as const })), { file });
  let session: ort.InferenceSession | undefined;
  try {
    session = await ort.InferenceSession.create(serializeModel(raw), { intraOpNumThreads: 1, logSeverityLevel: 4 });
    const feeds: Record<string, ort.Tensor> = {};
    for (const vi of realInputs(raw.graph)) feeds[vi.name] = dummyInput(vi, 1);
    const res = await session.run(feeds);
    return new Map(resolved.map((t) => [t.tensor, res[t.output].dims.length]));
  } catch {
    return undefined;
  } finally {
    await session?.release();
  }
}

/** Derive the tap model for a card: pixel input + taps, symbolic batch when safe. */
export async function buildTapModel(
  model: ModelProto,
  card: ModelCard,
  taps: TapRequest[],
  file: string,
  onNotice: (msg: string) => void = () => {},
): Promise<{ model: ModelProto; taps: ResolvedTap[]; fixedBatch: number | null }> {
  const out0 = model.graph.output[0]?.name;
  if (taps.some((t) => t.name === MODEL_OUTPUT_TAP) && !out0) throw new XferError(`${file}: the model declares no output`, { hint: 'check the model file with `xfer layers`' });
  taps = taps.map((t) => (t.name === MODEL_OUTPUT_TAP ? { ...t, name: out0 } : t));
  const inputName = imageInputName(model, card, file);
  const ranks = await tapRanks(model, taps, file);
  const { scale, bias } = pixelAffine(card.input);
  const dtypes = inferDtypes(model);
  const pixelInput = { inputName, layout: card.input.layout, dtype: card.input.dtype, scale, bias, height: card.input.size[0], width: card.input.size[1] };
  const derive = (m: ModelProto) => deriveTapModel(m, taps, { file, ranks, dtypes, pixelInput });
  if (!hasFixedBatch(model)) return { ...derive(model), fixedBatch: null };
  const derived = derive(withSymbolicBatch(model));
  const problem = await checkBatching(derived.model);
  if (!problem) return { ...derived, fixedBatch: null };
  onNotice(`warning: ${file} has a fixed batch of 1 that cannot be made symbolic (${problem}); running one image at a time`);
  return { ...derive(model), fixedBatch: 1 };
}

/** A built tap model: what a session needs besides the card. */
export interface TapBuild {
  /** The tap model's uint8 NHWC pixel input. */
  input: string;
  taps: ResolvedTap[];
  fixedBatch: number | null;
  /** The serialized tap model. */
  bytes: Uint8Array;
  /** The model's external weights (externalWeightsDigest), null when all are inside its .onnx file. */
  externalSha256: string | null;
}

/** A fresh build, with what it was built from: the sha256 of the model file as read, and its external data files (which that sha256 does not cover). */
export interface TapBuildResult extends TapBuild {
  modelSha256: string;
  external: ExternalStamp[];
}

/** Read `file` and build its tap model, serialized (see buildTapModel). */
export async function buildTapBytes(file: string, card: ModelCard, taps: TapRequest[], spec: string, onNotice: (msg: string) => void = () => {}): Promise<TapBuildResult> {
  const loaded = await readOnnxFile(file);
  const { model, taps: resolved, fixedBatch } = await buildTapModel(loaded.model, card, taps, spec, onNotice);
  const externalSha256 = externalWeightsDigest(loaded.file, loaded.external);
  return { input: PIXEL_INPUT, taps: resolved, fixedBatch, bytes: serializeModel(model), externalSha256, modelSha256: loaded.sha256, external: loaded.external };
}
