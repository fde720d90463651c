/**
 * Opening the backbone of a run: the inference plan (sessions × threads), the tap model (cached or
 * built on this thread) and the worker pool whose sessions open from it. What predict and classify
 * compose; extract does the same steps itself, interleaved with listing its dataset.
 */
import type { ResolvedBackbone } from '../model/registry.js';
import { prepareTappedBackbone } from '../model/prepare.js';
import type { DeviceOptions } from '../model/device.js';
import type { TapRequest } from '../model/taps.js';
import { inferencePlan } from './plan.js';
import { openWorkerPool, type Backbone } from './pool.js';

export interface OpenBackboneOptions {
  /** The model as the user named it (for messages and the tap cache). */
  spec: string;
  /** The model resolved (file, sha256, card with any flag overrides). */
  resolved: ResolvedBackbone;
  taps: TapRequest[];
  device?: DeviceOptions;
  /** Sessions (default: inferencePlan). */
  workers?: number;
  onNotice?: (msg: string) => void;
}

export interface OpenedBackbone {
  backbone: Backbone;
  workers: number;
  /** Intra-op threads per session. */
  threads: number;
}

/** Prepare the tap model while the workers load onnxruntime, then open a session on it in each. */
export async function openBackbone(o: OpenBackboneOptions): Promise<OpenedBackbone> {
  const notice = o.onNotice ?? (() => {});
  const { workers, threads } = inferencePlan({ device: o.device, workers: o.workers });
  const prepared = prepareTappedBackbone(o.spec, { resolved: o.resolved, taps: o.taps, onNotice: notice });
  prepared.catch(() => {});
  const backbone = await openWorkerPool(prepared, { ...o.device, threads }, notice, workers);
  return { backbone, workers, threads };
}
