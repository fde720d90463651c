/**
 * worker_threads entry for the linear SVM: solves a subset of the one-vs-rest problems on a
 * SharedArrayBuffer view of X (no copy per worker). See LinearSvmHead.fitRaw.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { dualCdL2 } from './svm-dualcd.js';
import { Rng } from './rng.js';

export interface SvmJob {
  X: Float32Array;
  n: number;
  d: number;
  y: Int32Array;
  /** [class, cPos, cNeg, seed] per problem */
  problems: [number, number, number, number][];
  tol: number;
  maxIter: number;
}

const job = workerData as SvmJob;
const pos = new Uint8Array(job.n);
for (const [c, cPos, cNeg, seed] of job.problems) {
  for (let i = 0; i < job.n; i++) pos[i] = job.y[i] === c ? 1 : 0;
  const r = dualCdL2({ data: job.X, rows: job.n, cols: job.d }, pos, cPos, cNeg, job.tol, job.maxIter, new Rng(seed));
  parentPort!.postMessage({ c, ...r });
}
