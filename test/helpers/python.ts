/**
 * Find a Python interpreter that has the given modules. Debian's packages (python3-numpy,
 * python3-sklearn, python3-torch) install into /usr/bin/python3, which a pyenv or venv `python3`
 * on PATH may shadow, so /usr/bin/python3 is tried first.
 */
import { spawnSync } from 'node:child_process';

const cache = new Map<string, string | null>();

export function findPython(modules: string[]): string | null {
  const key = modules.join(',');
  if (cache.has(key)) return cache.get(key)!;
  let found: string | null = null;
  for (const exe of ['/usr/bin/python3', 'python3']) {
    const r = spawnSync(exe, ['-c', `import ${modules.join(', ')}`], { stdio: 'ignore' });
    if (r.status === 0) {
      found = exe;
      break;
    }
  }
  if (found) cache.set(key, found); // a miss is re-checked: a package may be installed meanwhile
  return found;
}
