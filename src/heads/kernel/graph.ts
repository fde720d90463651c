/**
 * Fused ORT graphs for the heads' inner loops (one session.run per step instead of several products
 * plus JavaScript elementwise loops): sessions are built once per key with the same options as the
 * Gemm kernel (no spinning, `kernelThreads()` intra-op threads) and reused.
 */
import ort from '../../model/ort.js';
import { serializeModel } from '../../onnx/io.js';
import type { ModelProto } from '../../onnx/proto.js';
import { addReleaseHook, kernelThreads, SINGLE_THREAD_FLOPS } from './matmul.js';

const cache = new Map<string, Promise<ort.InferenceSession>>();

/** `work` (multiply-adds per run) below SINGLE_THREAD_FLOPS uses a one-thread session. */
export function graphSession(key: string, build: () => ModelProto, work = Infinity): Promise<ort.InferenceSession> {
  const nThreads = work < SINGLE_THREAD_FLOPS ? 1 : kernelThreads();
  const k = `${key}@${nThreads}`;
  let s = cache.get(k);
  if (!s) {
    s = ort.InferenceSession.create(serializeModel(build()), {
      intraOpNumThreads: nThreads,
      interOpNumThreads: 1,
      executionMode: 'sequential',
      graphOptimizationLevel: 'all',
      extra: { session: { intra_op: { allow_spinning: '0' } } },
    });
    cache.set(k, s);
  }
  return s;
}

export function tensor(data: Float32Array, dims: number[]): ort.Tensor {
  return new ort.Tensor('float32', data, dims);
}

export async function releaseGraphs(): Promise<void> {
  const all = [...cache.values()];
  cache.clear();
  for (const s of all) await (await s).release();
}

addReleaseHook(releaseGraphs);
