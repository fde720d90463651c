/**
 * Run a CLI program (`(argv) => exit code`, as src/cli/main.ts's main) in the test's own process,
 * collecting what it writes to stdout and stderr: no process start and module load per run, which
 * is most of the CPU of a small command. One run at a time, since the exit code and the environment
 * are process-wide: runs started together take turns. Signals, pipes and a second process need a
 * child process.
 */
import { AsyncLocalStorage } from 'node:async_hooks';

export interface InProcessResult {
  code: number;
  signal: null;
  stdout: string;
  stderr: string;
}

/** Output of the run whose async context is current; writes from anywhere else (the test runner) pass through. */
const captured = new AsyncLocalStorage<{ stdout: string; stderr: string }>();
let hooked = false;
let queue: Promise<unknown> = Promise.resolve();

function hookWrites(): void {
  if (hooked) return;
  hooked = true;
  for (const name of ['stdout', 'stderr'] as const) {
    const stream = process[name];
    const write = stream.write.bind(stream) as (...a: unknown[]) => boolean;
    stream.write = ((chunk: string | Uint8Array, ...rest: unknown[]) => {
      const into = captured.getStore();
      if (!into) return write(chunk, ...rest);
      into[name] += typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString();
      const cb = rest.find((r) => typeof r === 'function') as (() => void) | undefined;
      cb?.();
      return true;
    }) as typeof stream.write;
  }
}

/** Run `program([node, script, ...args])` with `env` laid over process.env (undefined unsets); the environment and exit code are put back after. */
export function runInProcess(program: (argv: string[]) => Promise<number>, script: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<InProcessResult> {
  const run = queue.then(async () => {
    hookWrites();
    const savedEnv = { ...process.env };
    for (const [k, v] of Object.entries(env)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
    const exitCode = process.exitCode;
    process.exitCode = undefined;
    const out = { stdout: '', stderr: '' };
    try {
      const code = await captured.run(out, () => program([process.execPath, script, ...args]));
      return { code, signal: null, ...out };
    } finally {
      process.exitCode = exitCode;
      for (const k of Object.keys(process.env)) if (!(k in savedEnv)) delete process.env[k];
      Object.assign(process.env, savedEnv);
    }
  });
  queue = run.catch(() => undefined);
  return run;
}
