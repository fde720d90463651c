/**
 * A tapped backbone ready to run: resolve the model, derive the tap model with in-graph
 * preprocessing (uint8 NHWC pixels in, float32 pooled features out), make its batch symbolic when
 * safe, and open it on the chosen execution provider.
 */
import ort from 'onnxruntime-node';
import { XferError } from '../errors.js';
import { readOnnxFile, serializeModel } from '../onnx/io.js';
import type { ModelProto } from '../onnx/proto.js';
import { pixelAffine, type ModelCard } from './card.js';
import { inferDtypes, listTensors, realInputs } from './graph.js';
import { checkBatching, hasFixedBatch, withSymbolicBatch } from './batch.js';
import { dummyInput } from './probe.js';
import { resolveBackbone, requireCard, type ResolvedBackbone } from './registry.js';
import type { CardFlags } from './card-flags.js';
import { openSession, type DeviceOptions } from './session.js';
import { deriveTapModel, PIXEL_INPUT, resolveTapName, type Pool, type ResolvedTap, type TapRequest } from './taps.js';

export type { TapRequest, Pool, DeviceOptions };

export interface TapOutput {
  /** Tensor name tapped. */
  name: string;
  pool: Pool;
  /** Per-row shape after pooling. */
  shape: number[];
  dtype: 'float32';
}

export interface TappedBackbone {
  id: string;
  sha256: string;
  file: string;
  card: ModelCard;
  outputs: TapOutput[];
  /** Fixed batch size when the model could not be given a symbolic batch, else null. */
  fixedBatch: number | null;
  provider: 'cpu' | 'cuda';
  /** Run n images given as uint8 NHWC pixels (n×H×W×3, model channel order and size); one Float32Array per output. */
  run(pixels: Uint8Array, n: number): Promise<Float32Array[]>;
  close(): Promise<void>;
}

export interface OpenOptions {
  /** The model already resolved (file, sha256, card) — skips resolving and hashing it again. */
  resolved?: ResolvedBackbone;
  card?: string;
  /** Card fields from command-line flags (see card-flags.ts). */
  cardFlags?: CardFlags;
  taps: TapRequest[];
  device?: DeviceOptions;
  onNotice?: (msg: string) => void;
}

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
  const declared = taps.map((t) => resolveTapName(t.name, tensors, file));
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
  const inputName = imageInputName(model, card, file);
  const ranks = await tapRanks(model, taps, file);
  const { scale, bias } = pixelAffine(card.input);
  let fixedBatch: number | null = null;
  const fixed = hasFixedBatch(model);
  const base = fixed ? withSymbolicBatch(model) : model;
  const derived = deriveTapModel(base, taps, {
    file,
    ranks,
    dtypes: inferDtypes(model),
    pixelInput: { inputName, layout: card.input.layout, dtype: card.input.dtype, scale, bias, height: card.input.size[0], width: card.input.size[1] },
  });
  if (fixed) {
    const problem = await checkBatching(derived.model);
    if (problem) {
      onNotice(`warning: ${file} has a fixed batch of 1 that cannot be made symbolic (${problem}); running one image at a time`);
      const one = deriveTapModel(model, taps, {
        file,
        ranks,
        dtypes: inferDtypes(model),
        pixelInput: { inputName, layout: card.input.layout, dtype: card.input.dtype, scale, bias, height: card.input.size[0], width: card.input.size[1] },
      });
      fixedBatch = 1;
      return { model: one.model, taps: one.taps, fixedBatch };
    }
  }
  return { ...derived, fixedBatch };
}

/** Open a backbone with taps; see TappedBackbone. */
export async function openTappedBackbone(spec: string, opts: OpenOptions): Promise<TappedBackbone> {
  const notice = opts.onNotice ?? (() => {});
  const b = opts.resolved ?? (await resolveBackbone(spec, { card: opts.card, cardFlags: opts.cardFlags, onNotice: notice }));
  const card = requireCard(b, 'feature extraction');
  const loaded = await readOnnxFile(b.file);
  const { model, taps, fixedBatch } = await buildTapModel(loaded.model, card, opts.taps, spec, notice);
  const { session, provider } = await openSession(serializeModel(model), opts.device, notice);
  const [h, w] = card.input.size;
  /** session.run, with ORT failures reported naming the model file. */
  const runSession = async (feeds: Record<string, ort.Tensor>, n: number): Promise<ort.InferenceSession.ReturnType> => {
    try {
      return await session.run(feeds);
    } catch (e) {
      throw new XferError(`${b.file}: model run failed on a batch of ${n} (${(e as Error).message.split('\n')[0]})`, {
        hint: `check the card's input size/layout/dtype and the tapped layers against \`xfer layers ${spec}\``,
        exitCode: 1,
        cause: e,
      });
    }
  };
  const runRaw = async (pixels: Uint8Array, n: number): Promise<Float32Array[]> => {
    const feeds = { [PIXEL_INPUT]: new ort.Tensor('uint8', pixels.subarray(0, n * h * w * 3), [n, h, w, 3]) };
    const res = await runSession(feeds, n);
    return taps.map((t) => res[t.output].data as Float32Array);
  };
  // One dummy image: learn per-row output shapes (and warm the session up). Release the session if it fails.
  let probe: ort.InferenceSession.ReturnType;
  try {
    probe = await runSession({ [PIXEL_INPUT]: new ort.Tensor('uint8', new Uint8Array(h * w * 3), [1, h, w, 3]) }, 1);
  } catch (e) {
    await session.release().catch(() => {});
    throw e;
  }
  const outputs: TapOutput[] = taps.map((t) => ({ name: t.tensor, pool: t.pool, shape: probe[t.output].dims.slice(1), dtype: 'float32' }));
  const rowSizes = outputs.map((o) => o.shape.reduce((a, c) => a * c, 1));
  return {
    id: b.id,
    sha256: b.sha256,
    file: b.file,
    card,
    outputs,
    fixedBatch,
    provider,
    async run(pixels, n) {
      if (pixels.length < n * h * w * 3) throw new Error(`run: expected ${n}×${h}×${w}×3 pixels, got ${pixels.length} bytes`);
      if (fixedBatch === null) return runRaw(pixels, n);
      const outs = rowSizes.map((r) => new Float32Array(r * n));
      for (let i = 0; i < n; i++) {
        const one = await runRaw(pixels.subarray(i * h * w * 3, (i + 1) * h * w * 3), 1);
        one.forEach((o, k) => outs[k].set(o, i * rowSizes[k]));
      }
      return outs;
    },
    async close() {
      await session.release();
    },
  };
}
