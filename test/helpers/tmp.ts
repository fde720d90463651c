/**
 * Temporary folders for tests: each is removed when the test file's process exits, passed or failed
 * (node --test runs every file in a process of its own), so no run leaves folders in /tmp.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const made = new Set<string>();
let hooked = false;

/** A fresh folder under the OS temp dir, named `<prefix>XXXXXX`, removed at exit. */
export async function tempDir(prefix = 'xfer-test-'): Promise<string> {
  const dir = mkdtempSync(path.join(os.tmpdir(), prefix));
  made.add(dir);
  if (!hooked) {
    hooked = true;
    process.on('exit', () => {
      for (const d of made) rmSync(d, { recursive: true, force: true, maxRetries: 2 });
    });
  }
  return dir;
}
