/**
 * Mixup (Zhang et al. 2018) for fine-tuning: each batch is blended with itself reversed,
 * x' = λ·x + (1 − λ)·x_rev, and trained towards λ·target(y) + (1 − λ)·target(y_rev), with one
 * λ ~ Beta(α, α) per batch (timm's default "batch" mode). From a tap it mixes the cached activations
 * (manifold mixup at the cut); from the input, the preprocessed images.
 */
import type { Rng } from '../heads/rng.js';

/** Gamma(a, 1) by Marsaglia–Tsang; a < 1 through Gamma(a + 1)·U^(1/a). */
function gamma(a: number, rng: Rng): number {
  if (a < 1) return gamma(a + 1, rng) * Math.pow(1 - rng.next(), 1 / a);
  const d = a - 1 / 3;
  const c = 1 / Math.sqrt(9 * d);
  for (;;) {
    let x: number;
    let v: number;
    do {
      x = rng.normal();
      v = 1 + c * x;
    } while (v <= 0);
    v = v * v * v;
    const u = 1 - rng.next();
    if (Math.log(u) < 0.5 * x * x + d - d * v + d * Math.log(v)) return d * v;
  }
}

/** A draw from Beta(a, a). */
export function betaSymmetric(a: number, rng: Rng): number {
  const g1 = gamma(a, rng);
  const g2 = gamma(a, rng);
  return g1 + g2 > 0 ? g1 / (g1 + g2) : 0.5;
}

/**
 * Blends the first n rows of `x` (rowSize values each) in place with the batch reversed: row i
 * becomes λ·row i + (1 − λ)·row n−1−i. Returns the partner labels (y reversed).
 */
export function mixBatch(x: Float32Array, y: Int32Array, n: number, rowSize: number, lam: number): Int32Array {
  const mu = 1 - lam;
  for (let i = 0, j = n - 1; i < j; i++, j--) {
    const a = i * rowSize;
    const b = j * rowSize;
    for (let k = 0; k < rowSize; k++) {
      const u = x[a + k];
      const v = x[b + k];
      x[a + k] = lam * u + mu * v;
      x[b + k] = lam * v + mu * u;
    }
  }
  const partner = new Int32Array(n);
  for (let i = 0; i < n; i++) partner[i] = y[n - 1 - i];
  return partner;
}
