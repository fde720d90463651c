/**
 * The Python interpreters the benchmarks compare against, found once per run:
 *   current — $XFER_PYTHON, else the project virtualenv scripts/make-venv.sh creates (idempotently,
 *             from the local wheel indexes; ./.venv-bench or $XFER_VENV): current PyTorch and
 *             scikit-learn, what users run;
 *   debian  — /usr/bin/python3 with Debian's packages (apt-get installed when missing and root).
 * Each anchor reports the versions it imported, so every table says what it was measured against.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';

export interface PythonAnchor {
  /** 'current' (venv) or 'debian'. */
  role: 'current' | 'debian';
  exe: string;
  /** module → version, e.g. { sklearn: '1.9.1', numpy: '2.4.6' }. */
  versions: Record<string, string>;
}

const log = (s: string): void => void process.stderr.write(`${s}\n`);

function versionsOf(exe: string, modules: string[]): Record<string, string> | null {
  const code = `import json, importlib\nout = {}\nfor m in ${JSON.stringify(modules)}:\n    out[m] = importlib.import_module(m).__version__\nprint(json.dumps(out))`;
  const r = spawnSync(exe, ['-c', code], { encoding: 'utf8' });
  if (r.status !== 0) return null;
  try {
    return JSON.parse(r.stdout.trim().split('\n').pop() ?? '') as Record<string, string>;
  } catch {
    return null;
  }
}

/** The current-versions interpreter, making the venv if needed; null (with the reason logged) if impossible. */
export function currentPython(modules: string[], opts: { make?: boolean } = {}): PythonAnchor | null {
  const env = process.env.XFER_PYTHON;
  if (env) {
    const v = versionsOf(env, modules);
    if (v) return { role: 'current', exe: env, versions: v };
    log(`XFER_PYTHON=${env} cannot import ${modules.join(', ')}; trying the project venv`);
  }
  const script = path.resolve('scripts/make-venv.sh');
  const ready = spawnSync('bash', [script, '--print'], { encoding: 'utf8' });
  let exe = ready.status === 0 ? ready.stdout.trim() : '';
  if (!exe && opts.make !== false) {
    log('making the benchmark venv (scripts/make-venv.sh, local wheels; once)…');
    const r = spawnSync('bash', [script], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
    exe = r.status === 0 ? r.stdout.trim().split('\n').pop() ?? '' : '';
    if (!exe) log('scripts/make-venv.sh failed: no current-version anchor, Debian packages only');
  }
  if (!exe) return null;
  const v = versionsOf(exe, modules);
  return v ? { role: 'current', exe, versions: v } : null;
}

/** Debian's /usr/bin/python3 with `modules`, apt-get installing `debs` when missing (root only). */
export function debianPython(modules: string[], debs: string[], opts: { apt?: boolean } = {}): PythonAnchor | null {
  const exe = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';
  let v = versionsOf(exe, modules);
  if (!v && opts.apt !== false && process.getuid?.() === 0) {
    log(`Debian anchor: apt-get install ${debs.join(' ')} …`);
    const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
    let r = spawnSync('apt-get', ['install', '-y', '-q', '--no-install-recommends', ...debs], { stdio: 'inherit', env });
    if (r.status !== 0) {
      spawnSync('apt-get', ['update', '-q'], { stdio: 'inherit', env });
      r = spawnSync('apt-get', ['install', '-y', '-q', '--no-install-recommends', ...debs], { stdio: 'inherit', env });
    }
    v = versionsOf(exe, modules);
  }
  return v ? { role: 'debian', exe, versions: v } : null;
}

/** "sklearn 1.9.1, numpy 2.4.6 (/path/python)". */
export function describeAnchor(a: PythonAnchor): string {
  return `${Object.entries(a.versions).map(([m, v]) => `${m} ${v}`).join(', ')} (${a.exe})`;
}
