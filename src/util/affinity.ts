/**
 * CPU affinity of this process's threads on Linux. Node has no sched_setaffinity, so it goes through
 * util-linux's `taskset` (part of every Debian/Ubuntu/RHEL base system; BusyBox has one too), run
 * from a background shell. Threads created later inherit the affinity of the thread that creates
 * them. Everything here answers null/false where it cannot work (other systems, no taskset, no /proc)
 * instead of throwing: affinity is a speed setting, never needed for correctness.
 */
import { spawn } from 'node:child_process';
import { accessSync, constants, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import path from 'node:path';

/** Parse a Linux CPU list ("0-3,8,10-11") into sorted, distinct CPU numbers; RangeError on bad syntax. */
export function parseCpuList(s: string): number[] {
  const out = new Set<number>();
  for (const part of s.split(',').map((p) => p.trim())) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(part);
    if (!m) throw new RangeError(`not a CPU list: "${s}" (expected e.g. 1 or 2-3 or 0,2-3)`);
    const a = Number(m[1]);
    const b = m[2] === undefined ? a : Number(m[2]);
    if (b < a) throw new RangeError(`not a CPU list: "${s}" (range ${part} runs backwards)`);
    for (let c = a; c <= b; c++) out.add(c);
  }
  return [...out].sort((x, y) => x - y);
}

/** The shortest CPU list for `cpus` ("0-3,8"). */
export function formatCpuList(cpus: readonly number[]): string {
  const s = [...new Set(cpus)].sort((a, b) => a - b);
  const parts: string[] = [];
  for (let i = 0; i < s.length; ) {
    let j = i;
    while (j + 1 < s.length && s[j + 1] === s[j] + 1) j++;
    parts.push(j === i ? String(s[i]) : `${s[i]}-${s[j]}`);
    i = j + 1;
  }
  return parts.join(',');
}

/** The CPUs a task may run on (`Cpus_allowed_list` of a /proc status file: by default this process's main thread), or null. */
export function allowedCpus(statusFile = '/proc/self/status'): number[] | null {
  try {
    const line = /^Cpus_allowed_list:\s*(.+)$/m.exec(readFileSync(statusFile, 'utf8'))?.[1];
    return line ? parseCpuList(line) : null;
  } catch {
    return null;
  }
}

/** The calling thread's kernel thread id (Linux: /proc/thread-self), or null. */
export function threadId(): number | null {
  try {
    const tid = Number(path.basename(readlinkSync('/proc/thread-self')));
    return Number.isInteger(tid) && tid > 0 ? tid : null;
  } catch {
    return null;
  }
}

/** Thread ids of this process (Linux: /proc/self/task), or [] where unknown. */
export function processThreads(): number[] {
  try {
    return readdirSync('/proc/self/task').map(Number).filter((t) => Number.isInteger(t) && t > 0);
  } catch {
    return [];
  }
}

/** Path of an executable `taskset` on PATH (Linux only), or null. */
export function findTaskset(env: NodeJS.ProcessEnv = process.env, platform: NodeJS.Platform = process.platform): string | null {
  if (platform !== 'linux') return null;
  for (const dir of (env.PATH ?? '/usr/bin:/bin').split(path.delimiter)) {
    if (!dir) continue;
    const f = path.join(dir, 'taskset');
    try {
      accessSync(f, constants.X_OK);
      return f;
    } catch {
      /* not here */
    }
  }
  return null;
}

/** One affinity change: thread `id` (a thread id, or a process id for its main thread) to `cpus`; with `allThreads`, every thread of process `id`. */
export interface AffinityStep {
  id: number;
  cpus: readonly number[];
  allThreads?: boolean;
}

/**
 * Apply `steps` in order, in one background shell (forking this process costs ~20 ms here, a
 * taskset from the shell ~1 ms). Resolves true when every step succeeded; never rejects.
 */
export function setCpuAffinities(taskset: string, steps: readonly AffinityStep[]): Promise<boolean> {
  if (steps.length === 0) return Promise.resolve(true);
  const q = (a: string) => `'${a.replace(/'/g, `'\\''`)}'`;
  const script = steps.map((st) => [taskset, ...(st.allThreads ? ['-a'] : []), '-p', '-c', formatCpuList(st.cpus), String(st.id)].map(q).join(' ')).join(' && ');
  return new Promise((resolve) => {
    const child = spawn('/bin/sh', ['-c', script], { stdio: 'ignore' });
    child.on('error', () => resolve(false));
    child.on('exit', (code) => resolve(code === 0));
  });
}
