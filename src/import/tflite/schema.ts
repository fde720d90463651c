/**
 * The parts of the TFLite schema (tensorflow/lite/schema/schema.fbs) the importer needs, as data:
 * tensor types, builtin operator codes, activation and padding enums, and the field ids (vtable slots)
 * of the tables it reads. Field id i lives at vtable offset 4 + 2*i.
 */

/** TensorType enum. */
export const TensorType = {
  FLOAT32: 0,
  FLOAT16: 1,
  INT32: 2,
  UINT8: 3,
  INT64: 4,
  STRING: 5,
  BOOL: 6,
  INT16: 7,
  COMPLEX64: 8,
  INT8: 9,
  FLOAT64: 10,
} as const;

const TENSOR_TYPE_NAMES = ['float32', 'float16', 'int32', 'uint8', 'int64', 'string', 'bool', 'int16', 'complex64', 'int8', 'float64', 'complex128', 'uint64', 'resource', 'variant', 'uint32', 'uint16', 'int4'];

export function tensorTypeName(t: number): string {
  return TENSOR_TYPE_NAMES[t] ?? `type#${t}`;
}

/** Builtin operators the converter knows by name (the enum has ~200; unknown codes print as numbers). */
export const BuiltinOp = {
  ADD: 0,
  AVERAGE_POOL_2D: 1,
  CONCATENATION: 2,
  CONV_2D: 3,
  DEPTHWISE_CONV_2D: 4,
  DEQUANTIZE: 6,
  FULLY_CONNECTED: 9,
  LOGISTIC: 14,
  MAX_POOL_2D: 17,
  MUL: 18,
  RELU: 19,
  RELU_N1_TO_1: 20,
  RELU6: 21,
  RESHAPE: 22,
  SOFTMAX: 25,
  TANH: 28,
  CUSTOM: 32,
  PAD: 34,
  MEAN: 40,
  SQUEEZE: 43,
  QUANTIZE: 114,
  HARD_SWISH: 117,
  PLACEHOLDER_FOR_GREATER_OP_CODES: 127,
} as const;

/** Names for error messages: the converter's ops plus common ones a user might meet. */
const OP_NAMES: Record<number, string> = {
  ...Object.fromEntries(Object.entries(BuiltinOp).map(([k, v]) => [v, k])),
  5: 'DEPTH_TO_SPACE',
  8: 'FLOOR',
  11: 'L2_NORMALIZATION',
  12: 'L2_POOL_2D',
  13: 'LOCAL_RESPONSE_NORMALIZATION',
  16: 'LSTM',
  23: 'RESIZE_BILINEAR',
  26: 'SPACE_TO_DEPTH',
  36: 'GATHER',
  37: 'BATCH_TO_SPACE_ND',
  38: 'SPACE_TO_BATCH_ND',
  39: 'TRANSPOSE',
  41: 'SUB',
  42: 'DIV',
  45: 'STRIDED_SLICE',
  47: 'EXP',
  49: 'SPLIT',
  53: 'CAST',
  54: 'PRELU',
  55: 'MAXIMUM',
  57: 'MINIMUM',
  60: 'PADV2',
  65: 'SLICE',
  67: 'TRANSPOSE_CONV',
  70: 'EXPAND_DIMS',
  74: 'SUM',
  75: 'SQRT',
  76: 'RSQRT',
  82: 'REDUCE_MAX',
  83: 'PACK',
  88: 'UNPACK',
  97: 'RESIZE_NEAREST_NEIGHBOR',
  98: 'LEAKY_RELU',
  99: 'SQUARED_DIFFERENCE',
  100: 'MIRROR_PAD',
  126: 'BATCH_MATMUL',
  150: 'GELU',
};

export function builtinOpName(code: number): string {
  return OP_NAMES[code] ?? `builtin op #${code}`;
}

export const Activation = { NONE: 0, RELU: 1, RELU_N1_TO_1: 2, RELU6: 3, TANH: 4, SIGN_BIT: 5 } as const;
export const Padding = { SAME: 0, VALID: 1 } as const;

/** Field ids (vtable slots) of the tables read. Unions take two slots: `<name>_type` then the value. */
export const Field = {
  Model: { version: 0, operator_codes: 1, subgraphs: 2, description: 3, buffers: 4 },
  SubGraph: { tensors: 0, inputs: 1, outputs: 2, operators: 3, name: 4 },
  Tensor: { shape: 0, type: 1, buffer: 2, name: 3, quantization: 4, is_variable: 5, sparsity: 6, shape_signature: 7 },
  QuantizationParameters: { min: 0, max: 1, scale: 2, zero_point: 3, details_type: 4, details: 5, quantized_dimension: 6 },
  OperatorCode: { deprecated_builtin_code: 0, custom_code: 1, version: 2, builtin_code: 3 },
  Operator: { opcode_index: 0, inputs: 1, outputs: 2, builtin_options_type: 3, builtin_options: 4, custom_options: 5 },
  Buffer: { data: 0, offset: 1, size: 2 },
  Conv2DOptions: { padding: 0, stride_w: 1, stride_h: 2, fused_activation_function: 3, dilation_w_factor: 4, dilation_h_factor: 5 },
  DepthwiseConv2DOptions: { padding: 0, stride_w: 1, stride_h: 2, depth_multiplier: 3, fused_activation_function: 4, dilation_w_factor: 5, dilation_h_factor: 6 },
  Pool2DOptions: { padding: 0, stride_w: 1, stride_h: 2, filter_width: 3, filter_height: 4, fused_activation_function: 5 },
  FullyConnectedOptions: { fused_activation_function: 0, weights_format: 1, keep_num_dims: 2 },
  SoftmaxOptions: { beta: 0 },
  ConcatenationOptions: { axis: 0, fused_activation_function: 1 },
  AddOptions: { fused_activation_function: 0 },
  MulOptions: { fused_activation_function: 0 },
  ReshapeOptions: { new_shape: 0 },
  ReducerOptions: { keep_dims: 0 },
  SqueezeOptions: { squeeze_dims: 0 },
} as const;
