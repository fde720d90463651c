/** Decoders for the builtin-options tables of the operators the converter supports. */
import type { FlatReader } from './flatbuf.js';
import { Field } from './schema.js';

export interface ConvOptions {
  padding: number;
  strideH: number;
  strideW: number;
  dilationH: number;
  dilationW: number;
  activation: number;
  /** Depthwise only. */
  depthMultiplier: number;
}

export interface PoolOptions {
  padding: number;
  strideH: number;
  strideW: number;
  filterH: number;
  filterW: number;
  activation: number;
}

export function convOptions(r: FlatReader, t: number): ConvOptions {
  const C = Field.Conv2DOptions;
  if (!t) return { padding: 0, strideH: 1, strideW: 1, dilationH: 1, dilationW: 1, activation: 0, depthMultiplier: 1 };
  return {
    padding: r.i8(t, C.padding),
    strideW: r.i32(t, C.stride_w, 1),
    strideH: r.i32(t, C.stride_h, 1),
    activation: r.i8(t, C.fused_activation_function),
    dilationW: r.i32(t, C.dilation_w_factor, 1),
    dilationH: r.i32(t, C.dilation_h_factor, 1),
    depthMultiplier: 1,
  };
}

export function depthwiseOptions(r: FlatReader, t: number): ConvOptions {
  const D = Field.DepthwiseConv2DOptions;
  if (!t) return { padding: 0, strideH: 1, strideW: 1, dilationH: 1, dilationW: 1, activation: 0, depthMultiplier: 1 };
  return {
    padding: r.i8(t, D.padding),
    strideW: r.i32(t, D.stride_w, 1),
    strideH: r.i32(t, D.stride_h, 1),
    depthMultiplier: r.i32(t, D.depth_multiplier, 1),
    activation: r.i8(t, D.fused_activation_function),
    dilationW: r.i32(t, D.dilation_w_factor, 1),
    dilationH: r.i32(t, D.dilation_h_factor, 1),
  };
}

export function poolOptions(r: FlatReader, t: number): PoolOptions {
  const P = Field.Pool2DOptions;
  if (!t) return { padding: 0, strideH: 1, strideW: 1, filterH: 1, filterW: 1, activation: 0 };
  return {
    padding: r.i8(t, P.padding),
    strideW: r.i32(t, P.stride_w, 1),
    strideH: r.i32(t, P.stride_h, 1),
    filterW: r.i32(t, P.filter_width, 1),
    filterH: r.i32(t, P.filter_height, 1),
    activation: r.i8(t, P.fused_activation_function),
  };
}

export function fullyConnectedOptions(r: FlatReader, t: number): { activation: number; weightsFormat: number; keepNumDims: boolean } {
  const F = Field.FullyConnectedOptions;
  if (!t) return { activation: 0, weightsFormat: 0, keepNumDims: false };
  return { activation: r.i8(t, F.fused_activation_function), weightsFormat: r.i8(t, F.weights_format), keepNumDims: r.bool(t, F.keep_num_dims) };
}

export function softmaxBeta(r: FlatReader, t: number): number {
  return t ? r.f32(t, Field.SoftmaxOptions.beta, 1) : 1;
}

export function concatOptions(r: FlatReader, t: number): { axis: number; activation: number } {
  const C = Field.ConcatenationOptions;
  return t ? { axis: r.i32(t, C.axis), activation: r.i8(t, C.fused_activation_function) } : { axis: 0, activation: 0 };
}

/** AddOptions and MulOptions both hold just the fused activation in slot 0. */
export function binaryActivation(r: FlatReader, t: number): number {
  return t ? r.i8(t, Field.AddOptions.fused_activation_function) : 0;
}

export function reshapeNewShape(r: FlatReader, t: number): number[] | null {
  return t ? r.i32Vector(t, Field.ReshapeOptions.new_shape, 'reshape new_shape') : null;
}

export function reducerKeepDims(r: FlatReader, t: number): boolean {
  return t ? r.bool(t, Field.ReducerOptions.keep_dims) : false;
}

export function squeezeDims(r: FlatReader, t: number): number[] {
  return (t ? r.i32Vector(t, Field.SqueezeOptions.squeeze_dims, 'squeeze dims') : null) ?? [];
}
