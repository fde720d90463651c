/** Starting weights: the pretrained ones for the backbone part, nn.Linear's initialisation for the new classifier. */
import type { ModelProto } from '../onnx/proto.js';
import { constantsOf, readConst } from './tensors.js';
import { Rng } from './rng.js';
import type { FinetunePlan } from './plan.js';

export function initialWeights(model: ModelProto, plan: FinetunePlan, seed: number, buffers: readonly { name: string }[] = []): Map<string, Float32Array> {
  const consts = constantsOf(model);
  const out = new Map<string, Float32Array>();
  const rng = new Rng(seed);
  // PyTorch nn.Linear: kaiming_uniform(a=√5) for the weight and the bias, both U(−1/√F, 1/√F).
  const bound = 1 / Math.sqrt(plan.featureDim);
  for (const p of plan.params) {
    const n = p.shape.reduce((a, b) => a * b, 1);
    if (p.group === 'head') out.set(p.name, rng.uniform(n, -bound, bound));
    else out.set(p.name, readConst(consts.get(p.name)!).f32!.slice());
  }
  // running statistics (training with batch statistics) start at the model's
  for (const b of buffers) out.set(b.name, readConst(consts.get(b.name)!).f32!.slice());
  return out;
}
