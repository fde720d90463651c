/**
 * Bounds-checked table/vector access on top of the `flatbuffers` runtime's ByteBuffer. The runtime
 * itself reads past the end silently (undefined bytes become 0), so every position is checked here and
 * a bad one becomes an XferError saying the file is truncated or corrupt.
 */
import { ByteBuffer } from 'flatbuffers';
import { XferError } from '../../errors.js';

export class FlatReader {
  readonly bb: ByteBuffer;
  readonly size: number;

  constructor(
    readonly bytes: Uint8Array,
    readonly file: string,
  ) {
    this.bb = new ByteBuffer(bytes);
    this.size = bytes.length;
  }

  fail(what: string): never {
    throw new XferError(`${this.file}: truncated or corrupt TFLite file (${what} lies outside the ${this.size}-byte file)`, {
      hint: 'the file was cut short or is damaged; download or convert it again',
    });
  }

  private need(pos: number, len: number, what: string): void {
    if (!(pos >= 0 && len >= 0 && pos + len <= this.size)) this.fail(what);
  }

  /** Position of the root table (after checking the 4-byte file identifier). */
  root(identifier: string): number {
    this.need(0, 8, 'the file header');
    if (!this.bb.__has_identifier(identifier)) {
      const got = new TextDecoder('latin1').decode(this.bytes.subarray(4, 8));
      throw new XferError(`${this.file}: not a TFLite model (file identifier is ${JSON.stringify(got)}, expected "${identifier}")`, {
        hint: 'pass a .tflite flatbuffer (TF Hub, MediaPipe, Coral); ONNX files can be used with --model directly',
      });
    }
    return this.table(this.bb.readUint32(0), 'the root table');
  }

  /** Validate a table position (its vtable must lie in the file); returns it. */
  table(pos: number, what = 'a table'): number {
    this.need(pos, 4, what);
    const vt = pos - this.bb.readInt32(pos);
    this.need(vt, 4, `the vtable of ${what}`);
    const vtLen = this.bb.readUint16(vt);
    this.need(vt, vtLen, `the vtable of ${what}`);
    return pos;
  }

  /** Offset of field `id` inside table `t`, 0 when absent. */
  private field(t: number, id: number): number {
    const vt = t - this.bb.readInt32(t);
    const slot = 4 + 2 * id;
    if (slot + 2 > this.bb.readUint16(vt)) return 0;
    return this.bb.readUint16(vt + slot);
  }

  private scalarPos(t: number, id: number, size: number): number {
    const off = this.field(t, id);
    if (off === 0) return 0;
    this.need(t + off, size, `field ${id} of a table`);
    return t + off;
  }

  u8(t: number, id: number, dflt = 0): number {
    const p = this.scalarPos(t, id, 1);
    return p ? this.bb.readUint8(p) : dflt;
  }

  i8(t: number, id: number, dflt = 0): number {
    const p = this.scalarPos(t, id, 1);
    return p ? this.bb.readInt8(p) : dflt;
  }

  bool(t: number, id: number, dflt = false): boolean {
    const p = this.scalarPos(t, id, 1);
    return p ? this.bb.readUint8(p) !== 0 : dflt;
  }

  i32(t: number, id: number, dflt = 0): number {
    const p = this.scalarPos(t, id, 4);
    return p ? this.bb.readInt32(p) : dflt;
  }

  u32(t: number, id: number, dflt = 0): number {
    const p = this.scalarPos(t, id, 4);
    return p ? this.bb.readUint32(p) : dflt;
  }

  f32(t: number, id: number, dflt = 0): number {
    const p = this.scalarPos(t, id, 4);
    return p ? this.bb.readFloat32(p) : dflt;
  }

  u64(t: number, id: number, dflt = 0): number {
    const p = this.scalarPos(t, id, 8);
    return p ? Number(this.bb.readUint64(p)) : dflt;
  }

  /** A sub-table field; 0 when absent. */
  tableField(t: number, id: number, what: string): number {
    const p = this.scalarPos(t, id, 4);
    if (!p) return 0;
    return this.table(p + this.bb.readUint32(p), what);
  }

  /** [start, length] of a vector field with `elem`-byte elements; null when absent. */
  vector(t: number, id: number, elem: number, what: string): [number, number] | null {
    const p = this.scalarPos(t, id, 4);
    if (!p) return null;
    const vec = p + this.bb.readUint32(p);
    this.need(vec, 4, what);
    const n = this.bb.readUint32(vec);
    this.need(vec + 4, n * elem, what);
    return [vec + 4, n];
  }

  i32Vector(t: number, id: number, what: string): number[] | null {
    const v = this.vector(t, id, 4, what);
    if (!v) return null;
    const out: number[] = new Array<number>(v[1]);
    for (let i = 0; i < v[1]; i++) out[i] = this.bb.readInt32(v[0] + 4 * i);
    return out;
  }

  f32Vector(t: number, id: number, what: string): number[] | null {
    const v = this.vector(t, id, 4, what);
    if (!v) return null;
    const out: number[] = new Array<number>(v[1]);
    for (let i = 0; i < v[1]; i++) out[i] = this.bb.readFloat32(v[0] + 4 * i);
    return out;
  }

  i64Vector(t: number, id: number, what: string): number[] | null {
    const v = this.vector(t, id, 8, what);
    if (!v) return null;
    const out: number[] = new Array<number>(v[1]);
    for (let i = 0; i < v[1]; i++) out[i] = Number(this.bb.readInt64(v[0] + 8 * i));
    return out;
  }

  /** The bytes of a [ubyte] vector (a view, not a copy). */
  bytesField(t: number, id: number, what: string): Uint8Array | null {
    const v = this.vector(t, id, 1, what);
    return v ? this.bytes.subarray(v[0], v[0] + v[1]) : null;
  }

  /** Table positions of a vector of tables. */
  tableVector(t: number, id: number, what: string): number[] {
    const v = this.vector(t, id, 4, what);
    if (!v) return [];
    const out: number[] = [];
    for (let i = 0; i < v[1]; i++) {
      const p = v[0] + 4 * i;
      out.push(this.table(p + this.bb.readUint32(p), `${what}[${i}]`));
    }
    return out;
  }

  string(t: number, id: number, what: string): string | undefined {
    const v = this.vector(t, id, 1, what);
    if (!v) return undefined;
    return new TextDecoder().decode(this.bytes.subarray(v[0], v[0] + v[1]));
  }

  /** Bytes [offset, offset+size) of the whole file (TFLite >2 GB models keep buffers outside the flatbuffer). */
  slice(offset: number, size: number, what: string): Uint8Array {
    this.need(offset, size, what);
    return this.bytes.subarray(offset, offset + size);
  }
}
