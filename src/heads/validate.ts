/**
 * A saved head is checked when it is loaded (model.ts `loadHead`), before anything predicts with it:
 * its array files stay inside the head folder (util/contain.ts), every array has the shape the head's
 * kind and declared dims call for (n_features, n_classes, the transform chain from the features'
 * width), float arrays are finite, index arrays in range, and there is one label per class. A
 * tampered or damaged head otherwise gives NaN% predictions with exit 0, an internal
 * "gemm: operands too small" naming no file, or `undefined` labels.
 */
import { XferError } from '../errors.js';
import { containedPath } from '../util/contain.js';

interface Ref {
  file: string;
  dtype: string;
  shape: number[];
}

/** The parts of head.json checked here (model.ts `HeadJson`). */
export interface HeadJsonShape {
  kind: string;
  n_classes: number;
  n_features: number;
  labels: unknown;
  source: { width: number };
  transforms: { kind: string; k?: number; dIn: number; dOut: number; arrays: Record<string, Ref> }[];
  arrays: Record<string, Ref>;
}

const posInt = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 1;

function fail(file: string, what: string, hint = 'the head folder is damaged or was edited; train it again'): XferError {
  return new XferError(`${file}: ${what}`, { hint });
}

/** Expected [dtype, shape] of each array of a head (shape entries null where any positive size goes). */
type Spec = Record<string, { dtype: 'float32' | 'int32'; shape: (number | null)[]; optional?: boolean }>;

function headSpec(file: string, json: HeadJsonShape): Spec {
  const F = json.n_features;
  const k = json.n_classes;
  const a = json.arrays;
  switch (json.kind) {
    case 'linear':
      return { W: { dtype: 'float32', shape: [F, k] }, b: { dtype: 'float32', shape: [k] } };
    case 'svm':
      return { W: { dtype: 'float32', shape: [F, k] }, b: { dtype: 'float32', shape: [k] }, platt: { dtype: 'float32', shape: [k, 2], optional: true } };
    case 'svm-rbf': {
      const P = (k * (k - 1)) / 2;
      const m = a.pairSv?.shape?.[0] ?? null;
      return {
        SV: { dtype: 'float32', shape: [null, F] },
        pairStart: { dtype: 'int32', shape: [P + 1] },
        pairSv: { dtype: 'int32', shape: [null] },
        pairCoef: { dtype: 'float32', shape: [m] },
        rho: { dtype: 'float32', shape: [P] },
        // Platt (A, B) per class pair when calibrated (probability=true)
        platt: { dtype: 'float32', shape: [P, 2], optional: true },
      };
    }
    // A fine-tuned head keeps its weights in its ONNX file (json.files), checked when loaded.
    case 'finetune':
      return {};
    case 'knn':
      return { X: { dtype: 'float32', shape: [null, F] }, y: { dtype: 'int32', shape: [a.X?.shape?.[0] ?? null] } };
    case 'mlp': {
      const spec: Spec = {};
      let L = 0;
      while (`W${L}` in a) L++;
      if (L === 0) throw fail(file, 'mlp head has no W0 array');
      let inDim = F;
      for (let l = 0; l < L; l++) {
        const out = l === L - 1 ? k : (a[`W${l}`]?.shape?.[1] ?? null);
        spec[`W${l}`] = { dtype: 'float32', shape: [inDim, out] };
        spec[`b${l}`] = { dtype: 'float32', shape: [out] };
        if (out === null || !posInt(out)) throw fail(file, `array W${l} declares shape ${JSON.stringify(a[`W${l}`]?.shape)}`);
        inDim = out;
      }
      return spec;
    }
    default:
      throw fail(file, `unknown head kind ${JSON.stringify(json.kind)}`, 'train it again (or upgrade xfer)');
  }
}

function transformSpec(file: string, i: number, t: HeadJsonShape['transforms'][number]): Spec {
  const { dIn, dOut } = t;
  if (!posInt(dIn) || !posInt(dOut)) throw fail(file, `transforms[${i}] (${t.kind}) has dims ${JSON.stringify(dIn)} → ${JSON.stringify(dOut)}`);
  if (t.kind === 'l2' || t.kind === 'standardize') {
    if (dIn !== dOut) throw fail(file, `transforms[${i}] (${t.kind}) maps ${dIn} → ${dOut} columns; it keeps the width`);
    return t.kind === 'l2' ? {} : { mean: { dtype: 'float32', shape: [dIn] }, scale: { dtype: 'float32', shape: [dIn] } };
  }
  if (t.kind === 'pca') {
    return { mean: { dtype: 'float32', shape: [dIn] }, components: { dtype: 'float32', shape: [dOut, dIn] }, explained_variance: { dtype: 'float32', shape: [dOut] } };
  }
  throw fail(file, `transforms[${i}] has unknown kind ${JSON.stringify(t.kind)}`, 'train it again (or upgrade xfer)');
}

function checkRefs(file: string, where: string, refs: Record<string, Ref>, spec: Spec): void {
  for (const name of Object.keys(refs ?? {})) if (!(name in spec)) throw fail(file, `${where}array ${name} is not part of this head`);
  for (const [name, s] of Object.entries(spec)) {
    const r = refs?.[name];
    if (!r) {
      if (s.optional) continue;
      throw fail(file, `${where}array ${name} is missing`);
    }
    if (r.dtype !== s.dtype) throw fail(file, `${where}array ${name} has dtype ${JSON.stringify(r.dtype)}, expected ${s.dtype}`);
    const ok = Array.isArray(r.shape) && r.shape.length === s.shape.length && r.shape.every((d, j) => posInt(d) && (s.shape[j] === null || d === s.shape[j]));
    if (!ok) throw fail(file, `${where}array ${name} has shape ${JSON.stringify(r.shape)}, expected [${s.shape.map((d) => d ?? 'n').join(', ')}]`);
  }
}

/**
 * Check head.json before its arrays are read: dims, labels, the transform chain, each array's
 * declared dtype/shape against the head's kind, and that each array file stays in `dir`.
 */
export async function checkHeadJson(dir: string, file: string, json: HeadJsonShape): Promise<void> {
  if (!posInt(json.n_features)) throw fail(file, `n_features ${JSON.stringify(json.n_features)} is not a positive integer`);
  if (!(posInt(json.n_classes) && json.n_classes >= 2)) throw fail(file, `n_classes ${JSON.stringify(json.n_classes)} is not an integer >= 2`);
  if (!Array.isArray(json.labels) || json.labels.length !== json.n_classes || !json.labels.every((l) => typeof l === 'string')) {
    const n = Array.isArray(json.labels) ? `${json.labels.length} labels` : 'no label list';
    throw fail(file, `labels: ${n} for ${json.n_classes} classes (one name per class expected)`);
  }
  if (!posInt(json.source?.width)) throw fail(file, `source.width ${JSON.stringify(json.source?.width)} is not a positive integer`);
  if (!Array.isArray(json.transforms) || typeof json.arrays !== 'object' || json.arrays === null) throw fail(file, 'no "arrays" or "transforms"');
  let width = json.source.width;
  for (const [i, t] of json.transforms.entries()) {
    const spec = transformSpec(file, i, t);
    if (t.dIn !== width) throw fail(file, `transforms[${i}] (${t.kind}) takes ${t.dIn} columns but receives ${width}`);
    checkRefs(file, `transforms[${i}] `, t.arrays, spec);
    width = t.dOut;
  }
  if (width !== json.n_features) throw fail(file, `the head takes ${json.n_features} features but its transforms give ${width}`);
  checkRefs(file, '', json.arrays, headSpec(file, json));
  const refs = [...Object.entries(json.arrays).map(([n, r]) => [`arrays.${n}.file`, r] as const), ...json.transforms.flatMap((t, i) => Object.entries(t.arrays).map(([n, r]) => [`transforms[${i}].arrays.${n}.file`, r] as const))];
  for (const [field, r] of refs) await containedPath(dir, r.file, file, field);
}

/** The shape an array file holds must be the one head.json declares (model.ts reads each array). */
export function checkArrayFile(file: string, npyFile: string, declared: number[], actual: number[]): void {
  if (JSON.stringify(declared) !== JSON.stringify(actual)) throw fail(file, `array file ${npyFile} holds shape [${actual}] but head.json declares [${declared}]`);
}

/**
 * Check the loaded values: float arrays finite (and scales non-zero), svm-rbf's index arrays in range.
 * `arrays`: the head's; `transforms[i]`: transform i's.
 */
export function checkHeadValues(file: string, json: HeadJsonShape, arrays: Record<string, Float32Array | Int32Array>, transforms: Record<string, Float32Array>[]): void {
  const finite = (where: string, a: Float32Array | Int32Array) => {
    if (a instanceof Int32Array) return;
    for (let i = 0; i < a.length; i++) if (!Number.isFinite(a[i])) throw fail(file, `${where} holds ${a[i]} at position ${i} (values must be finite)`);
  };
  for (const [name, a] of Object.entries(arrays)) finite(`array ${name}`, a);
  transforms.forEach((ta, i) => {
    for (const [name, a] of Object.entries(ta)) finite(`transforms[${i}] array ${name}`, a);
    if (ta.scale) for (let j = 0; j < ta.scale.length; j++) if (ta.scale[j] === 0) throw fail(file, `transforms[${i}] array scale is 0 at position ${j}`);
  });
  if (json.kind === 'knn') {
    const y = arrays.y as Int32Array;
    for (let i = 0; i < y.length; i++) if (y[i] < 0 || y[i] >= json.n_classes) throw fail(file, `array y holds class ${y[i]} at position ${i}, outside the ${json.n_classes} classes`);
  }
  if (json.kind === 'svm-rbf') {
    const ps = arrays.pairStart as Int32Array;
    const sv = arrays.pairSv as Int32Array;
    const nSv = json.arrays.SV.shape[0];
    if (ps[0] !== 0 || ps[ps.length - 1] !== sv.length || ps.some((v, i) => i > 0 && v < ps[i - 1])) throw fail(file, 'array pairStart is not a non-decreasing list from 0 to the length of pairSv');
    for (let i = 0; i < sv.length; i++) if (sv[i] < 0 || sv[i] >= nSv) throw fail(file, `array pairSv holds ${sv[i]} at position ${i}, outside the ${nSv} support vectors`);
  }
}
