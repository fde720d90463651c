/**
 * Opening a prepared tap model (built by runner.ts) on a session: the part of a tapped backbone a
 * worker thread needs, so a worker loads onnxruntime and this file only (no ONNX parsing/building).
 */
import ort from './ort.js';
import { XferError } from '../errors.js';
import type { ModelCard } from './card.js';
import { openSession, type DeviceOptions } from './session.js';
import type { Pool, ResolvedTap } from './taps.js';

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
  /** sha256 of the model's external weights (see onnx/io.ts externalWeightsDigest); null when all are in the .onnx file. */
  externalSha256: string | null;
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

/**
 * A tap model built and serialized once, ready to be opened by any number of sessions (in this thread
 * or, structured-cloned, in worker threads): building it (parse, derive, serialize) costs more than
 * creating a session from the bytes, so a pool of sessions builds it once. A checked tap-cache entry
 * is passed as its path: each session reads the file itself (no copy through this thread).
 */
export interface PreparedBackbone {
  /** What the user named (id or path), for messages. */
  spec: string;
  id: string;
  sha256: string;
  externalSha256: string | null;
  file: string;
  card: ModelCard;
  taps: ResolvedTap[];
  fixedBatch: number | null;
  /** The tap model's uint8 NHWC pixel input. */
  input: string;
  /** The serialized tap model (uint8 NHWC pixel input, float32 tap outputs), or a file holding it. */
  model: Uint8Array | string;
}

/** Open a session on a prepared tap model; see TappedBackbone. */
export async function openPreparedBackbone(p: PreparedBackbone, device: DeviceOptions | undefined, onNotice: (msg: string) => void = () => {}): Promise<TappedBackbone> {
  // (The closures below must not hold `p`: its model bytes are not needed once the session exists.)
  const { taps, fixedBatch, card, file, spec, input } = p;
  const { session, provider } = await openSession(p.model, device, onNotice);
  const [h, w] = card.input.size;
  /** session.run, with ORT failures reported naming the model file. */
  const runSession = async (feeds: Record<string, ort.Tensor>, n: number): Promise<ort.InferenceSession.ReturnType> => {
    try {
      return await session.run(feeds);
    } catch (e) {
      throw new XferError(`${file}: model run failed on a batch of ${n} (${(e as Error).message.split('\n')[0]})`, {
        hint: `check the card's input size/layout/dtype and the tapped layers against \`xfer layers ${spec}\``,
        exitCode: 1,
        cause: e,
      });
    }
  };
  const runRaw = async (pixels: Uint8Array, n: number): Promise<Float32Array[]> => {
    const feeds = { [input]: new ort.Tensor('uint8', pixels.subarray(0, n * h * w * 3), [n, h, w, 3]) };
    const res = await runSession(feeds, n);
    return taps.map((t) => res[t.output].data as Float32Array);
  };
  // One dummy image: learn per-row output shapes (and warm the session up). Release the session if it fails.
  let probe: ort.InferenceSession.ReturnType;
  try {
    probe = await runSession({ [input]: new ort.Tensor('uint8', new Uint8Array(h * w * 3), [1, h, w, 3]) }, 1);
  } catch (e) {
    await session.release().catch(() => {});
    throw e;
  }
  const outputs: TapOutput[] = taps.map((t) => ({ name: t.tensor, pool: t.pool, shape: probe[t.output].dims.slice(1), dtype: 'float32' }));
  const rowSizes = outputs.map((o) => o.shape.reduce((a, c) => a * c, 1));
  return {
    id: p.id,
    sha256: p.sha256,
    externalSha256: p.externalSha256,
    file,
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
