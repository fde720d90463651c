/**
 * Batch dimension: models exported with a fixed batch of 1 get a symbolic batch ("N") when a check
 * run shows it is safe (batch-2 outputs have batch 2 and row 0 equals the batch-1 result); otherwise
 * the caller keeps batch 1 and warns.
 */
import ort from './ort.js';
import { serializeModel } from '../onnx/io.js';
import type { ModelProto, ValueInfoProto } from '../onnx/proto.js';
import { realInputs } from './graph.js';
import { dummyInput } from './probe.js';

function dim0(vi: ValueInfoProto): { dimValue?: number; dimParam?: string } | undefined {
  return vi.type?.tensorType?.shape?.dim?.[0];
}

/** True when some real input has a fixed first dimension of 1. */
export function hasFixedBatch(model: ModelProto): boolean {
  return realInputs(model.graph).some((vi) => {
    const d = dim0(vi);
    return d !== undefined && d.dimValue !== undefined && Number(d.dimValue) === 1;
  });
}

/** Copy of the model whose inputs/outputs have a symbolic first dim and no stale intermediate shapes. */
export function withSymbolicBatch(model: ModelProto): ModelProto {
  const sym = (vi: ValueInfoProto): ValueInfoProto => {
    const tt = vi.type?.tensorType;
    const dims = tt?.shape?.dim;
    if (!tt || !dims || dims.length === 0) return vi;
    return { ...vi, type: { ...vi.type, tensorType: { ...tt, shape: { dim: [{ dimParam: 'N' }, ...dims.slice(1)] } } } };
  };
  const inits = new Set(model.graph.initializer.map((t) => t.name));
  return {
    ...model,
    graph: {
      ...model.graph,
      input: model.graph.input.map((vi) => (inits.has(vi.name) ? vi : sym(vi))),
      output: model.graph.output.map(sym),
      valueInfo: [],
    },
  };
}

/**
 * Check that a symbolic-batch model really batches: run batch 1 and batch 2 (row 0 identical) and
 * compare. Returns null when safe, else the reason.
 */
export async function checkBatching(model: ModelProto): Promise<string | null> {
  let session: ort.InferenceSession | undefined;
  try {
    session = await ort.InferenceSession.create(serializeModel(model), { intraOpNumThreads: 1, logSeverityLevel: 4 });
    const ins = realInputs(model.graph);
    const one: Record<string, ort.Tensor> = {};
    const two: Record<string, ort.Tensor> = {};
    for (const vi of ins) {
      const a = dummyInput(vi, 1, 7);
      const b = dummyInput(vi, 2, 7);
      // Row 0 of the batch-2 input equals the batch-1 input (same seed, same prefix).
      one[vi.name] = a;
      two[vi.name] = b;
    }
    const r1 = await session.run(one);
    const r2 = await session.run(two);
    for (const name of Object.keys(r1)) {
      const t1 = r1[name];
      const t2 = r2[name];
      if (t2.dims[0] !== 2) return `output ${name} has batch ${t2.dims[0]} for an input batch of 2`;
      const n = t1.size;
      const d1 = t1.data as ArrayLike<number>;
      const d2 = t2.data as ArrayLike<number>;
      for (let i = 0; i < n; i++) {
        const a = Number(d1[i]);
        const b = Number(d2[i]);
        if (Math.abs(a - b) > 1e-4 * Math.max(1, Math.abs(a))) return `output ${name} row 0 changes with the batch size`;
      }
    }
    return null;
  } catch (e) {
    return (e as Error).message.split('\n')[0];
  } finally {
    await session?.release();
  }
}
