#!/usr/bin/env node
// libuv sizes its thread pool once, at its first use, from UV_THREADPOOL_SIZE (default 4). sharp
// decodes each image on one of its threads, so with 4 a machine with more cores could never decode
// more than 4 images at once: size it to the cores before anything loads (docs/performance.md).
import os from 'node:os';

process.env.UV_THREADPOOL_SIZE ??= String(Math.min(1024, Math.max(4, os.availableParallelism() + 2)));
// A reader that stops early (`xfer layers m | head`) closes the pipe: end quietly, as cat and ls do.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (e) => {
    if (e.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    throw e;
  });
}
const { main } = await import('../dist/src/cli/main.js');

process.exitCode = await main(process.argv);
