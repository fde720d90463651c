/**
 * Paths read from xfer's own files (a feature folder's meta.json layer folders, a head.json's array
 * files, a model card found beside a model) name things inside the folder of the file that names
 * them. A file copied from elsewhere or edited can name `../victim`, `/etc/passwd` or a symlink
 * pointing out; xfer would then read, truncate or delete files outside. Every such path goes through
 * `containedPath`, which refuses it (exit 2) before anything is touched.
 */
import { realpath } from 'node:fs/promises';
import path from 'node:path';
import { XferError } from '../errors.js';

/** Whether `p` is `root` itself or inside it (both absolute and normalised). */
function inside(root: string, p: string): boolean {
  const rel = path.relative(root, p);
  return rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel));
}

/** realpath of `p`, or of its deepest existing ancestor joined with the rest (for paths not created yet). */
async function realpathOfPrefix(p: string): Promise<string> {
  const rest: string[] = [];
  let cur = p;
  for (;;) {
    try {
      return path.join(await realpath(cur), ...rest);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      const parent = path.dirname(cur);
      // ENOENT: not created yet; ENOTDIR: a file where a folder is expected (refused by its reader).
      if ((code !== 'ENOENT' && code !== 'ENOTDIR') || parent === cur) throw e;
      rest.unshift(path.basename(cur));
      cur = parent;
    }
  }
}

/**
 * Resolve `value` (field `field` of `source`) against `root` and return the absolute path, or throw
 * an XferError naming the file and field when it is not a relative path to something strictly inside
 * `root`, or when, after following symlinks, it leads outside `root`.
 */
export async function containedPath(root: string, value: unknown, source: string, field: string): Promise<string> {
  const refuse = (why: string) =>
    new XferError(`${source}: ${field} ${JSON.stringify(value)} ${why}`, {
      hint: `paths in this file must stay inside ${root}; the file was edited or comes from elsewhere: do not use it (nothing was changed)`,
    });
  if (typeof value !== 'string' || value === '' || value.includes('\0')) throw refuse('is not a relative path');
  if (path.isAbsolute(value) || /^[A-Za-z]:[\\/]/.test(value) || value.startsWith('\\')) throw refuse('is an absolute path');
  const rootAbs = path.resolve(root);
  const target = path.resolve(rootAbs, value);
  if (target === rootAbs || !inside(rootAbs, target)) throw refuse(`leads outside its folder`);
  let realRoot: string;
  let realTarget: string;
  try {
    realRoot = await realpath(rootAbs);
    realTarget = await realpathOfPrefix(target);
  } catch (e) {
    throw new XferError(`${source}: cannot resolve ${field} ${JSON.stringify(value)} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, { cause: e });
  }
  if (realTarget === realRoot || !inside(realRoot, realTarget)) throw refuse(`leads outside its folder through a symlink (to ${realTarget})`);
  return target;
}
