/**
 * Reads the payload of a browserify/UMD `.min.js` module as nsfwjs ships its models: the single
 * inner module does `<m>.exports = <literal>` (an object literal for `model.min.js`, a base64 string
 * for `group1-shardXofY.min.js`). The literal is parsed, never executed.
 */
import { XferError } from '../../errors.js';
import { parseJsLiteral, LiteralSyntaxError, type JsLiteral } from './literal.js';

const EXPORTS_RE = /[A-Za-z_$][\w$]*\.exports\s*=\s*(?=[{"'[])/g;

/** Extract the literal assigned to `module.exports` inside a bundled module; `file` is for errors. */
export function extractBundledLiteral(source: string, file: string): JsLiteral {
  EXPORTS_RE.lastIndex = 0;
  const m = EXPORTS_RE.exec(source);
  if (!m) {
    throw new XferError(`${file}: no "exports = <literal>" found; not an nsfwjs model bundle`, {
      hint: 'expected nsfwjs 4.x dist/models/<model>/*.min.js files; reinstall nsfwjs@4.4.0',
    });
  }
  const start = m.index + m[0].length;
  try {
    const { value, end } = parseJsLiteral(source, start);
    // The module body closes right after the assignment: `...}` or `;}`.
    const rest = source.slice(end, end + 4).trimStart();
    if (!(rest.startsWith('}') || rest.startsWith(';') || rest.startsWith(','))) {
      throw new LiteralSyntaxError('unexpected text after the exported literal', end);
    }
    return value;
  } catch (e) {
    if (e instanceof LiteralSyntaxError) {
      throw new XferError(`${file}: cannot read the embedded model data (${e.message})`, {
        hint: 'the nsfwjs bundle format changed or the file is damaged; reinstall nsfwjs@4.4.0',
        cause: e,
      });
    }
    throw e;
  }
}

/** The model JSON (modelTopology + weightsManifest) of an nsfwjs `model.min.js`. */
export function extractModelJson(source: string, file: string): Record<string, unknown> {
  const v = extractBundledLiteral(source, file);
  if (typeof v !== 'object' || v === null || Array.isArray(v) || !('modelTopology' in v)) {
    throw new XferError(`${file}: embedded literal is not a tfjs model JSON (no modelTopology)`, {
      hint: 'pass the model.min.js file, not a weight shard',
    });
  }
  return v as Record<string, unknown>;
}

/** The weight bytes of an nsfwjs `group1-shardXofY.min.js` (base64 in the bundle). */
export function extractShardBytes(source: string, file: string): Uint8Array {
  const v = extractBundledLiteral(source, file);
  if (typeof v !== 'string') {
    throw new XferError(`${file}: embedded literal is not a base64 weight string`, { hint: 'pass a group1-shard*.min.js weight file' });
  }
  const buf = Buffer.from(v, 'base64');
  return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
}
