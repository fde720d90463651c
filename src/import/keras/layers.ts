/**
 * One emitter per supported Keras layer class. Each reads its inputs from the context, adds ONNX
 * nodes, and returns the layer's output tensor, which is always named exactly the Keras layer name
 * (helper tensors are named `<layer>/<step>`). 4-D maps are NCHW inside the graph.
 */
import { activationOf, emitActivation } from './activations.js';
import { isSpatial, type ConvertContext, type KTensor } from './context.js';
import type { KerasLayer } from './topology.js';

type Emitter = (ctx: ConvertContext, layer: KerasLayer) => KTensor;

// ---------------------------------------------------------------- config helpers

function pair(ctx: ConvertContext, layer: KerasLayer, key: string, dflt?: [number, number]): [number, number] {
  const v = layer.config[key];
  if ((v === undefined || v === null) && dflt) return dflt;
  if (typeof v === 'number' && Number.isInteger(v)) return [v, v];
  if (Array.isArray(v) && v.length === 2 && v.every((x) => Number.isInteger(x))) return [v[0] as number, v[1] as number];
  if (Array.isArray(v) && v.length === 1 && Number.isInteger(v[0])) return [v[0] as number, v[0] as number];
  return ctx.fail(layer, `${key} ${JSON.stringify(v)} is not an integer or a pair of integers`);
}

function channelsLast(ctx: ConvertContext, layer: KerasLayer): void {
  const f = layer.config.data_format;
  if (f !== undefined && f !== null && f !== 'channels_last') ctx.fail(layer, `data_format ${JSON.stringify(f)} (only channels_last is supported)`);
}

function requireSpatial(ctx: ConvertContext, layer: KerasLayer, t: KTensor): void {
  if (!isSpatial(t)) ctx.fail(layer, `expects a 4-D (batch, height, width, channels) input, got shape [None, ${t.shape.join(', ')}]`);
}

function paddingMode(ctx: ConvertContext, layer: KerasLayer): 'valid' | 'same' {
  const p = layer.config.padding ?? 'valid';
  if (p === 'valid' || p === 'same') return p;
  return ctx.fail(layer, `padding ${JSON.stringify(p)} (only "valid" and "same" are supported)`);
}

interface Window {
  kernel: [number, number];
  strides: [number, number];
  dilations: [number, number];
  padding: 'valid' | 'same';
}

/** Output size and explicit pads [top, left, bottom, right] for TF's valid/same windows. */
function windowGeometry(inShape: (number | null)[], w: Window): { out: [number | null, number | null]; pads: [number, number, number, number] | null } {
  const out: [number | null, number | null] = [null, null];
  const before: number[] = [0, 0];
  const after: number[] = [0, 0];
  let known = true;
  for (let a = 0; a < 2; a++) {
    const n = inShape[a];
    const eff = (w.kernel[a] - 1) * w.dilations[a] + 1;
    if (n === null || n === undefined) {
      known = false;
      continue;
    }
    if (w.padding === 'valid') {
      out[a] = Math.floor((n - eff) / w.strides[a]) + 1;
    } else {
      // TF "SAME": out = ceil(n / s); total padding split with the extra pixel at the end.
      const o = Math.ceil(n / w.strides[a]);
      const total = Math.max((o - 1) * w.strides[a] + eff - n, 0);
      before[a] = Math.floor(total / 2);
      after[a] = total - before[a];
      out[a] = o;
    }
  }
  if (!known && w.padding === 'same') return { out, pads: null };
  return { out, pads: [before[0], before[1], after[0], after[1]] };
}

function windowAttrs(w: Window, pads: [number, number, number, number] | null, withDilations: boolean): Record<string, number[] | string> {
  const attrs: Record<string, number[] | string> = { kernel_shape: w.kernel, strides: w.strides };
  if (withDilations) attrs.dilations = w.dilations;
  // Unknown input size with "same": ONNX SAME_UPPER is TF's rule (extra padding at the end).
  if (pads === null) attrs.auto_pad = 'SAME_UPPER';
  else attrs.pads = pads;
  return attrs;
}

/** Name for the main op's output: the layer name, or a helper when an activation follows. */
function preActivation(ctx: ConvertContext, layer: KerasLayer, act: string): string {
  return act === 'linear' ? layer.name : ctx.fresh(`${layer.name}/preact`);
}

function finishActivation(ctx: ConvertContext, layer: KerasLayer, act: string, pre: string, out: KTensor): KTensor {
  if (act !== 'linear') emitActivation(ctx, layer, act, pre, layer.name, out);
  return out;
}

// ---------------------------------------------------------------- convolutions

function convolution(ctx: ConvertContext, layer: KerasLayer, depthwise: boolean): KTensor {
  channelsLast(ctx, layer);
  const x = ctx.input(layer);
  requireSpatial(ctx, layer, x);
  const cin = x.shape[2] ?? ctx.fail(layer, 'input channel count is unknown');
  const w: Window = {
    kernel: pair(ctx, layer, 'kernel_size'),
    strides: pair(ctx, layer, 'strides', [1, 1]),
    dilations: pair(ctx, layer, 'dilation_rate', [1, 1]),
    padding: paddingMode(ctx, layer),
  };
  const [kh, kw] = w.kernel;
  let weight: Float32Array;
  let dims: number[];
  let cout: number;
  let group: number;
  if (depthwise) {
    const dk = ctx.weight(layer, 'depthwise_kernel');
    const mult = typeof layer.config.depth_multiplier === 'number' ? layer.config.depth_multiplier : 1;
    if (dk.shape.join() !== [kh, kw, cin, mult].join()) ctx.fail(layer, `depthwise_kernel shape [${dk.shape}] does not match [${kh}, ${kw}, ${cin}, ${mult}]`);
    // TF depthwise output channel c*mult+m reads input channel c: ONNX group conv with group=cin.
    cout = cin * mult;
    group = cin;
    dims = [cout, 1, kh, kw];
    weight = new Float32Array(cout * kh * kw);
    for (let y = 0; y < kh; y++)
      for (let xx = 0; xx < kw; xx++)
        for (let c = 0; c < cin; c++)
          for (let m = 0; m < mult; m++) weight[((c * mult + m) * kh + y) * kw + xx] = dk.data[((y * kw + xx) * cin + c) * mult + m];
  } else {
    const k = ctx.weight(layer, 'kernel');
    group = typeof layer.config.groups === 'number' ? layer.config.groups : 1;
    const cinG = cin / group;
    cout = k.shape[3];
    if (k.shape.length !== 4 || k.shape[0] !== kh || k.shape[1] !== kw || k.shape[2] !== cinG) {
      ctx.fail(layer, `kernel shape [${k.shape}] does not match kernel_size [${kh}, ${kw}] and ${cinG} input channels per group`);
    }
    dims = [cout, cinG, kh, kw];
    weight = new Float32Array(cout * cinG * kh * kw);
    // Keras [kh, kw, cin/g, cout] → ONNX [cout, cin/g, kh, kw]
    for (let y = 0; y < kh; y++)
      for (let xx = 0; xx < kw; xx++)
        for (let i = 0; i < cinG; i++)
          for (let o = 0; o < cout; o++) weight[((o * cinG + i) * kh + y) * kw + xx] = k.data[((y * kw + xx) * cinG + i) * cout + o];
  }
  const inputs = [x.name, ctx.constFloat(`${layer.name}/${depthwise ? 'depthwise_kernel' : 'kernel'}`, dims, weight)];
  if (layer.config.use_bias !== false) {
    const b = ctx.weight(layer, 'bias');
    if (b.data.length !== cout) ctx.fail(layer, `bias has ${b.data.length} values, expected ${cout}`);
    inputs.push(ctx.constFloat(`${layer.name}/bias`, [cout], b.data));
  }
  const { out, pads } = windowGeometry(x.shape, w);
  const act = activationOf(ctx, layer);
  const pre = preActivation(ctx, layer, act);
  ctx.add('Conv', inputs, [pre], { ...windowAttrs(w, pads, true), group });
  return finishActivation(ctx, layer, act, pre, { name: layer.name, shape: [out[0], out[1], cout] });
}

// ---------------------------------------------------------------- normalisation, activations

const batchNorm: Emitter = (ctx, layer) => {
  const x = ctx.input(layer);
  const rank = x.shape.length + 1;
  const axisRaw = Array.isArray(layer.config.axis) ? (layer.config.axis.length === 1 ? layer.config.axis[0] : NaN) : (layer.config.axis ?? -1);
  const axis = typeof axisRaw === 'number' && axisRaw < 0 ? axisRaw + rank : axisRaw;
  if (axis !== rank - 1) ctx.fail(layer, `normalises axis ${JSON.stringify(layer.config.axis)}; only the channels (last) axis is supported`);
  const c = x.shape[x.shape.length - 1] ?? ctx.fail(layer, 'channel count is unknown');
  const eps = typeof layer.config.epsilon === 'number' ? layer.config.epsilon : 1e-3;
  const mean = ctx.weight(layer, 'moving_mean').data;
  const variance = ctx.weight(layer, 'moving_variance').data;
  const gamma = layer.config.scale === false ? new Float32Array(c).fill(1) : ctx.weight(layer, 'gamma').data;
  const beta = layer.config.center === false ? new Float32Array(c) : ctx.weight(layer, 'beta').data;
  for (const [n, v] of [['moving_mean', mean], ['moving_variance', variance], ['gamma', gamma], ['beta', beta]] as const) {
    if (v.length !== c) ctx.fail(layer, `${n} has ${v.length} values, expected ${c}`);
  }
  const out: KTensor = { name: layer.name, shape: x.shape.slice() };
  if (rank === 4 || rank === 2) {
    // Channels are axis 1 for NCHW maps and for [N, C] vectors: the ONNX op applies directly.
    const ins = [x.name, ctx.constFloat(`${layer.name}/gamma`, [c], gamma), ctx.constFloat(`${layer.name}/beta`, [c], beta), ctx.constFloat(`${layer.name}/moving_mean`, [c], mean), ctx.constFloat(`${layer.name}/moving_variance`, [c], variance)];
    ctx.add('BatchNormalization', ins, [layer.name], {}, { epsilon: eps });
    return out;
  }
  // Other ranks (channels last, not axis 1): y = x * a + b with a broadcast over the last axis.
  const a = new Float32Array(c);
  const b = new Float32Array(c);
  for (let i = 0; i < c; i++) {
    a[i] = gamma[i] / Math.sqrt(variance[i] + eps);
    b[i] = beta[i] - mean[i] * a[i];
  }
  const mul = ctx.fresh(`${layer.name}/scaled`);
  ctx.add('Mul', [x.name, ctx.constFloat(`${layer.name}/scale`, [c], a)], [mul]);
  ctx.add('Add', [mul, ctx.constFloat(`${layer.name}/shift`, [c], b)], [layer.name]);
  return out;
};

const relu: Emitter = (ctx, layer) => {
  const x = ctx.input(layer);
  const num = (k: string, d: number | null): number | null => {
    const v = layer.config[k];
    if (v === undefined || v === null) return d;
    if (typeof v !== 'number' || !Number.isFinite(v)) return ctx.fail(layer, `${k} ${JSON.stringify(v)} is not a number`);
    return v;
  };
  const maxValue = num('max_value', null);
  const slope = num('negative_slope', 0) as number;
  const threshold = num('threshold', 0) as number;
  const out: KTensor = { name: layer.name, shape: x.shape.slice() };
  if (slope === 0 && threshold === 0) {
    if (maxValue === null) ctx.add('Relu', [x.name], [layer.name]);
    else ctx.add('Clip', [x.name, ctx.constFloat(`${layer.name}/clip_min`, [], [0]), ctx.constFloat(`${layer.name}/clip_max`, [], [maxValue])], [layer.name]);
    return out;
  }
  const body = maxValue === null ? layer.name : ctx.fresh(`${layer.name}/uncapped`);
  if (threshold === 0) {
    ctx.add('LeakyRelu', [x.name], [body], {}, { alpha: slope });
  } else {
    // x >= threshold ? x : slope * (x - threshold)
    const thr = ctx.constFloat(`${layer.name}/threshold`, [], [threshold]);
    const cond = ctx.fresh(`${layer.name}/above`);
    ctx.add('GreaterOrEqual', [x.name, thr], [cond]);
    const shifted = ctx.fresh(`${layer.name}/shifted`);
    ctx.add('Sub', [x.name, thr], [shifted]);
    const low = ctx.fresh(`${layer.name}/below`);
    ctx.add('Mul', [shifted, ctx.constFloat(`${layer.name}/negative_slope`, [], [slope])], [low]);
    ctx.add('Where', [cond, x.name, low], [body]);
  }
  if (maxValue !== null) ctx.add('Clip', [body, '', ctx.constFloat(`${layer.name}/clip_max`, [], [maxValue])], [layer.name]);
  return out;
};

const activation: Emitter = (ctx, layer) => {
  const x = ctx.input(layer);
  const out: KTensor = { name: layer.name, shape: x.shape.slice() };
  emitActivation(ctx, layer, activationOf(ctx, layer), x.name, layer.name, x);
  return out;
};

const identity: Emitter = (ctx, layer) => {
  const x = ctx.input(layer);
  ctx.add('Identity', [x.name], [layer.name]);
  return { name: layer.name, shape: x.shape.slice() };
};

// ---------------------------------------------------------------- merges

function merge(op: string): Emitter {
  return (ctx, layer) => {
    const xs = ctx.inputs(layer);
    if (xs.length < 2) ctx.fail(layer, `needs at least 2 inputs, got ${xs.length}`);
    const rank = xs[0].shape.length;
    if (xs.some((t) => t.shape.length !== rank)) ctx.fail(layer, 'inputs have different ranks');
    const shape = xs[0].shape.map((_, i) => {
      const ds = xs.map((t) => t.shape[i]).filter((d): d is number => d !== null && d !== 1);
      return ds.length > 0 ? ds[0] : xs.every((t) => t.shape[i] === 1) ? 1 : null;
    });
    if (op === 'Mul') {
      // ONNX Mul is binary: chain it.
      let acc = xs[0].name;
      for (let i = 1; i < xs.length; i++) {
        const o = i === xs.length - 1 ? layer.name : ctx.fresh(`${layer.name}/product${i}`);
        ctx.add('Mul', [acc, xs[i].name], [o]);
        acc = o;
      }
    } else {
      ctx.add(op, xs.map((t) => t.name), [layer.name]);
    }
    return { name: layer.name, shape };
  };
}

const subtract: Emitter = (ctx, layer) => {
  const xs = ctx.inputs(layer);
  if (xs.length !== 2) ctx.fail(layer, `needs exactly 2 inputs, got ${xs.length}`);
  ctx.add('Sub', [xs[0].name, xs[1].name], [layer.name]);
  return { name: layer.name, shape: xs[0].shape.slice() };
};

const concatenate: Emitter = (ctx, layer) => {
  const xs = ctx.inputs(layer);
  const rank = xs[0].shape.length + 1;
  if (xs.some((t) => t.shape.length + 1 !== rank)) ctx.fail(layer, 'inputs have different ranks');
  const raw = typeof layer.config.axis === 'number' ? layer.config.axis : -1;
  const axis = raw < 0 ? raw + rank : raw;
  if (axis <= 0 || axis >= rank) ctx.fail(layer, `axis ${raw} is out of range or the batch axis`);
  // NHWC axis → NCHW axis for maps.
  const onnxAxis = rank === 4 ? [0, 2, 3, 1][axis] : axis;
  const shape = xs[0].shape.slice();
  const k = axis - 1;
  shape[k] = xs.every((t) => t.shape[k] !== null) ? xs.reduce((a, t) => a + (t.shape[k] as number), 0) : null;
  ctx.add('Concat', xs.map((t) => t.name), [layer.name], { axis: onnxAxis });
  return { name: layer.name, shape };
};

// ---------------------------------------------------------------- padding, pooling

const zeroPadding: Emitter = (ctx, layer) => {
  channelsLast(ctx, layer);
  const x = ctx.input(layer);
  requireSpatial(ctx, layer, x);
  const p = layer.config.padding ?? 1;
  let t: number, b: number, l: number, r: number;
  if (typeof p === 'number') [t, b, l, r] = [p, p, p, p];
  else if (Array.isArray(p) && p.length === 2 && p.every((v) => typeof v === 'number')) [t, b, l, r] = [p[0], p[0], p[1], p[1]] as number[];
  else if (Array.isArray(p) && p.length === 2 && p.every((v) => Array.isArray(v) && v.length === 2)) [[t, b], [l, r]] = p as number[][];
  else return ctx.fail(layer, `padding ${JSON.stringify(p)} is not understood`);
  const pads = ctx.constInt64(`${layer.name}/pads`, [8], [0, 0, t, l, 0, 0, b, r]);
  ctx.add('Pad', [x.name, pads], [layer.name], { mode: 'constant' });
  const [h, w, c] = x.shape;
  return { name: layer.name, shape: [h === null ? null : h + t + b, w === null ? null : w + l + r, c] };
};

function pooling(op: 'AveragePool' | 'MaxPool'): Emitter {
  return (ctx, layer) => {
    channelsLast(ctx, layer);
    const x = ctx.input(layer);
    requireSpatial(ctx, layer, x);
    const kernel = pair(ctx, layer, 'pool_size', [2, 2]);
    const w: Window = { kernel, strides: pair(ctx, layer, 'strides', kernel), dilations: [1, 1], padding: paddingMode(ctx, layer) };
    const { out, pads } = windowGeometry(x.shape, w);
    const attrs: Record<string, number[] | string | number> = windowAttrs(w, pads, false);
    // TF averages only over real (unpadded) pixels.
    if (op === 'AveragePool') attrs.count_include_pad = 0;
    ctx.add(op, [x.name], [layer.name], attrs);
    return { name: layer.name, shape: [out[0], out[1], x.shape[2]] };
  };
}

function globalPooling(op: 'GlobalAveragePool' | 'GlobalMaxPool'): Emitter {
  return (ctx, layer) => {
    channelsLast(ctx, layer);
    const x = ctx.input(layer);
    requireSpatial(ctx, layer, x);
    const c = x.shape[2];
    if (layer.config.keepdims === true) {
      ctx.add(op, [x.name], [layer.name]);
      return { name: layer.name, shape: [1, 1, c] };
    }
    const pooled = ctx.fresh(`${layer.name}/pooled`);
    ctx.add(op, [x.name], [pooled]);
    ctx.add('Flatten', [pooled], [layer.name], { axis: 1 });
    return { name: layer.name, shape: [c] };
  };
}

// ---------------------------------------------------------------- dense, reshaping

const dense: Emitter = (ctx, layer) => {
  const x = ctx.input(layer);
  if (isSpatial(x)) ctx.fail(layer, 'Dense on a 4-D map is not supported', 'add a Flatten or GlobalAveragePooling2D before it');
  const k = ctx.weight(layer, 'kernel');
  const inDim = x.shape[x.shape.length - 1];
  if (k.shape.length !== 2 || (inDim !== null && k.shape[0] !== inDim)) ctx.fail(layer, `kernel shape [${k.shape}] does not match ${inDim} input features`);
  const units = k.shape[1];
  const act = activationOf(ctx, layer);
  const pre = preActivation(ctx, layer, act);
  const w = ctx.constFloat(`${layer.name}/kernel`, k.shape, k.data);
  if (layer.config.use_bias !== false) {
    const b = ctx.weight(layer, 'bias');
    const mm = ctx.fresh(`${layer.name}/matmul`);
    ctx.add('MatMul', [x.name, w], [mm]);
    ctx.add('Add', [mm, ctx.constFloat(`${layer.name}/bias`, [units], b.data)], [pre]);
  } else {
    ctx.add('MatMul', [x.name, w], [pre]);
  }
  return finishActivation(ctx, layer, act, pre, { name: layer.name, shape: [...x.shape.slice(0, -1), units] });
};

/** Bring a map back to NHWC (Keras memory order) before a reshape-like op. */
function toNhwc(ctx: ConvertContext, layer: KerasLayer, x: KTensor): string {
  if (!isSpatial(x)) return x.name;
  const t = ctx.fresh(`${layer.name}/nhwc`);
  ctx.add('Transpose', [x.name], [t], { perm: [0, 2, 3, 1] });
  return t;
}

const flatten: Emitter = (ctx, layer) => {
  channelsLast(ctx, layer);
  const x = ctx.input(layer);
  const size = x.shape.every((d) => d !== null) ? (x.shape as number[]).reduce((a, b) => a * b, 1) : null;
  // Keras flattens in NHWC order: transpose back first.
  ctx.add('Flatten', [toNhwc(ctx, layer, x)], [layer.name], { axis: 1 });
  return { name: layer.name, shape: [size] };
};

const reshape: Emitter = (ctx, layer) => {
  const x = ctx.input(layer);
  const target = layer.config.target_shape;
  if (!Array.isArray(target) || !target.every((d) => Number.isInteger(d) && (d > 0 || d === -1)) || target.filter((d) => d === -1).length > 1) {
    return ctx.fail(layer, `target_shape ${JSON.stringify(target)} is not a list of positive integers (one -1 allowed)`);
  }
  const dims = target as number[];
  const total = x.shape.every((d) => d !== null) ? (x.shape as number[]).reduce((a, b) => a * b, 1) : null;
  const known = dims.filter((d) => d > 0).reduce((a, b) => a * b, 1);
  const shape: (number | null)[] = dims.map((d) => (d === -1 ? (total === null ? null : total / known) : d));
  if (total !== null && shape.every((d) => d !== null) && (shape as number[]).reduce((a, b) => a * b, 1) !== total) {
    ctx.fail(layer, `cannot reshape ${total} values to ${JSON.stringify(target)}`);
  }
  const shapeConst = ctx.constInt64(`${layer.name}/shape`, [dims.length + 1], [0, ...dims]);
  const src = toNhwc(ctx, layer, x);
  const out: KTensor = { name: layer.name, shape };
  if (isSpatial(out)) {
    const r = ctx.fresh(`${layer.name}/nhwc_out`);
    ctx.add('Reshape', [src, shapeConst], [r]);
    ctx.add('Transpose', [r], [layer.name], { perm: [0, 3, 1, 2] });
  } else {
    ctx.add('Reshape', [src, shapeConst], [layer.name]);
  }
  return out;
};

// ---------------------------------------------------------------- registry

export const LAYER_EMITTERS: Record<string, Emitter> = {
  Conv2D: (ctx, l) => convolution(ctx, l, false),
  DepthwiseConv2D: (ctx, l) => convolution(ctx, l, true),
  BatchNormalization: batchNorm,
  ReLU: relu,
  Activation: activation,
  Add: merge('Sum'),
  Multiply: merge('Mul'),
  Average: merge('Mean'),
  Maximum: merge('Max'),
  Minimum: merge('Min'),
  Subtract: subtract,
  Concatenate: concatenate,
  ZeroPadding2D: zeroPadding,
  AveragePooling2D: pooling('AveragePool'),
  MaxPooling2D: pooling('MaxPool'),
  GlobalAveragePooling2D: globalPooling('GlobalAveragePool'),
  GlobalMaxPooling2D: globalPooling('GlobalMaxPool'),
  Dense: dense,
  Dropout: identity,
  SpatialDropout2D: identity,
  GaussianNoise: identity,
  GaussianDropout: identity,
  Flatten: flatten,
  Reshape: reshape,
};
