/**
 * Learning rates per step: linear warmup then cosine decay to zero, applied to the new classifier's
 * rate and to every backbone block's rate. Block rates: `lrBackbone` for the top block, times
 * `layerDecay` for each block further down (1 = the same rate everywhere); frozen blocks get 0.
 */
import { XferError } from '../errors.js';

export interface LrSpec {
  /** New classifier. */
  lr: number;
  /** Top trainable backbone block (default lr / 10). */
  lrBackbone?: number;
  /** Each block down gets this times the rate of the block above (default 1). */
  layerDecay?: number;
  /** Steps of linear warmup. */
  warmupSteps: number;
  totalSteps: number;
}

export interface StepLr {
  head: number;
  backbone: number[];
}

/** Refuse a learning rate that is not a positive finite number (`flag` names the option). */
export function checkRate(v: unknown, flag: string, allowZero = false): number {
  const n = typeof v === 'string' ? Number(v) : v;
  if (typeof n !== 'number' || !Number.isFinite(n) || (allowZero ? n < 0 : n <= 0) || (typeof v === 'string' && v.trim() === '')) {
    throw new XferError(`${flag}: expected a ${allowZero ? 'non-negative' : 'positive'} number, got '${String(v)}'`, { hint: `e.g. ${flag} ${flag === '--layer-decay' ? '0.7' : '1e-3'}` });
  }
  return n;
}

/** Multiplier in [0, 1] at `step` (0-based): warmup ramps (step+1)/warmup, then cosine to 0 at totalSteps. */
export function scheduleFactor(step: number, warmupSteps: number, totalSteps: number): number {
  if (warmupSteps > 0 && step < warmupSteps) return (step + 1) / warmupSteps;
  const span = Math.max(1, totalSteps - warmupSteps);
  const t = Math.min(1, Math.max(0, (step - warmupSteps) / span));
  return 0.5 * (1 + Math.cos(Math.PI * t));
}

/**
 * Base rates per block, bottom block first (`blocks` in data-flow order), before the schedule:
 * block i of n gets lrBackbone · layerDecay^(n−1−i); the bottom `frozen` blocks get 0.
 */
export function blockRates(nBlocks: number, spec: Pick<LrSpec, 'lr' | 'lrBackbone' | 'layerDecay'>, frozen = 0): number[] {
  const top = spec.lrBackbone ?? spec.lr / 10;
  const d = spec.layerDecay ?? 1;
  return Array.from({ length: nBlocks }, (_, i) => (i < frozen ? 0 : top * d ** (nBlocks - 1 - i)));
}

export function ratesAt(step: number, spec: LrSpec, base: number[]): StepLr {
  const f = scheduleFactor(step, spec.warmupSteps, spec.totalSteps);
  return { head: spec.lr * f, backbone: base.map((r) => r * f) };
}
