/**
 * Where onnxruntime-node's native binaries are and whether its CUDA provider is installed. Kept apart
 * from session.ts so callers that only plan (extract's inference plan) do not load onnxruntime.
 */
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import path from 'node:path';
import os from 'node:os';

/** Folder holding onnxruntime-node's native binaries for this platform. */
export function ortBinaryDir(): string {
  if (process.env.XFER_ORT_BIN_DIR) return process.env.XFER_ORT_BIN_DIR;
  const require = createRequire(import.meta.url);
  const pkg = path.dirname(require.resolve('onnxruntime-node/package.json'));
  return path.join(pkg, 'bin', 'napi-v6', process.platform, os.arch());
}

/** Whether onnxruntime-node's CUDA provider library is installed (it is not bundled in the npm package). */
export function cudaProviderInstalled(binDir = ortBinaryDir()): boolean {
  const lib = process.platform === 'win32' ? 'onnxruntime_providers_cuda.dll' : 'libonnxruntime_providers_cuda.so';
  return existsSync(path.join(binDir, lib));
}
