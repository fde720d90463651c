/**
 * Device options and `--device` parsing: what the CLI and the extraction planner need without
 * loading onnxruntime (sessions are opened in session.ts).
 */
import { XferError } from '../errors.js';

export type DeviceSpec = 'auto' | 'cpu' | 'cuda' | `cuda:${number}`;

export interface DeviceOptions {
  device?: DeviceSpec;
  /** Intra-op threads (default: ORT's default = number of cores). */
  threads?: number;
  /** CUDA memory arena limit in bytes. */
  cudaMemLimit?: number;
  /** cuDNN convolution algorithm search; HEURISTIC by default (EXHAUSTIVE re-tunes per new shape). */
  cudnnAlgoSearch?: 'HEURISTIC' | 'EXHAUSTIVE' | 'DEFAULT';
  /**
   * Let ORT's intra-op pool threads busy-wait between ops (ORT's default). Off by default in xfer:
   * spinning threads steal the cores that decode images while a batch runs.
   */
  spinning?: boolean;
}

export const CUDA_SETUP_HINT =
  'GPU install: run `npx xfer-setup-cuda` (`npm run setup:cuda` in the xfer repository) on a machine with an NVIDIA driver, CUDA 12 and cuDNN 9; it fetches onnxruntime-node\'s CUDA 12 provider from NuGet (docs/install.md). CPU-only or firewalled: use --device cpu';

/** Parse and validate a --device value. */
export function parseDevice(value: string): { kind: 'auto' | 'cpu' | 'cuda'; id: number } {
  const m = /^(auto|cpu|cuda)(?::(\d+))?$/.exec(value.trim());
  if (!m || (m[2] !== undefined && m[1] !== 'cuda')) {
    throw new XferError(`--device: expected auto, cpu, cuda or cuda:<id>, got "${value}"`);
  }
  return { kind: m[1] as 'auto' | 'cpu' | 'cuda', id: m[2] === undefined ? 0 : Number(m[2]) };
}

