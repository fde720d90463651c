/**
 * The fast kernel for the heads' heavy products: C = op(A)·op(B) (+ bias row) in float32.
 *
 * Large products go through onnxruntime-node: a one-node Gemm graph (built with src/onnx/builder.ts,
 * symbolic dims, one session per transA/transB/bias variant, created once per process and reused).
 * ORT's MLAS Gemm runs at tens to hundreds of GFLOP/s on 1-2 threads, against ~1-4 GFLOP/s for
 * JavaScript loops. Each ORT call costs a fixed overhead (an async hop plus copying the output
 * out of native memory, ~30-80 µs measured here), so tiny products use a plain loop instead: the
 * crossover (`SMALL_FLOPS`) was measured with scripts/bench-heads.ts `--kernel` (~8-14k multiply-adds).
 *
 * Inputs are never copied on the JS side: ORT wraps the Float32Array's memory directly.
 */
import os from 'node:os';
import ort from '../../model/ort.js';
import { node, valueInfo, makeModel, emptyGraph } from '../../onnx/builder.js';
import { DataType } from '../../onnx/proto.js';
import { serializeModel } from '../../onnx/io.js';

/**
 * Products with m·k·n below this run in a JS loop. Measured here (`node dist/scripts/bench-heads.js
 * --kernel`, 2 threads): square 16³ JS 16 µs vs ORT 20 µs; 24³ JS 42 µs vs ORT 21 µs.
 */
export const SMALL_FLOPS = 8192;

const sessions = new Map<string, Promise<ort.InferenceSession>>();

/**
 * Below this many multiply-adds a product runs on ONE ORT thread: the thread-pool hand-off costs more
 * than it saves (measured on 245×1280×2 logistic-regression evaluations: 1 thread 35% faster).
 */
export const SINGLE_THREAD_FLOPS = 1 << 21;
let threads = Math.max(1, Number(process.env.XFER_THREADS) || Math.min(os.availableParallelism?.() ?? os.cpus().length, 4));

/** Set ORT's intra-op thread count for sessions created from now on (drops cached sessions). */
export function setKernelThreads(n: number): void {
  threads = Math.max(1, Math.floor(n));
  sessions.clear();
}

export function kernelThreads(): number {
  return threads;
}

function buildGemm(ta: boolean, tb: boolean, bias: boolean): Uint8Array {
  const g = emptyGraph('xfer_gemm');
  g.input.push(valueInfo('A', DataType.FLOAT, ta ? ['k', 'm'] : ['m', 'k']));
  g.input.push(valueInfo('B', DataType.FLOAT, tb ? ['n', 'k'] : ['k', 'n']));
  const inputs = ['A', 'B'];
  if (bias) {
    g.input.push(valueInfo('C', DataType.FLOAT, ['n']));
    inputs.push('C');
  }
  g.output.push(valueInfo('Y', DataType.FLOAT, ['m', 'n']));
  g.node.push(node('Gemm', inputs, ['Y'], { transA: ta ? 1 : 0, transB: tb ? 1 : 0 }));
  return serializeModel(makeModel(g, { opset: 13 }));
}

function session(ta: boolean, tb: boolean, bias: boolean, nThreads: number): Promise<ort.InferenceSession> {
  const key = `${ta ? 1 : 0}${tb ? 1 : 0}${bias ? 1 : 0}@${nThreads}`;
  let s = sessions.get(key);
  if (!s) {
    s = ort.InferenceSession.create(buildGemm(ta, tb, bias), {
      intraOpNumThreads: nThreads,
      interOpNumThreads: 1,
      executionMode: 'sequential',
      graphOptimizationLevel: 'all',
      enableCpuMemArena: true,
      // no busy-waiting between calls: the heads interleave JS work with many short products
      extra: { session: { intra_op: { allow_spinning: '0' } } },
    });
    sessions.set(key, s);
  }
  return s;
}

export interface GemmOpts {
  /** Use Aᵀ: A is stored k×m. */
  ta?: boolean;
  /** Use Bᵀ: B is stored n×k. */
  tb?: boolean;
  /** Added to every row of the result (length n). */
  bias?: Float32Array;
  /** Force the path (tests, benchmarks). */
  force?: 'ort' | 'js';
}

/**
 * C[m×n] = op(A)·op(B) (+ bias). A holds m·k values (k×m if ta), B holds k·n values (n×k if tb).
 * Returns a new Float32Array (row-major m×n).
 */
export async function gemm(A: Float32Array, B: Float32Array, m: number, k: number, n: number, opts: GemmOpts = {}): Promise<Float32Array> {
  const ta = !!opts.ta;
  const tb = !!opts.tb;
  if (A.length < m * k || B.length < k * n) throw new Error(`gemm: operands too small for ${m}x${k}x${n}`);
  if (m === 0 || n === 0) return new Float32Array(m * n);
  const small = m * k * n < SMALL_FLOPS || k === 0;
  if (opts.force === 'js' || (opts.force !== 'ort' && small)) return gemmJs(A, B, m, k, n, ta, tb, opts.bias);
  const s = await session(ta, tb, !!opts.bias, m * k * n < SINGLE_THREAD_FLOPS ? 1 : threads);
  const a = A.length === m * k ? A : A.subarray(0, m * k);
  const b = B.length === k * n ? B : B.subarray(0, k * n);
  const feeds: Record<string, ort.Tensor> = {
    A: new ort.Tensor('float32', a, ta ? [k, m] : [m, k]),
    B: new ort.Tensor('float32', b, tb ? [n, k] : [k, n]),
  };
  if (opts.bias) feeds.C = new ort.Tensor('float32', opts.bias, [n]);
  const out = await s.run(feeds);
  return out.Y.data as Float32Array;
}

/** Plain-loop product (i-k-j order, so the inner loop is contiguous in B and C where possible). */
export function gemmJs(A: Float32Array, B: Float32Array, m: number, k: number, n: number, ta = false, tb = false, bias?: Float32Array): Float32Array {
  const C = new Float32Array(m * n);
  if (bias) for (let i = 0; i < m; i++) C.set(bias.subarray(0, n), i * n);
  if (!tb) {
    for (let i = 0; i < m; i++) {
      const ci = i * n;
      for (let p = 0; p < k; p++) {
        const a = ta ? A[p * m + i] : A[i * k + p];
        if (a === 0) continue;
        const bp = p * n;
        for (let j = 0; j < n; j++) C[ci + j] += a * B[bp + j];
      }
    }
  } else {
    for (let i = 0; i < m; i++) {
      const ci = i * n;
      for (let j = 0; j < n; j++) {
        const bj = j * k;
        let s = 0;
        if (ta) for (let p = 0; p < k; p++) s += A[p * m + i] * B[bj + p];
        else {
          const ai = i * k;
          for (let p = 0; p < k; p++) s += A[ai + p] * B[bj + p];
        }
        C[ci + j] += s;
      }
    }
  }
  return C;
}

const releaseHooks: (() => Promise<void>)[] = [];

/** Other session caches (kernel/graph.ts) register here so releaseKernel() frees them too. */
export function addReleaseHook(f: () => Promise<void>): void {
  releaseHooks.push(f);
}

/** Release the cached ORT sessions (lets short-lived processes exit promptly). */
export async function releaseKernel(): Promise<void> {
  const all = [...sessions.values()];
  sessions.clear();
  for (const s of all) await (await s).release();
  for (const h of releaseHooks) await h();
}
