/**
 * onnxruntime-node, loaded with its telemetry turned off first (util/ort-telemetry.ts). Every module
 * of xfer that uses ORT imports it from here.
 */
import '../util/ort-telemetry.js';
import * as Ort from 'onnxruntime-node';

const ort: typeof Ort = Ort;

// The types, as `ort.Tensor`, `ort.InferenceSession.ReturnType` …, beside the value.
/* eslint-disable @typescript-eslint/no-namespace -- a type-only namespace beside the value, so `ort.Tensor` stays a type */
declare namespace ort {
  export type Tensor = Ort.Tensor;
  export namespace Tensor {
    export type Type = Ort.Tensor.Type;
  }
  export type InferenceSession = Ort.InferenceSession;
  export namespace InferenceSession {
    export type SessionOptions = Ort.InferenceSession.SessionOptions;
    export type ReturnType = Ort.InferenceSession.ReturnType;
    export type ExecutionProviderConfig = Ort.InferenceSession.ExecutionProviderConfig;
  }
}
/* eslint-enable @typescript-eslint/no-namespace */

export default ort;

/**
 * A float16 tensor from its bits. Where the runtime has Float16Array (Node ≥ 23) onnxruntime-common
 * wraps a Uint16Array in a Float16Array view, whose byte length onnxruntime-node 1.30's binding reads
 * as 0 ("not enough space: expected N, got 0", microsoft/onnxruntime#32323): keep the Uint16Array.
 */
export function float16Tensor(bits: Uint16Array, dims: readonly number[]): Ort.Tensor {
  const t = new Ort.Tensor('float16', bits, dims);
  if ((t.data as unknown) !== bits) (t as unknown as { cpuData: Uint16Array }).cpuData = bits;
  return t;
}

/** The bits of a float16 tensor's data: a Uint16Array, or a Float16Array where the runtime has one (Node ≥ 23). */
export function float16Bits(t: Ort.Tensor): Uint16Array {
  const d = t.data as unknown as ArrayBufferView;
  return d instanceof Uint16Array ? d : new Uint16Array(d.buffer, d.byteOffset, d.byteLength / 2);
}
