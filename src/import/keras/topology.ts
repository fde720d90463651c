/**
 * Parses a tfjs-layers model JSON (`modelTopology.model_config`, Keras 2 "Model"/"Functional" or
 * "Sequential") into a flat, ordered layer list with resolved inbound layer names.
 */
import { XferError } from '../../errors.js';
import type { WeightGroup } from './weights.js';

export interface KerasLayer {
  name: string;
  className: string;
  config: Record<string, unknown>;
  /** Names of the layers whose outputs feed this layer (in argument order). */
  inbound: string[];
}

export interface KerasGraph {
  name: string;
  layers: KerasLayer[];
  /** Input layer names. */
  inputs: string[];
  /** Output layer names (the model's outputs, in order). */
  outputs: string[];
  kerasVersion?: string;
}

/** The parts of a tfjs `model.json` the importer uses. */
export interface TfjsModelJson {
  modelTopology: Record<string, unknown>;
  weightsManifest?: WeightGroup[];
  format?: string;
}

type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function bad(file: string, what: string): never {
  throw new XferError(`${file}: invalid tfjs-layers model JSON: ${what}`, {
    hint: 'expected a tfjs-layers (Keras) model.json with modelTopology.model_config',
  });
}

/** Resolve one inbound node (Keras 2 list form or Keras 3 `{args, kwargs}` form) to layer names. */
function inboundNames(layerName: string, nodes: unknown, file: string): string[] {
  if (nodes === undefined || nodes === null) return [];
  if (!Array.isArray(nodes)) bad(file, `layer ${layerName}: inbound_nodes is not a list`);
  if (nodes.length === 0) return [];
  if (nodes.length > 1) {
    throw new XferError(`${file}: layer ${layerName} is called ${nodes.length} times (shared layer); shared layers are not supported`, {
      hint: 'convert a model where every layer is applied once',
    });
  }
  const node = nodes[0] as unknown;
  const names: string[] = [];
  const fromHistory = (t: unknown): void => {
    // Keras 2: ["name", nodeIndex, tensorIndex, kwargs]; Keras 3: {class_name:'__keras_tensor__', config:{keras_history:[...]}}
    if (Array.isArray(t) && typeof t[0] === 'string') {
      if (typeof t[1] === 'number' && t[1] !== 0) {
        throw new XferError(`${file}: layer ${layerName} uses node ${t[1]} of shared layer ${t[0]}; shared layers are not supported`);
      }
      if (typeof t[2] === 'number' && t[2] !== 0) {
        throw new XferError(`${file}: layer ${layerName} uses output ${t[2]} of multi-output layer ${t[0]}; multi-output layers are not supported`);
      }
      names.push(t[0]);
      return;
    }
    if (isObj(t) && isObj(t.config) && Array.isArray(t.config.keras_history)) {
      fromHistory(t.config.keras_history);
      return;
    }
    if (Array.isArray(t)) {
      for (const x of t) fromHistory(x);
      return;
    }
    bad(file, `layer ${layerName}: unreadable inbound node`);
  };
  if (isObj(node) && 'args' in node) fromHistory(node.args);
  else fromHistory(node);
  return names;
}

function endpoints(v: unknown, file: string, what: string): string[] {
  if (!Array.isArray(v)) bad(file, `${what} missing`);
  // [["input_1", 0, 0]] or ["input_1", 0, 0] (single endpoint)
  if (v.length > 0 && typeof v[0] === 'string') return [v[0]];
  return v.map((e) => {
    if (!Array.isArray(e) || typeof e[0] !== 'string') bad(file, `${what} entry unreadable`);
    return e[0] as string;
  });
}

/** Parse `modelTopology` (or a bare `model_config`) into a `KerasGraph`. */
export function parseTopology(modelTopology: unknown, file = '<model.json>'): KerasGraph {
  if (!isObj(modelTopology)) bad(file, 'modelTopology is not an object');
  const modelConfig = isObj(modelTopology.model_config) ? modelTopology.model_config : modelTopology;
  const className = modelConfig.class_name;
  const kerasVersion = typeof modelTopology.keras_version === 'string' ? modelTopology.keras_version : undefined;
  if (className === 'Sequential') return parseSequential(modelConfig, file, kerasVersion);
  if (className !== 'Model' && className !== 'Functional') {
    bad(file, `model_config.class_name is ${JSON.stringify(className)} (expected Model, Functional or Sequential)`);
  }
  const config = modelConfig.config;
  if (!isObj(config) || !Array.isArray(config.layers)) bad(file, 'model_config.config.layers missing');
  const layers: KerasLayer[] = [];
  const seen = new Set<string>();
  for (const raw of config.layers) {
    if (!isObj(raw)) bad(file, 'layer entry is not an object');
    const cfg = isObj(raw.config) ? raw.config : {};
    const name = typeof raw.name === 'string' ? raw.name : typeof cfg.name === 'string' ? cfg.name : bad(file, 'layer without a name');
    const cls = typeof raw.class_name === 'string' ? raw.class_name : bad(file, `layer ${name} has no class_name`);
    if (seen.has(name)) bad(file, `duplicate layer name ${name}`);
    seen.add(name);
    layers.push({ name, className: cls, config: cfg, inbound: inboundNames(name, raw.inbound_nodes, file) });
  }
  const graph: KerasGraph = {
    name: typeof config.name === 'string' ? config.name : 'model',
    layers: topoSort(layers, file),
    inputs: endpoints(config.input_layers, file, 'input_layers'),
    outputs: endpoints(config.output_layers, file, 'output_layers'),
    kerasVersion,
  };
  for (const n of [...graph.inputs, ...graph.outputs]) if (!seen.has(n)) bad(file, `model endpoint ${n} is not a layer`);
  return graph;
}

function parseSequential(modelConfig: Obj, file: string, kerasVersion?: string): KerasGraph {
  const config = modelConfig.config;
  const rawLayers = Array.isArray(config) ? config : isObj(config) && Array.isArray(config.layers) ? config.layers : bad(file, 'Sequential config has no layers');
  const layers: KerasLayer[] = [];
  let prev: string | undefined;
  for (const raw of rawLayers as unknown[]) {
    if (!isObj(raw)) bad(file, 'layer entry is not an object');
    const cfg = isObj(raw.config) ? raw.config : {};
    const cls = typeof raw.class_name === 'string' ? raw.class_name : bad(file, 'layer without class_name');
    const name = typeof cfg.name === 'string' ? cfg.name : typeof raw.name === 'string' ? raw.name : `${cls.toLowerCase()}_${layers.length}`;
    if (prev === undefined && cls !== 'InputLayer') {
      // Sequential models may put batch_input_shape on the first real layer: synthesise the input.
      const shape = cfg.batch_input_shape ?? cfg.batch_shape;
      if (!Array.isArray(shape)) bad(file, `first Sequential layer ${name} declares no batch_input_shape`);
      const inName = 'input';
      layers.push({ name: inName, className: 'InputLayer', config: { name: inName, batch_input_shape: shape }, inbound: [] });
      prev = inName;
    }
    layers.push({ name, className: cls, config: cfg, inbound: prev === undefined ? [] : [prev] });
    prev = name;
  }
  if (layers.length === 0) bad(file, 'Sequential model has no layers');
  return { name: isObj(config) && typeof config.name === 'string' ? config.name : 'sequential', layers, inputs: [layers[0].name], outputs: [prev as string], kerasVersion };
}

/** Order layers so that every layer follows its inputs (Keras usually already does). */
function topoSort(layers: KerasLayer[], file: string): KerasLayer[] {
  const byName = new Map(layers.map((l) => [l.name, l]));
  const out: KerasLayer[] = [];
  const state = new Map<string, 1 | 2>();
  const visit = (l: KerasLayer): void => {
    const s = state.get(l.name);
    if (s === 2) return;
    if (s === 1) bad(file, `cycle through layer ${l.name}`);
    state.set(l.name, 1);
    for (const n of l.inbound) {
      const dep = byName.get(n);
      if (!dep) bad(file, `layer ${l.name} takes input from unknown layer ${n}`);
      visit(dep);
    }
    state.set(l.name, 2);
    out.push(l);
  };
  for (const l of layers) visit(l);
  return out;
}
