/**
 * Whether this onnxruntime build has MLAS's NCHWc (blocked-channel) CPU kernels, and their block:
 * a ReorderInput of 4 channels pads them up to one block. 0 where the ops are missing or unblocked
 * (then the training graph keeps plain Conv ops).
 */
import ort from '../model/ort.js';
import { openSession } from '../model/session.js';
import { cudaProviderInstalled } from '../model/provider.js';
import { parseDevice } from '../model/device.js';
import { makeModel, node, valueInfo } from '../onnx/builder.js';
import { DataType } from '../onnx/proto.js';
import { serializeModel } from '../onnx/io.js';
import { NCHWC_DOMAIN } from './emit.js';

let probe: Promise<number> | undefined;

async function measure(): Promise<number> {
  const reorder = { ...node('ReorderInput', ['x'], ['y']), domain: NCHWC_DOMAIN };
  const m = makeModel({ name: 'nchwc-probe', node: [reorder], initializer: [], input: [valueInfo('x', DataType.FLOAT, [1, 4, 1, 1])], output: [valueInfo('y', DataType.FLOAT, null)], valueInfo: [] });
  m.opsetImport.push({ domain: NCHWC_DOMAIN, version: 1 });
  try {
    const { session } = await openSession(serializeModel(m), { device: 'cpu', threads: 1 });
    try {
      const out = await session.run({ x: new ort.Tensor('float32', new Float32Array(4), [1, 4, 1, 1]) });
      const block = Number(out.y.dims[1]);
      return block > 4 ? block : 0;
    } finally {
      await session.release();
    }
  } catch {
    return 0;
  }
}

/** MLAS's NCHWc channel block on this machine (8 with AVX2, 16 with AVX-512), or 0 without NCHWc kernels. */
export function nchwcBlock(): Promise<number> {
  probe ??= measure();
  return probe;
}

/** The NCHWc block to build a training graph with for `device`: only when its session will run on the CPU. */
export async function nchwcBlockFor(device: string | undefined): Promise<number> {
  const d = parseDevice(device ?? 'auto');
  if (d.kind === 'cuda' || (d.kind === 'auto' && cudaProviderInstalled())) return 0;
  return nchwcBlock();
}
