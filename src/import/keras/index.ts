/** tfjs-layers (Keras) → ONNX importer and the nsfwjs built-in backbones. */
export { parseJsLiteral, type JsLiteral } from './literal.js';
export { extractBundledLiteral, extractModelJson, extractShardBytes } from './bundle.js';
export { parseTopology, type KerasGraph, type KerasLayer, type TfjsModelJson } from './topology.js';
export { decodeWeights, decodeWeight, weightByteLength, checkManifest, type WeightGroup, type WeightSpec, type WeightTensor, type WeightQuantization } from './weights.js';
export { kerasGraphToOnnx, convertTfjsLayersModel, supportedLayerTypes, type KerasConvertOptions } from './convert.js';
export { builtinOnnxPath, nsfwjsModelDir, nsfwjsSourceHash, convertNsfwjsDir, BUILTIN_KERAS_MODELS, NSFWJS_VERSION, KERAS_CONVERTER_VERSION, type BuiltinKerasModel, type BuiltinOptions } from './nsfwjs.js';
export { readTar, type TarEntry } from './tar.js';
