/**
 * Forward and backward of the fine-tuned part as ONNX nodes. The forward is the model's own nodes
 * (Conv+BatchNormalization fused by folding the frozen statistics into the weights once per step;
 * a zero Pad absorbed into the Conv after it); each lowered op records how to send a gradient back
 * to its inputs, and `backward` replays those records in reverse. docs/finetune.md lists the
 * formulations.
 */
import type { NodeProto, TensorProto } from '../onnx/proto.js';
import type { AttrValue } from '../onnx/builder.js';
import { Emitter } from './emit.js';
import { readConst } from './tensors.js';
import { attrFloat, attrInt, attrInts, reduceAxes } from './shapes.js';

/** ORT's blocked-channel CPU kernels for depthwise convolutions (graphs.ts TrainGraphOptions.nchwc). */
export interface NchwcOptions {
  /** MLAS's NCHWc channel block (8 on AVX2, 16 on AVX-512), from nchwcBlock(). */
  block: number;
  /** The training batch: the weight gradient is a depthwise Conv over batch × channels groups. */
  batch: number;
}

/**
 * The kernel a weight-gradient Conv (batch and channel axes swapped, stride ↔ dilation) returns: it
 * can exceed the real kernel when the strides skip input rows, and is then cut to size.
 */
function swappedKernelSize(xs: number[], zs: number[], pads: number[], stride: number[], dil: number[]): [number, number] {
  return [0, 1].map((i) => Math.floor((xs[i + 1] + pads[i] + pads[i + 2] - stride[i] * (zs[i + 1] - 1) - 1) / dil[i]) + 1) as [number, number];
}

/**
 * Batch statistics for the BatchNormalization after a trained Conv (PyTorch's train mode): it
 * normalises by the batch's mean and variance and updates the running statistics, which become
 * graph inputs and outputs (`buffers`).
 */
export interface BatchStatsOptions {
  /** The graph's per-row weight input [N, 1]: 1/n, 0 for rows that pad a short batch (excluded from the statistics). */
  rowWeights: string;
  /** PyTorch's momentum of the running statistics (0.1). */
  momentum: number;
  /** Output name of a running statistic's updated value. */
  next: (t: string) => string;
}

export interface Part {
  nodes: NodeProto[];
  consts: Map<string, TensorProto>;
  shapes: Map<string, number[]>;
  consumers: Map<string, NodeProto[]>;
}

/** One lowered op: its activation inputs, its output, and how to get input gradients from the output's. */
interface Rec {
  inputs: string[];
  output: string;
  /** Trainable parameters it uses. */
  params: string[];
  back: (dy: string, want: (t: string) => boolean) => { input: string; grad: string }[];
}

export class Lowering {
  readonly em = new Emitter();
  private readonly recs: Rec[] = [];
  readonly paramGrads = new Map<string, string>();
  private readonly needs = new Set<string>();
  private readonly grads = new Map<string, string[]>();
  /** Running statistics a batch-statistics BatchNormalization reads and updates (graph inputs). */
  readonly buffers: { name: string; shape: number[] }[] = [];
  private rowTensors: { weights4: string; mask4: string; count: string } | null = null;

  /**
   * `trainable`: parameter names fed as graph inputs; other constants become initializers.
   * `nchwc`: run depthwise convolutions on ORT's CPU NCHWc kernels (block = MLAS's channel block;
   * batch = the fixed batch the weight gradient's group count is built for); see depthwiseNchwc.
   */
  constructor(
    private readonly part: Part,
    private readonly trainable: Set<string>,
    private readonly nchwc?: NchwcOptions,
    private readonly batchStats?: BatchStatsOptions,
  ) {
    for (const n of part.nodes) for (const o of n.output) this.em.reserve(o);
    for (const c of part.consts.keys()) this.em.reserve(c);
  }

  private w(name: string): string {
    return this.trainable.has(name) ? name : this.em.constant(this.part.consts.get(name)!);
  }

  private shape(t: string): number[] {
    const s = this.part.shapes.get(t);
    if (!s) throw new Error(`fine-tune: no shape known for ${t}`);
    return s;
  }

  private isAct(t: string): boolean {
    return this.part.shapes.has(t) && !this.part.consts.has(t);
  }

  private add(rec: Rec): void {
    this.recs.push(rec);
    if (rec.params.some((p) => this.trainable.has(p)) || rec.inputs.some((i) => this.needs.has(i))) this.needs.add(rec.output);
  }

  needsGrad(t: string): boolean {
    return this.needs.has(t);
  }

  /** Lower every node of the part; returns nothing (outputs keep the model's tensor names). */
  forward(): void {
    const { nodes, consumers } = this.part;
    const skip = new Set<NodeProto>();
    const padOf = new Map<NodeProto, NodeProto>();
    for (const n of nodes) {
      if (n.opType !== 'Pad') continue;
      const cons = consumers.get(n.output[0]) ?? [];
      if (cons.length === 1 && cons[0].opType === 'Conv' && cons[0].input[0] === n.output[0]) {
        padOf.set(cons[0], n);
        skip.add(n);
      }
    }
    for (const n of nodes) {
      if (skip.has(n)) continue;
      if (n.opType === 'Conv') {
        const cons = consumers.get(n.output[0]) ?? [];
        const bn = cons.length === 1 && cons[0].opType === 'BatchNormalization' ? cons[0] : undefined;
        if (bn) skip.add(bn);
        // batch statistics where the BN trains (a frozen block keeps its running statistics, folded)
        const batch = bn !== undefined && this.batchStats !== undefined && this.trainable.has(bn.input[1]);
        this.conv(n, batch ? undefined : bn, padOf.get(n));
        if (batch) this.batchNorm(bn);
      } else this.simple(n);
    }
  }

  private conv(n: NodeProto, bn: NodeProto | undefined, pad: NodeProto | undefined): void {
    const em = this.em;
    const x = pad ? pad.input[0] : n.input[0];
    const xs = this.shape(x);
    const wc = this.part.consts.get(n.input[1])!;
    const wShape = (wc.dims ?? []).map(Number);
    const [O, Ig, kh, kw] = wShape;
    let pads = (attrInts(n, 'pads') ?? [0, 0, 0, 0]).slice();
    if (pad) {
      const pc = this.part.consts.get(pad.input[1]);
      const p = pc ? readConst(pc).ints! : attrInts(pad, 'pads')!;
      pads = [pads[0] + p[2], pads[1] + p[3], pads[2] + p[6], pads[3] + p[7]];
    }
    const stride = attrInts(n, 'strides') ?? [1, 1];
    const dil = attrInts(n, 'dilations') ?? [1, 1];
    const group = attrInt(n, 'group', 1);
    const attrs: Record<string, AttrValue> = { kernel_shape: [kh, kw], strides: stride, dilations: dil, pads, group };
    const W = this.w(n.input[1]);
    const bias = n.input[2] ? this.w(n.input[2]) : undefined;
    const out = bn ? bn.output[0] : n.output[0];
    let Wf = W;
    let bf = bias;
    let s: string | undefined;
    let s4: string | undefined;
    let invstd: string | undefined;
    let mean: string | undefined;
    const params = [n.input[1], ...(n.input[2] ? [n.input[2]] : [])];
    if (bn) {
      const eps = attrFloat(bn, 'epsilon', 1e-5);
      if (this.trainable.has(bn.input[4])) {
        // running statistics fed as inputs (evaluation while training with batch statistics)
        invstd = em.op('Reciprocal', [em.op('Sqrt', [em.op('Add', [bn.input[4], em.f32([eps])])])], {}, `${out}/invstd`);
      } else {
        const varr = readConst(this.part.consts.get(bn.input[4])!).f32!;
        const inv = new Float32Array(varr.length);
        for (let i = 0; i < varr.length; i++) inv[i] = 1 / Math.sqrt(varr[i] + eps);
        invstd = em.f32(inv, [O], `${out}/invstd`);
      }
      mean = this.w(bn.input[3]);
      const gamma = this.w(bn.input[1]);
      const beta = this.w(bn.input[2]);
      params.push(bn.input[1], bn.input[2]);
      s = em.op('Mul', [gamma, invstd], {}, `${out}/scale`);
      s4 = em.op('Reshape', [s, em.i64([-1, 1, 1, 1])], {}, `${out}/scale4`);
      Wf = em.op('Mul', [W, s4], {}, `${out}/W`);
      const shift = em.op('Sub', [beta, em.op('Mul', [mean, s])], {}, `${out}/shift`);
      bf = bias ? em.op('Add', [shift, em.op('Mul', [bias, s])], {}, `${out}/b`) : shift;
    }
    // Depthwise filters are graph inputs (trained, BN folded in), so ORT's NCHWc transformer, which
    // needs constant filters, leaves them on its slow grouped path: emit its blocked ops directly.
    const blocked = this.nchwc && group === O && Ig === 1 && xs[0] === O && O % this.nchwc.block === 0 ? this.nchwc : undefined;
    const xb = blocked ? em.nchwc('ReorderInput', [x], {}, `${out}/xb`) : undefined;
    if (xb) {
      const yb = em.nchwc('Conv', bf ? [xb, this.blockedFilter(Wf, wShape), bf] : [xb, this.blockedFilter(Wf, wShape)], attrs, `${out}/yb`);
      em.nchwc('ReorderOutput', [yb], { channels: O }, 'ReorderOutput', out);
    } else em.op('Conv', bf ? [x, Wf, bf] : [x, Wf], attrs, 'Conv', out);
    const trainW = this.trainable.has(n.input[1]);
    const gammaName = bn?.input[1];
    this.add({
      inputs: [x],
      output: out,
      params,
      back: (dz, want) => {
        const res: { input: string; grad: string }[] = [];
        const zs = this.shape(out);
        const dzb = xb && (trainW || want(x)) ? em.nchwc('ReorderInput', [dz], {}, `d/${out}/b`) : undefined;
        if (trainW) {
          const dbf = em.op('ReduceSum', [dz, em.i64([0, 2, 3])], { keepdims: 0 }, `d/${out}/b`);
          const dWf = xb && dzb && blocked ? this.depthwiseWeightGradNchwc(xb, xs, dzb, zs, wShape, attrs, blocked.batch, out) : this.convWeightGrad(x, xs, dz, zs, wShape, attrs, out);
          if (bn) {
            // dγ = Σ dz·x̂ = (Σ dW'·W − μ·Σdz)/σ: from the folded weights' gradient, no pass over activations.
            const corr = em.op('Sub', [em.op('ReduceSum', [em.op('Mul', [dWf, W]), em.i64([1, 2, 3])], { keepdims: 0 }), em.op('Mul', [mean!, dbf])]);
            const corr2 = bias ? em.op('Add', [corr, em.op('Mul', [bias, dbf])]) : corr;
            this.paramGrads.set(gammaName!, em.op('Mul', [corr2, invstd!], {}, `d/${gammaName}`));
            this.paramGrads.set(bn.input[2], dbf);
            this.paramGrads.set(n.input[1], em.op('Mul', [dWf, s4!], {}, `d/${n.input[1]}`));
            if (n.input[2]) this.paramGrads.set(n.input[2], em.op('Mul', [dbf, s!], {}, `d/${n.input[2]}`));
          } else {
            this.paramGrads.set(n.input[1], dWf);
            if (n.input[2]) this.paramGrads.set(n.input[2], dbf);
          }
        }
        if (want(x)) res.push({ input: x, grad: this.convInputGrad(dz, zs, Wf, wShape, xs, attrs, x, dzb) });
        return res;
      },
    });
  }

  /** Row weights [N,1,1,1], the 0/1 mask of real rows, and the number of real rows (shared by every batch-statistics BN). */
  private rows(): { weights4: string; mask4: string; count: string } {
    if (this.rowTensors) return this.rowTensors;
    const em = this.em;
    const rw = this.batchStats!.rowWeights;
    const mask = em.op('Sign', [rw], {}, 'bn/row_mask');
    this.rowTensors = {
      weights4: em.op('Reshape', [rw, em.i64([-1, 1, 1, 1])], {}, 'bn/row_weights4'),
      mask4: em.op('Reshape', [mask, em.i64([-1, 1, 1, 1])], {}, 'bn/row_mask4'),
      count: em.op('ReduceSum', [mask], { keepdims: 0 }, 'bn/rows'),
    };
    return this.rowTensors;
  }

  /**
   * BatchNormalization with batch statistics, as PyTorch in train mode: y = γ·(z − μ)/√(σ² + ε) + β
   * with μ, σ² (biased) over the real rows and all positions; running mean ← (1 − m)·mean + m·μ,
   * running var ← (1 − m)·var + m·σ²·M/(M − 1) (M values per channel). Backward:
   * dz = (dx̂ − mean(dx̂) − x̂·mean(dx̂·x̂))/√(σ² + ε) with dx̂ = γ·dy, zero on padding rows.
   */
  private batchNorm(bn: NodeProto): void {
    const em = this.em;
    const { momentum, next } = this.batchStats!;
    const z = bn.input[0];
    const out = bn.output[0];
    const [C, H, W] = this.shape(z);
    const eps = attrFloat(bn, 'epsilon', 1e-5);
    const [gamma, beta, rmean, rvar] = bn.input.slice(1, 5);
    const r = this.rows();
    // mean over real rows and positions: Σ_n w_n·Σ_hw t / HW with w_n = 1/n (0 on padding rows),
    // weighted after the spatial sum so that only [N, C, 1, 1] values are multiplied
    const mean = (t: string, hint: string): string => {
      const perRow = em.op('ReduceSum', [t, em.i64([2, 3])], { keepdims: 1 });
      return em.op('Mul', [em.op('ReduceSum', [em.op('Mul', [perRow, r.weights4]), em.i64([0])], { keepdims: 1 }), em.f32([1 / (H * W)])], {}, hint);
    };
    const mu = mean(z, `${out}/mu`);
    const zc = em.op('Sub', [z, mu]);
    const v = mean(em.op('Mul', [zc, zc]), `${out}/var`);
    const invstd = em.op('Reciprocal', [em.op('Sqrt', [em.op('Add', [v, em.f32([eps])])])], {}, `${out}/invstd`);
    const xhat = em.op('Mul', [zc, invstd], {}, `${out}/xhat`);
    const c4 = (t: string): string => em.op('Reshape', [t, em.i64([1, C, 1, 1])]);
    em.op('Add', [em.op('Mul', [xhat, c4(gamma)]), c4(beta)], {}, 'BatchNormalization', out);
    const M = em.op('Mul', [r.count, em.f32([H * W])], {}, `${out}/M`);
    const unbias = em.op('Div', [M, em.op('Sub', [M, em.f32([1])])]);
    const flatC = (t: string): string => em.op('Reshape', [t, em.i64([C])]);
    em.op('Add', [em.op('Mul', [rmean, em.f32([1 - momentum])]), em.op('Mul', [flatC(mu), em.f32([momentum])])], {}, '', next(rmean));
    em.op('Add', [em.op('Mul', [rvar, em.f32([1 - momentum])]), em.op('Mul', [em.op('Mul', [flatC(v), unbias]), em.f32([momentum])])], {}, '', next(rvar));
    this.buffers.push({ name: rmean, shape: [C] }, { name: rvar, shape: [C] });
    this.add({
      inputs: [z],
      output: out,
      params: [gamma, beta],
      back: (dy, want) => {
        // dy is 0 on padding rows (their loss weight is 0), so Σdy and Σdy·x̂ over the batch are the
        // sums over real rows, and mean(dx̂) = γ·Σdy/M, mean(dx̂·x̂) = γ·Σdy·x̂/M need no pass of their own
        const dbeta = em.op('ReduceSum', [dy, em.i64([0, 2, 3])], { keepdims: 0 }, `d/${beta}`);
        const dgamma = em.op('ReduceSum', [em.op('Mul', [dy, xhat]), em.i64([0, 2, 3])], { keepdims: 0 }, `d/${gamma}`);
        this.paramGrads.set(beta, dbeta);
        this.paramGrads.set(gamma, dgamma);
        if (!want(z)) return [];
        // dz = γ/√(σ²+ε) · (dy − Σdy/M − x̂·Σdy·x̂/M), zero on padding rows (the factor is [N, C, 1, 1])
        const k = em.op('Mul', [em.op('Mul', [c4(gamma), invstd]), r.mask4]);
        const a = em.op('Div', [c4(dbeta), M]);
        const b = em.op('Div', [c4(dgamma), M]);
        const dz = em.op('Mul', [em.op('Sub', [em.op('Sub', [dy, a]), em.op('Mul', [xhat, b])]), k], {}, `d/${z}`);
        return [{ input: z, grad: dz }];
      },
    });
  }

  /** A depthwise filter [C, 1, kh, kw] in MLAS's OIHWBo order (channel blocks innermost), dims unchanged. */
  private blockedFilter(W: string, wShape: number[]): string {
    const em = this.em;
    const [C, , kh, kw] = wShape;
    const B = this.nchwc!.block;
    const t = em.op('Transpose', [em.op('Reshape', [W, em.i64([C / B, B, 1, kh, kw])])], { perm: [0, 2, 3, 4, 1] });
    return em.op('Reshape', [t, em.i64([C, 1, kh, kw])]);
  }

  /**
   * dW of a depthwise Conv on NCHWc kernels: the blocked input read as one image of batch × C channels
   * and the blocked output gradient read as that many depthwise filters are exactly the operands of
   * a depthwise Conv (strides and dilations swapped) whose output, summed over the batch, is dW.
   */
  private depthwiseWeightGradNchwc(xb: string, xs: number[], dzb: string, zs: number[], wShape: number[], attrs: Record<string, AttrValue>, batch: number, hint: string): string {
    const em = this.em;
    const [C, , kh, kw] = wShape;
    const stride = attrs.strides as number[];
    const dil = attrs.dilations as number[];
    const pads = attrs.pads as number[];
    const G = batch * C;
    const input = em.op('Reshape', [xb, em.i64([1, G, xs[1], xs[2]])]);
    const filters = em.op('Reshape', [dzb, em.i64([G, 1, zs[1], zs[2]])]);
    const rb = em.nchwc('Conv', [input, filters], { kernel_shape: [zs[1], zs[2]], strides: dil, dilations: stride, pads, group: G }, `d/${hint}/Wb`);
    const [kh2, kw2] = swappedKernelSize(xs, zs, pads, stride, dil);
    const r = em.op('Reshape', [em.nchwc('ReorderOutput', [rb], { channels: G }), em.i64([batch, C, 1, kh2, kw2])]);
    let dW = em.op('ReduceSum', [r, em.i64([0])], { keepdims: 0 });
    if (kh2 !== kh || kw2 !== kw) dW = em.op('Slice', [dW, em.i64([0, 0]), em.i64([kh, kw]), em.i64([2, 3])]);
    return em.op('Identity', [dW], {}, `d/${hint}/W'`);
  }

  /** dW of a Conv: a product over the batch for 1×1 kernels, else a Conv with batch and channel axes swapped. */
  private convWeightGrad(x: string, xs: number[], dz: string, zs: number[], wShape: number[], attrs: Record<string, AttrValue>, hint: string): string {
    const em = this.em;
    const [O, Ig, kh, kw] = wShape;
    const stride = attrs.strides as number[];
    const dil = attrs.dilations as number[];
    const pads = attrs.pads as number[];
    const group = attrs.group as number;
    const pointwise = kh === 1 && kw === 1 && stride.every((v) => v === 1) && pads.every((v) => v === 0) && group === 1;
    if (pointwise) {
      // One GEMM over all N·H·W positions: channels first, [O, N·HW]·[I, N·HW]ᵀ (two transposes of
      // activations cost less than a per-sample [O, I] product summed over the batch).
      const hw = zs[1] * zs[2];
      const dzT = em.op('Reshape', [em.op('Transpose', [em.op('Reshape', [dz, em.i64([0, O, hw])])], { perm: [1, 0, 2] }), em.i64([O, -1])]);
      const xT = em.op('Reshape', [em.op('Transpose', [em.op('Reshape', [x, em.i64([0, Ig, hw])])], { perm: [1, 0, 2] }), em.i64([Ig, -1])]);
      const dW = em.op('Gemm', [dzT, xT], { transB: 1 }, `d/${hint}/Wg`);
      return em.op('Reshape', [dW, em.i64([O, Ig, 1, 1])], {}, `d/${hint}/W'`);
    }
    const xT = em.op('Transpose', [x], { perm: [1, 0, 2, 3] });
    const dzT = em.op('Transpose', [dz], { perm: [1, 0, 2, 3] });
    const depthwise = group !== 1;
    const input = depthwise ? em.op('Reshape', [xT, em.i64([1, -1, xs[1], xs[2]])]) : xT;
    const convAttrs = { strides: dil, dilations: stride, pads, group: depthwise ? group : 1 };
    let r = em.op('Conv', [input, dzT], convAttrs, `d/${hint}/Wc`);
    const [kh2, kw2] = swappedKernelSize(xs, zs, pads, stride, dil);
    if (kh2 !== kh || kw2 !== kw) r = em.op('Slice', [r, em.i64([0, 0]), em.i64([kh, kw]), em.i64([2, 3])]);
    return depthwise ? em.op('Reshape', [r, em.i64([O, 1, kh, kw])], {}, `d/${hint}/W'`) : em.op('Transpose', [r], { perm: [1, 0, 2, 3] }, `d/${hint}/W'`);
  }

  /** dX of a Conv: a Conv with the transposed (and flipped) kernel where stride is 1, else ConvTranspose. */
  private convInputGrad(dz: string, zs: number[], W: string, wShape: number[], xs: number[], attrs: Record<string, AttrValue>, x: string, dzb?: string): string {
    const em = this.em;
    const [, , kh, kw] = wShape;
    const stride = attrs.strides as number[];
    const dil = attrs.dilations as number[];
    const pads = attrs.pads as number[];
    const group = attrs.group as number;
    const hint = `d/${x}`;
    const unit = stride.every((v) => v === 1) && dil.every((v) => v === 1);
    const fullPads = [kh - 1 - pads[0], kw - 1 - pads[1], kh - 1 - pads[2], kw - 1 - pads[3]];
    if (unit && fullPads.every((p) => p >= 0)) {
      let Wt = group === 1 ? em.op('Transpose', [W], { perm: [1, 0, 2, 3] }) : W;
      if (kh > 1 || kw > 1) Wt = em.op('Slice', [Wt, em.i64([-1, -1]), em.i64([-kh - 1, -kw - 1]), em.i64([2, 3]), em.i64([-1, -1])]);
      if (dzb) {
        const db = em.nchwc('Conv', [dzb, this.blockedFilter(Wt, wShape)], { kernel_shape: [kh, kw], pads: fullPads, group }, `${hint}/b`);
        return em.nchwc('ReorderOutput', [db], { channels: wShape[0] }, 'ReorderOutput', hint);
      }
      return em.op('Conv', [dz, Wt], { kernel_shape: [kh, kw], pads: fullPads, group }, hint);
    }
    const outPad = [0, 1].map((i) => (xs[i + 1] + pads[i] + pads[i + 2] - dil[i] * ((i === 0 ? kh : kw) - 1) - 1) % stride[i]);
    void zs;
    return em.op('ConvTranspose', [dz, W], { kernel_shape: [kh, kw], strides: stride, dilations: dil, pads, group, output_padding: outPad }, hint);
  }

  /** Sum `g` (shaped like output `out`) down to the shape of input `t` (numpy broadcasting). */
  private reduceTo(g: string, t: string, out: string): string {
    const em = this.em;
    const os = [1, ...this.shape(out)];
    const ts = this.isAct(t) ? [1, ...this.shape(t)] : (this.part.consts.get(t)!.dims ?? []).map(Number);
    const lead = os.length - ts.length;
    const axes: number[] = [];
    for (let i = 0; i < os.length; i++) {
      if (i < lead) axes.push(i);
      else if (i > 0 && ts[i - lead] === 1 && os[i] !== 1) axes.push(i);
    }
    if (axes.length === 0) return g;
    const r = em.op('ReduceSum', [g, em.i64(axes)], { keepdims: 1 });
    return lead > 0 ? em.op('Reshape', [r, em.i64(this.isAct(t) ? [0, ...this.shape(t)] : ts)]) : r;
  }

  /** Ops other than Conv: copied as they are, with a gradient rule each. */
  private simple(n: NodeProto): void {
    const em = this.em;
    const out = n.output[0];
    const x = n.input[0];
    const inputs = n.input.map((i) => (i && !this.isAct(i) && this.part.consts.has(i) ? this.w(i) : i));
    const copy = (): string => {
      em.nodes.push({ ...n, input: inputs, output: [out], name: n.name || out });
      return out;
    };
    const acts = n.input.filter((i) => i && this.isAct(i));
    const zero = (): string => em.f32([0]);
    const rec = (back: Rec['back'], params: string[] = []): void => this.add({ inputs: acts, output: out, params, back });
    switch (n.opType) {
      case 'Relu':
        copy();
        // y ≥ 0, so Sign(y) is the mask y > 0 as a float: two plain elementwise ops (ORT's Where
        // with a broadcast scalar is several times slower than a Mul).
        return rec((dy) => [{ input: x, grad: em.op('Mul', [dy, em.op('Sign', [out])], {}, `d/${x}`) }]);
      case 'Clip': {
        const lo = n.input[1] ? inputs[1] : n.attribute?.some((a) => a.name === 'min') ? em.f32([attrFloat(n, 'min', 0)]) : '';
        const hi = n.input[2] ? inputs[2] : n.attribute?.some((a) => a.name === 'max') ? em.f32([attrFloat(n, 'max', 0)]) : '';
        em.op('Clip', [x, lo, hi].slice(0, hi ? 3 : lo ? 2 : 1), {}, 'Clip', out);
        // PyTorch's hardtanh/clamp mask (lo < x < hi), read from the output so that the input need
        // not be kept. (Equal(out, x) is one op less but wrong: ORT may compute a Conv+Clip output
        // by a fused kernel that differs from the unfused input by an ulp.)
        const loValue = lo ? readConst(this.part.consts.get(n.input[1]) ?? { dims: [], dataType: 1, floatData: [attrFloat(n, 'min', 0)] }).f32?.[0] : undefined;
        return rec((dy) => {
          if (loValue === 0 && hi) {
            // ReLU6 and the like: y ∈ [0, hi], so y·(hi − y) > 0 exactly inside; its Sign is the mask.
            return [{ input: x, grad: em.op('Mul', [dy, em.op('Sign', [em.op('Mul', [out, em.op('Sub', [hi, out])])])], {}, `d/${x}`) }];
          }
          const inside = [lo ? em.op('Greater', [out, lo]) : '', hi ? em.op('Less', [out, hi]) : ''].filter((t) => t);
          const mask = inside.length === 2 ? em.op('And', inside) : inside[0];
          return [{ input: x, grad: mask ? em.op('Where', [mask, dy, zero()], {}, `d/${x}`) : dy }];
        });
      }
      case 'Sigmoid':
        copy();
        return rec((dy) => [{ input: x, grad: em.op('Mul', [dy, em.op('Mul', [out, em.op('Sub', [em.f32([1]), out])])], {}, `d/${x}`) }]);
      case 'HardSigmoid': {
        copy();
        const alpha = attrFloat(n, 'alpha', 0.2);
        const beta = attrFloat(n, 'beta', 0.5);
        return rec((dy) => {
          const v = em.op('Add', [em.op('Mul', [x, em.f32([alpha])]), em.f32([beta])]);
          const mask = em.op('And', [em.op('Greater', [v, zero()]), em.op('Less', [v, em.f32([1])])]);
          return [{ input: x, grad: em.op('Where', [mask, em.op('Mul', [dy, em.f32([alpha])]), zero()], {}, `d/${x}`) }];
        });
      }
      case 'HardSwish':
        copy();
        return rec((dy) => {
          const inner = em.op('Add', [em.op('Mul', [x, em.f32([1 / 3])]), em.f32([0.5])]);
          const d = em.op('Where', [em.op('Less', [x, em.f32([-3])]), zero(), em.op('Where', [em.op('Greater', [x, em.f32([3])]), em.f32([1]), inner])]);
          return [{ input: x, grad: em.op('Mul', [dy, d], {}, `d/${x}`) }];
        });
      case 'Identity':
      case 'Dropout':
        em.op('Identity', [x], {}, 'Identity', out);
        return rec((dy) => [{ input: x, grad: dy }]);
      case 'Add':
      case 'Sum':
        if (n.input.length === 1) em.op('Identity', [x], {}, 'Identity', out);
        else copy();
        return rec((dy, want) => acts.filter(want).map((i) => ({ input: i, grad: this.reduceTo(dy, i, out) })));
      case 'Mul': {
        copy();
        const [a, b] = inputs;
        return rec((dy, want) => {
          const r: { input: string; grad: string }[] = [];
          if (this.isAct(n.input[0]) && want(n.input[0])) r.push({ input: n.input[0], grad: this.reduceTo(em.op('Mul', [dy, b]), n.input[0], out) });
          if (this.isAct(n.input[1]) && want(n.input[1])) r.push({ input: n.input[1], grad: this.reduceTo(em.op('Mul', [dy, a]), n.input[1], out) });
          return r;
        });
      }
      case 'Pad': {
        const pc = this.part.consts.get(n.input[1]);
        const p = pc ? readConst(pc).ints! : attrInts(n, 'pads')!;
        em.op('Pad', [x, em.i64(p)], { mode: 'constant' }, 'Pad', out);
        const r = p.length / 2;
        const xs = this.shape(x);
        const starts = p.slice(1, r);
        return rec((dy) => [{ input: x, grad: em.op('Slice', [dy, em.i64(starts), em.i64(starts.map((s, i) => s + xs[i])), em.i64(starts.map((_, i) => i + 1))], {}, `d/${x}`) }]);
      }
      case 'AveragePool':
      case 'GlobalAveragePool':
      case 'ReduceMean': {
        copy();
        const xs = this.shape(x);
        const os = this.shape(out);
        let count = 1;
        let keptShape: number[];
        if (n.opType === 'ReduceMean') {
          const ax = reduceAxes(n, this.part.consts, xs.length + 1)!;
          for (const a of ax) count *= xs[a - 1];
          keptShape = xs.map((d, i) => (ax.includes(i + 1) ? 1 : d));
        } else {
          count = xs.slice(1).reduce((a, b) => a * b, 1) / os.slice(1).reduce((a, b) => a * b, 1);
          keptShape = [xs[0], ...xs.slice(1).map(() => 1)];
        }
        return rec((dy) => {
          let g = em.op('Mul', [dy, em.f32([1 / count])]);
          if (os.length !== keptShape.length) g = em.op('Reshape', [g, em.i64([0, ...keptShape])]);
          return [{ input: x, grad: em.op('Expand', [g, em.i64([1, ...xs])], {}, `d/${x}`) }];
        });
      }
      case 'Transpose': {
        copy();
        const perm = attrInts(n, 'perm')!;
        const inv = perm.map((_, i) => perm.indexOf(i));
        return rec((dy) => [{ input: x, grad: em.op('Transpose', [dy], { perm: inv }, `d/${x}`) }]);
      }
      case 'Flatten':
      case 'Reshape':
        copy();
        return rec((dy) => [{ input: x, grad: em.op('Reshape', [dy, em.i64([0, ...this.shape(x)])], {}, `d/${x}`) }]);
      default:
        throw new Error(`fine-tune: no lowering for ${n.opType}`);
    }
  }

  /** Record `g` as (part of) the gradient of tensor `t`. */
  seed(t: string, g: string): void {
    this.grads.set(t, [...(this.grads.get(t) ?? []), g]);
  }

  private gradOf(t: string): string | null {
    const list = this.grads.get(t);
    if (!list || list.length === 0) return null;
    if (list.length === 1) return list[0];
    const s = this.em.op('Sum', list, {}, `d/${t}/sum`);
    this.grads.set(t, [s]);
    return s;
  }

  /** Replay the records in reverse, filling `paramGrads`. */
  backward(): void {
    const want = (t: string): boolean => this.needs.has(t);
    for (let i = this.recs.length - 1; i >= 0; i--) {
      const r = this.recs[i];
      if (!this.needs.has(r.output)) continue;
      const dy = this.gradOf(r.output);
      if (!dy) continue;
      for (const { input, grad } of r.back(dy, want)) this.seed(input, grad);
    }
  }
}
