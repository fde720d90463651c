/**
 * Find a Python interpreter that has the given modules: `$XFER_PYTHON` first (e.g. a venv with
 * PyTorch), then Debian's /usr/bin/python3 (python3-numpy, python3-sklearn, python3-torch install
 * there, which a pyenv or venv `python3` on PATH may shadow), then `python3`.
 */
import { spawnSync } from 'node:child_process';

const cache = new Map<string, string | null>();

export function findPython(modules: string[]): string | null {
  const key = modules.join(',');
  if (cache.has(key)) return cache.get(key)!;
  let found: string | null = null;
  for (const exe of [process.env.XFER_PYTHON, '/usr/bin/python3', 'python3'].filter((e): e is string => !!e)) {
    const r = spawnSync(exe, ['-c', `import ${modules.join(', ')}`], { stdio: 'ignore' });
    if (r.status === 0) {
      found = exe;
      break;
    }
  }
  if (found) cache.set(key, found); // a miss is re-checked: a package may be installed meanwhile
  return found;
}
