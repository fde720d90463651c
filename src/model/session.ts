/**
 * onnxruntime-node sessions and execution-provider selection. ORT does not fall back from CUDA to CPU
 * by itself (a session created with ['cuda','cpu'] throws when the CUDA provider library is absent),
 * so xfer decides: `auto` uses CUDA when its provider library is installed and loads, else CPU with a
 * one-line notice; `cuda[:id]` fails with an actionable message when it cannot be used.
 */
import ort from './ort.js';
import { XferError } from '../errors.js';
import { cudaProviderInstalled, ortBinaryDir } from './provider.js';
import { CUDA_SETUP_HINT, parseDevice, type DeviceOptions } from './device.js';

export { CUDA_SETUP_HINT, parseDevice, type DeviceOptions, type DeviceSpec } from './device.js';

export interface OpenedSession {
  session: ort.InferenceSession;
  provider: 'cpu' | 'cuda';
  deviceId: number;
}

export { ortBinaryDir, cudaProviderInstalled };

function cudaProvider(id: number, opts: DeviceOptions): ort.InferenceSession.ExecutionProviderConfig {
  const cfg: Record<string, unknown> = { name: 'cuda', deviceId: id };
  const search = opts.cudnnAlgoSearch ?? 'HEURISTIC';
  cfg.cudnnConvAlgoSearch = search;
  if (opts.cudaMemLimit !== undefined) cfg.gpuMemLimit = opts.cudaMemLimit;
  return cfg as unknown as ort.InferenceSession.ExecutionProviderConfig;
}

function baseOptions(opts: DeviceOptions): ort.InferenceSession.SessionOptions {
  const so: ort.InferenceSession.SessionOptions = { graphOptimizationLevel: 'all' };
  if (!opts.spinning) so.extra = { session: { intra_op: { allow_spinning: '0' }, inter_op: { allow_spinning: '0' } } };
  if (opts.threads !== undefined) {
    if (!Number.isInteger(opts.threads) || opts.threads < 1) throw new XferError(`--threads: expected a positive integer, got ${opts.threads}`);
    so.intraOpNumThreads = opts.threads;
    so.interOpNumThreads = 1;
  }
  return so;
}

/**
 * Create a session on the requested device. `onNotice` receives one-line notices (e.g. "CUDA not
 * installed; using CPU"). The CUDA provider's own failure message is kept in the error.
 */
export async function openSession(model: Uint8Array | string, opts: DeviceOptions = {}, onNotice: (msg: string) => void = () => {}): Promise<OpenedSession> {
  const dev = parseDevice(opts.device ?? 'auto');
  const so = baseOptions(opts);
  if (dev.kind === 'cpu') return { session: await createCpu(model, so), provider: 'cpu', deviceId: 0 };
  const installed = cudaProviderInstalled();
  if (dev.kind === 'cuda' && !installed) {
    throw new XferError(`--device ${opts.device}: onnxruntime-node's CUDA execution provider is not installed (no libonnxruntime_providers_cuda in ${ortBinaryDir()})`, {
      hint: CUDA_SETUP_HINT,
    });
  }
  // auto without the CUDA provider: no GPU was asked for or found, so CPU is simply the default
  // (the CLI says so under --verbose).
  if (dev.kind === 'auto' && !installed) {
    return { session: await createCpu(model, so), provider: 'cpu', deviceId: 0 };
  }
  try {
    // ORT prints its own provider-load failure; xfer reports it (once, with a hint) instead.
    const session = await create(model, { ...so, logSeverityLevel: 4, executionProviders: [cudaProvider(dev.id, opts), 'cpu'] });
    return { session, provider: 'cuda', deviceId: dev.id };
  } catch (e) {
    const reason = (e as Error).message.split('\n')[0];
    if (dev.kind === 'cuda') {
      throw new XferError(`--device ${opts.device}: the CUDA execution provider failed to start: ${reason}`, {
        hint: 'check `nvidia-smi`, that CUDA 12 + cuDNN 9 libraries are on LD_LIBRARY_PATH, and the device id; or use --device cpu',
        cause: e,
      });
    }
    onNotice(`device: CUDA provider failed to start (${reason}); using CPU`);
    return { session: await createCpu(model, so), provider: 'cpu', deviceId: 0 };
  }
}

function createCpu(model: Uint8Array | string, so: ort.InferenceSession.SessionOptions): Promise<ort.InferenceSession> {
  return create(model, { ...so, executionProviders: ['cpu'] });
}

async function create(model: Uint8Array | string, so: ort.InferenceSession.SessionOptions): Promise<ort.InferenceSession> {
  return typeof model === 'string' ? ort.InferenceSession.create(model, so) : ort.InferenceSession.create(model, so);
}
