/**
 * onnxruntime-node, loaded with its telemetry turned off first (util/ort-telemetry.ts). Every module
 * of xfer that uses ORT imports it from here.
 *
 * It is loaded with `require`: onnxruntime-node is CommonJS, and an ESM `import` of it first has
 * Node's CJS lexer parse its modules for their export names (~30 ms in each inference worker
 * while both cores are busy opening sessions; ESM import 43 ms against require 30 ms alone).
 */
import '../util/ort-telemetry.js';
import { createRequire } from 'node:module';
import type * as Ort from 'onnxruntime-node';

const ort: typeof Ort = createRequire(import.meta.url)('onnxruntime-node');

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
