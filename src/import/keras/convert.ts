/**
 * tfjs-layers (Keras) model → ONNX ModelProto.
 *
 * The ONNX graph takes the Keras input as is: NHWC float32 `[N, H, W, C]` with a symbolic batch
 * `N`, named after the Keras InputLayer. It is transposed once to NCHW (`<input>/nchw`) and every
 * 4-D tensor after that is NCHW (channels first), the ONNX convention the rest of xfer assumes.
 * Every Keras layer's output is an ONNX tensor named exactly the Keras layer name, so any layer can
 * be tapped; a tapped 4-D layer therefore returns an NCHW map, not Keras's NHWC. Flatten and
 * Reshape transpose back to NHWC first, so flattened vectors keep Keras's element order.
 */
import { DataType, type ModelProto } from '../../onnx/proto.js';
import { emptyGraph, makeModel, valueInfo } from '../../onnx/builder.js';
import { XferError } from '../../errors.js';
import { ConvertContext, onnxDims, type KTensor } from './context.js';
import { LAYER_EMITTERS } from './layers.js';
import { parseTopology, type KerasGraph, type KerasLayer, type TfjsModelJson } from './topology.js';
import { checkManifest, decodeWeights, type WeightTensor } from './weights.js';

export interface KerasConvertOptions {
  /** Name used in error messages (the model.json path). */
  file?: string;
  /** Graph name; default the Keras model name. */
  graphName?: string;
  /** Extra ONNX metadata_props. */
  metadata?: Record<string, string>;
  docString?: string;
}

/** Layer classes the converter understands (InputLayer included). */
export function supportedLayerTypes(): string[] {
  return ['InputLayer', ...Object.keys(LAYER_EMITTERS)].sort();
}

function emitInput(ctx: ConvertContext, layer: KerasLayer, graph: ReturnType<typeof emptyGraph>): void {
  const shape = (layer.config.batch_input_shape ?? layer.config.batch_shape) as unknown;
  if (!Array.isArray(shape) || shape.length < 2 || !shape.slice(1).every((d) => d === null || (Number.isInteger(d) && (d as number) > 0))) {
    ctx.fail(layer, `batch_input_shape ${JSON.stringify(shape)} is not understood`);
  }
  const dtype = layer.config.dtype ?? 'float32';
  if (dtype !== 'float32') ctx.fail(layer, `input dtype ${JSON.stringify(dtype)} (only float32 is supported)`);
  const dims = (shape as (number | null)[]).slice(1);
  const names = ['H', 'W', 'C'];
  graph.input.push(valueInfo(layer.name, DataType.FLOAT, ['N', ...dims.map((d, i) => d ?? (dims.length === 3 ? names[i] : `d${i + 1}`))]));
  if (dims.length === 3) {
    const t = ctx.fresh(`${layer.name}/nchw`);
    ctx.add('Transpose', [layer.name], [t], { perm: [0, 3, 1, 2] });
    ctx.tensors.set(layer.name, { name: t, shape: dims });
  } else {
    ctx.tensors.set(layer.name, { name: layer.name, shape: dims });
  }
}

/** Convert a parsed Keras graph with decoded weights to an ONNX model (opset 17). */
export function kerasGraphToOnnx(kg: KerasGraph, weights: Map<string, WeightTensor>, opts: KerasConvertOptions = {}): ModelProto {
  const file = opts.file ?? '<model.json>';
  const ctx = new ConvertContext(weights, file);
  const graph = emptyGraph(opts.graphName ?? kg.name);
  for (const l of kg.layers) ctx.claim(l.name);
  for (const layer of kg.layers) {
    if (layer.className === 'InputLayer') {
      emitInput(ctx, layer, graph);
      continue;
    }
    const emit = LAYER_EMITTERS[layer.className];
    if (!emit) {
      throw new XferError(`${file}: layer ${layer.name} has unsupported Keras layer type ${layer.className}`, {
        hint: `supported layer types: ${supportedLayerTypes().join(', ')}`,
      });
    }
    const out: KTensor = emit(ctx, layer);
    if (out.name !== layer.name) throw new Error(`internal: layer ${layer.name} produced tensor ${out.name}`);
    ctx.setOutput(layer, out);
  }
  for (const name of kg.inputs) {
    if (!graph.input.some((i) => i.name === name)) throw new XferError(`${file}: model input ${name} is not an InputLayer`);
  }
  const outputNames = new Set<string>();
  for (const name of kg.outputs) {
    const t = ctx.tensors.get(name) as KTensor;
    if (t.name !== name) {
      // An input layer used directly as an output: expose it under its own name.
      throw new XferError(`${file}: model output ${name} is an input layer; nothing to convert`);
    }
    graph.output.push(valueInfo(name, DataType.FLOAT, onnxDims(t)));
    outputNames.add(name);
  }
  graph.node = ctx.nodes;
  graph.initializer = ctx.initializers;
  graph.valueInfo = ctx.valueInfos.filter((v) => !outputNames.has(v.name));
  return makeModel(graph, {
    opset: 17,
    producerName: 'xfer-import-keras',
    docString:
      opts.docString ??
      'Converted from a tfjs-layers (Keras) model by xfer. Input is NHWC float32 [N,H,W,C]; every Keras layer output is a tensor named after the layer; 4-D tensors are NCHW (channels first).',
    metadata: { 'xfer.importer': 'keras', 'xfer.input_layout': 'NHWC', 'xfer.tap_layout': 'NCHW', ...(kg.kerasVersion ? { 'xfer.keras_version': kg.kerasVersion } : {}), ...opts.metadata },
  });
}

/**
 * Convert a tfjs-layers model JSON (object with modelTopology + weightsManifest) to ONNX;
 * `readShard` returns the bytes of one weights path listed in the manifest.
 */
export async function convertTfjsLayersModel(modelJson: unknown, readShard: (p: string) => Uint8Array | Promise<Uint8Array>, opts: KerasConvertOptions = {}): Promise<ModelProto> {
  const file = opts.file ?? '<model.json>';
  if (typeof modelJson !== 'object' || modelJson === null || !('modelTopology' in modelJson)) {
    throw new XferError(`${file}: not a tfjs-layers model JSON (no modelTopology)`, { hint: 'pass the model.json written by tensorflowjs_converter --output_format tfjs_layers_model' });
  }
  const mj = modelJson as TfjsModelJson;
  if (mj.format !== undefined && mj.format !== 'layers-model') {
    throw new XferError(`${file}: format is ${JSON.stringify(mj.format)}, not a layers model`, { hint: 'tfjs graph models are not supported; export a layers model' });
  }
  const kg = parseTopology(mj.modelTopology, file);
  const manifest = checkManifest(mj.weightsManifest ?? [], file);
  const weights = await decodeWeights(manifest, readShard);
  return kerasGraphToOnnx(kg, weights, opts);
}
