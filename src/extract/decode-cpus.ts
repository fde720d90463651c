/**
 * Keeping image decoding on its own CPU(s) while inference runs on all of them (Linux, CPU inference).
 *
 * Why: when every core time-shares decoding (sharp/libvips threads, woken dozens of times per image)
 * with the inference sessions, both slow down: the session's working set is evicted from the core's
 * caches at every switch, and a decode migrating between cores pays for the move. Measured on this
 * project's 2-CPU machine (per-thread CPU time, `xfer extract` on hymenoptera ×5): inference 4.9 ms
 * per image against 4.3 alone, decoding 5.7 against 4.3 alone. With every thread but the inference
 * sessions confined to one CPU, and the sessions free to use both, the pipeline ran 5–12 % faster
 * (medians of sets of alternating paired runs; README "Performance").
 *
 * When decoding cannot keep up on its CPUs (a cheap backbone or an early tap, large images, a slow
 * disk, a host slowing that CPU down), confinement would cap the run: a watch compares the process's
 * CPU use with the CPUs it may use, and gives the confinement up for the rest of the run when they
 * are too little busy (MIN_UTILIZATION, SUSTAINED_UTILIZATION).
 *
 * Once the inference sessions are open (the start uses every CPU), the whole process is confined with
 * `taskset -a`, then each inference worker's thread, and the threads its session created (reported by
 * backbone-worker.ts), go back to all CPUs; threads created later inherit their creator's CPUs, so new
 * decoding threads stay confined. The process's CPUs are restored when the run ends. The tasksets run
 * from an AffinityShell the caller starts at the beginning of the run, while the process is small
 * (forking it later, with the sessions open, costs a copy-on-write fault on every page written next).
 */
import { XferError } from '../errors.js';
import { allowedCpus, findTaskset, formatCpuList, parseCpuList, type AffinityShell } from '../util/affinity.js';

/** 'auto': confine on a 2-CPU Linux machine (where it was measured); 'off'; or the CPUs to decode on. */
export type DecodeCpusMode = 'auto' | 'off' | number[];

/** Where decoding runs and where inference may run (the CPUs the process was allowed at the start). */
export interface CpuSplit {
  decode: number[];
  all: number[];
  /** The taskset that sets it. */
  taskset: string;
}

/**
 * Confinement is given up after a window with the allowed CPUs less than MIN_UTILIZATION busy
 * (decoding clearly cannot keep up), or after RECENT_WINDOWS windows whose median is below
 * SUSTAINED_UTILIZATION (it keeps up only just: the inference CPU waits for batches, as when the host
 * slows the decoding CPU down). Measured on 2 CPUs (mobilenet_v2, hymenoptera ×5, runs paired with
 * --decode-cpus off): out_relu windows 0.83–0.98 busy; of 10 pairs, the 3 slower confined had medians
 * 0.86–0.92, the 7 faster (+3 to +25 %) 0.93–0.97 but one; block_6_expand_relu 0.78–0.81, +3.6 %;
 * block_2_add 0.72–0.74, −7 %.
 */
export const MIN_UTILIZATION = 0.77;
export const SUSTAINED_UTILIZATION = 0.9;
export const RECENT_WINDOWS = 3;
/** Length of a utilization window (the first starts with the first batch). */
export const WATCH_WINDOW_MS = 1000;

export interface Machine {
  platform: NodeJS.Platform;
  /** CPUs the process may run on (null: unknown). */
  allowed: number[] | null;
  taskset: string | null;
  /** Inference runs on a GPU (CUDA): decoding has the CPUs to itself anyway. */
  gpu: boolean;
}

export function thisMachine(gpu: boolean): Machine {
  return { platform: process.platform, allowed: allowedCpus(), taskset: findTaskset(), gpu };
}

/** Parse `--decode-cpus`: auto | off | a CPU list (e.g. 1 or 2-3). */
export function parseDecodeCpus(v: string | undefined): DecodeCpusMode | undefined {
  if (v === undefined || v === 'auto' || v === 'off') return v;
  try {
    return parseCpuList(v);
  } catch {
    throw new XferError(`--decode-cpus: expected auto, off or a CPU list such as 1 or 2-3, got "${v}"`);
  }
}

/**
 * Decide the split: null (with why) when decoding stays unconfined. An explicit CPU list that cannot
 * be applied is an error; 'auto' never is.
 */
export function planDecodeCpus(mode: DecodeCpusMode, m: Machine): { split: CpuSplit | null; why: string } {
  if (mode === 'off') return { split: null, why: 'off' };
  const explicit = mode !== 'auto';
  const fail = (why: string, hint: string) => {
    if (explicit) throw new XferError(`--decode-cpus ${formatCpuList(mode)}: ${why}`, { hint });
    return { split: null, why };
  };
  if (m.platform !== 'linux') return fail('CPU affinity is only set on Linux', 'leave --decode-cpus at auto (or off)');
  if (m.gpu) return { split: null, why: 'inference runs on the GPU' };
  if (!m.allowed || m.allowed.length < 2) return fail('fewer than 2 CPUs available', 'leave --decode-cpus at auto (or off)');
  if (!m.taskset) return fail('taskset (util-linux) not found on PATH', 'install util-linux (Debian/Ubuntu: apt-get install util-linux), or leave --decode-cpus at auto');
  const all = m.allowed;
  if (!explicit) {
    if (all.length !== 2) return { split: null, why: `${all.length} CPUs (auto confines decoding on 2-CPU machines only, where it was measured; pass --decode-cpus <list> to try it here)` };
    return { split: { decode: [all[all.length - 1]], all, taskset: m.taskset }, why: 'auto' };
  }
  const outside = mode.filter((c) => !all.includes(c));
  if (outside.length > 0) return fail(`CPU ${formatCpuList(outside)} is not available to this process (allowed: ${formatCpuList(all)})`, `choose CPUs among ${formatCpuList(all)}`);
  if (mode.length === 0 || mode.length >= all.length) return fail(`decoding would have every allowed CPU (${formatCpuList(all)}): nothing left to keep for inference alone`, 'name fewer CPUs, or use off');
  return { split: { decode: mode, all, taskset: m.taskset }, why: 'requested' };
}

/** The split for `mode` on this machine, or null when decoding stays unconfined (see planDecodeCpus). */
export function decodeCpuSplit(mode: DecodeCpusMode | undefined, gpu: boolean): CpuSplit | null {
  return mode === undefined || mode === 'off' ? null : planDecodeCpus(mode, thisMachine(gpu)).split;
}

/** What a run reports about the split (ExtractEvent 'cpus', ExtractSummary.decodeCpus). */
export interface CpuSplitState {
  decode: number[];
  all: number[];
  /** Why the confinement was given up (null while it holds). */
  released: string | null;
}

/**
 * A confinement: the whole process on `split.decode`, the inference threads on `split.all`.
 * `watch()` is called as batches complete; `restore()` when the run ends. The affinity changes run in
 * the background (`shell`, which the caller owns): the pipeline does not wait for them, except `restore()`.
 */
export class DecodeConfinement {
  private released: string | null = null;
  private unconfined = false;
  private window: { t: number; cpu: number } | null = null;
  /** Utilization of the last RECENT_WINDOWS windows. */
  private recent: number[] = [];
  /** The last affinity change (they run one after the other). */
  private pending: Promise<boolean>;

  private constructor(
    readonly split: CpuSplit,
    private readonly shell: AffinityShell,
    private readonly pid: number,
    inferenceThreads: readonly number[],
  ) {
    this.pending = shell.set(split.taskset, [{ id: pid, cpus: split.decode, allThreads: true }, ...inferenceThreads.map((id) => ({ id, cpus: split.all }))]).then((ok) => {
      // (e.g. a container that forbids sched_setaffinity): say so, and put back what may have changed.
      if (!ok) this.release(`${split.taskset} could not set the CPU affinity of this process's threads`);
      return ok;
    });
  }

  /**
   * Confine every thread of process `pid` to `split.decode`, then `inferenceThreads` to `split.all`.
   * Null without inference threads to keep apart (not Linux, inline inference).
   */
  static apply(split: CpuSplit, shell: AffinityShell, inferenceThreads: readonly number[], pid = process.pid): DecodeConfinement | null {
    return inferenceThreads.length > 0 ? new DecodeConfinement(split, shell, pid, inferenceThreads) : null;
  }

  state(): CpuSplitState {
    return { decode: this.split.decode, all: this.split.all, released: this.released };
  }

  /**
   * Measure utilization over windows of `windowMs` (the first starts at the first call) and release
   * as MIN_UTILIZATION and SUSTAINED_UTILIZATION say. Returns the release reason the one time it
   * happens, else null.
   */
  watch(now = performance.now(), cpuMicros?: number, windowMs = WATCH_WINDOW_MS): string | null {
    if (this.released !== null) return null;
    if (this.window === null) {
      this.window = { t: now, cpu: cpuMicros ?? cpuTime() };
      return null;
    }
    const dt = now - this.window.t;
    if (dt < windowMs) return null;
    // (CPU time is read only when a window is full: this runs after every batch.)
    const cpu = cpuMicros ?? cpuTime();
    const util = utilization(cpu - this.window.cpu, dt, this.split.all.length);
    this.window = { t: now, cpu };
    this.recent = [...this.recent, util].slice(-RECENT_WINDOWS);
    const median = this.recent.length === RECENT_WINDOWS ? this.recent.slice().sort((a, b) => a - b)[RECENT_WINDOWS >> 1] : 1;
    const on = `decoding on CPU ${formatCpuList(this.split.decode)}`;
    const pct = (x: number) => `${(x * 100).toFixed(0)} %`;
    if (util < MIN_UTILIZATION) this.release(`${on} could not keep up: the ${this.split.all.length} CPUs were ${pct(util)} busy over ${(dt / 1000).toFixed(1)} s (< ${pct(MIN_UTILIZATION)})`);
    else if (median < SUSTAINED_UTILIZATION) this.release(`${on} only just kept up: the ${this.split.all.length} CPUs were ${pct(median)} busy (median of ${RECENT_WINDOWS} windows of ${(windowMs / 1000).toFixed(1)} s; < ${pct(SUSTAINED_UTILIZATION)})`);
    return this.released;
  }

  /** Give the confinement up (every thread back on all CPUs) for the rest of the run. */
  release(reason: string): void {
    if (this.released !== null) return;
    this.released = reason;
    this.unconfine();
  }

  /** The run is over: every thread back on the CPUs the process had (idempotent); resolves when done. */
  async restore(): Promise<void> {
    if (this.released === null) this.unconfine();
    await this.pending;
  }

  private unconfine(): void {
    if (this.unconfined) return;
    this.unconfined = true;
    this.pending = this.pending.then(() => this.shell.set(this.split.taskset, [{ id: this.pid, cpus: this.split.all, allThreads: true }]));
  }
}

/** Fraction of `cpus` CPUs busy: `cpuMicros` of CPU time over `wallMs`. */
export function utilization(cpuMicros: number, wallMs: number, cpus: number): number {
  return wallMs > 0 && cpus > 0 ? cpuMicros / 1000 / (wallMs * cpus) : 0;
}

function cpuTime(): number {
  const u = process.cpuUsage();
  return u.user + u.system;
}
