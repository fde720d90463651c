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
