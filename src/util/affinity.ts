/**
 * CPU affinity of this process's threads on Linux. Node has no sched_setaffinity, so it goes through
 * util-linux's `taskset` (part of every Debian/Ubuntu/RHEL base system; BusyBox has one too), run
 * from a shell started early (AffinityShell). Threads created later inherit the affinity of the thread
 * that creates them. Everything here answers null/false where it cannot work (other systems, no taskset, no /proc)
 * instead of throwing: affinity is a speed setting, never needed for correctness.
 */
import { spawn, type ChildProcessByStdio } from 'node:child_process';
import { accessSync, constants, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import path from 'node:path';
import type { Socket } from 'node:net';

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
 * A shell that applies affinity changes: forked once, early, then each change is a line written to
 * it. Forking is what costs here, and not only its ~20 ms: the child shares this process's pages
 * copy-on-write until it execs, so every page this process writes afterwards takes a fault first (a
 * `/bin/true` spawned once the inference sessions were open delayed the first 40 images of a run by
 * ~90 ms on this project's VM). Started while the process is small, before the sessions and their
 * arenas exist, the shell costs almost nothing, and a taskset forked from it ~1 ms.
 *
 * The shell holds the event loop only while a change is in flight: one never closed does not keep
 * Node running, and stdin's end (close, or this process exiting) ends it.
 */
export class AffinityShell {
  private readonly child: ChildProcessByStdio<Socket, Socket, null> | null;
  private readonly pending = new Map<number, (ok: boolean) => void>();
  private next = 0;
  private dead = false;

  constructor(shell = '/bin/sh') {
    let child: ChildProcessByStdio<Socket, Socket, null> | null = null;
    try {
      // (Its pipes are sockets: they can be unref'd.)
      child = spawn(shell, ['-s'], { stdio: ['pipe', 'pipe', 'ignore'] }) as unknown as ChildProcessByStdio<Socket, Socket, null>;
    } catch {
      this.dead = true;
    }
    this.child = child;
    if (!child) return;
    child.on('error', () => this.end());
    // ('close', not 'exit': after its stdout is read to the end, so answers written before it exited still count.)
    child.on('close', () => this.end());
    child.stdin.on('error', () => this.end());
    let buf = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk: string) => {
      buf += chunk;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const m = /^(\d+) (\d+)$/.exec(buf.slice(0, nl));
        buf = buf.slice(nl + 1);
        if (m) this.settle(Number(m[1]), m[2] === '0');
      }
    });
    this.idle();
  }

  /**
   * Apply `steps` in order (stopping at the first that fails) with `taskset`. Resolves true when every
   * step succeeded; false otherwise, and once the shell is closed or gone; never rejects.
   */
  set(taskset: string, steps: readonly AffinityStep[]): Promise<boolean> {
    if (steps.length === 0) return Promise.resolve(true);
    if (this.dead || !this.child) return Promise.resolve(false);
    const q = (a: string) => `'${a.replace(/'/g, `'\\''`)}'`;
    const script = steps.map((st) => [taskset, ...(st.allThreads ? ['-a'] : []), '-p', '-c', formatCpuList(st.cpus), String(st.id)].map(q).join(' ')).join(' && ');
    const id = this.next++;
    return new Promise<boolean>((resolve) => {
      this.pending.set(id, resolve);
      this.busy();
      // (stdout carries only the answers: taskset's own report goes nowhere.)
      this.child!.stdin.write(`{ ${script}; } >/dev/null 2>&1 && echo '${id} 0' || echo '${id} 1'\n`);
    });
  }

  /** End the shell (it exits once the changes already written are done; those still answer). */
  close(): void {
    if (this.child && !this.dead) this.child.stdin.end();
  }

  private settle(id: number, ok: boolean): void {
    const resolve = this.pending.get(id);
    this.pending.delete(id);
    resolve?.(ok);
    if (this.pending.size === 0) this.idle();
  }

  private end(): void {
    this.dead = true;
    for (const resolve of this.pending.values()) resolve(false);
    this.pending.clear();
    this.idle();
  }

  private busy(): void {
    this.child?.ref();
    this.child?.stdout.ref();
  }

  private idle(): void {
    this.child?.unref();
    this.child?.stdout.unref();
    this.child?.stdin.unref();
  }
}
