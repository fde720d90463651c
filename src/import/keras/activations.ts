/** Keras activation functions as ONNX nodes. */
import type { ConvertContext, KTensor } from './context.js';
import { isSpatial } from './context.js';
import type { KerasLayer } from './topology.js';

export const SUPPORTED_ACTIVATIONS = ['linear', 'relu', 'relu6', 'sigmoid', 'softmax', 'tanh', 'swish', 'silu', 'elu', 'selu', 'softplus', 'softsign', 'hard_sigmoid', 'exponential'] as const;

/** The activation name of a layer config (`activation` key), defaulting to linear. */
export function activationOf(ctx: ConvertContext, layer: KerasLayer, key = 'activation'): string {
  const a = layer.config[key];
  if (a === undefined || a === null) return 'linear';
  if (typeof a === 'string') return a;
  // Keras 3 may serialise activations as {class_name, config} or {module, class_name, config}.
  if (typeof a === 'object' && !Array.isArray(a) && typeof (a as { config?: unknown }).config === 'string') return (a as { config: string }).config;
  return ctx.fail(layer, `activation ${JSON.stringify(a)} is not a named activation`);
}

/** Emit `act(x)` into tensor `out` (x and out are ONNX names); `like` gives the layout for softmax. */
export function emitActivation(ctx: ConvertContext, layer: KerasLayer, act: string, x: string, out: string, like: KTensor): void {
  switch (act) {
    case 'linear':
      ctx.add('Identity', [x], [out]);
      return;
    case 'relu':
      ctx.add('Relu', [x], [out]);
      return;
    case 'relu6': {
      const lo = ctx.constFloat(`${layer.name}/clip_min`, [], [0]);
      const hi = ctx.constFloat(`${layer.name}/clip_max`, [], [6]);
      ctx.add('Clip', [x, lo, hi], [out]);
      return;
    }
    case 'sigmoid':
      ctx.add('Sigmoid', [x], [out]);
      return;
    case 'tanh':
      ctx.add('Tanh', [x], [out]);
      return;
    case 'softmax':
      // Keras softmax runs over the last (channels) axis: axis 1 in NCHW maps.
      ctx.add('Softmax', [x], [out], { axis: isSpatial(like) ? 1 : -1 });
      return;
    case 'swish':
    case 'silu': {
      const s = ctx.fresh(`${layer.name}/sigmoid`);
      ctx.add('Sigmoid', [x], [s]);
      ctx.add('Mul', [x, s], [out]);
      return;
    }
    case 'elu':
      ctx.add('Elu', [x], [out], {}, { alpha: 1 });
      return;
    case 'selu':
      ctx.add('Selu', [x], [out]);
      return;
    case 'softplus':
      ctx.add('Softplus', [x], [out]);
      return;
    case 'softsign':
      ctx.add('Softsign', [x], [out]);
      return;
    case 'hard_sigmoid':
      // Keras 2: clip(0.2 * x + 0.5, 0, 1) == ONNX HardSigmoid defaults.
      ctx.add('HardSigmoid', [x], [out]);
      return;
    case 'exponential':
      ctx.add('Exp', [x], [out]);
      return;
    default:
      ctx.fail(layer, `unsupported activation "${act}"`, `supported activations: ${SUPPORTED_ACTIVATIONS.join(', ')}`);
  }
}
