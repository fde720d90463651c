#!/usr/bin/env node
// The image commands keep V8's young generation at its start size from the first line, before the
// CLI's modules load (src/cli/young-generation.ts says why).
if (process.argv[2] === 'extract' || process.argv[2] === 'predict') {
  const { keepYoungGenerationSmall } = await import('../dist/src/cli/young-generation.js');
  keepYoungGenerationSmall();
}
// A reader that stops early (`xfer layers m | head`) closes the pipe: end quietly, as cat and ls do.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (e) => {
    if (e.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    throw e;
  });
}
const { main } = await import('../dist/src/cli/main.js');

process.exitCode = await main(process.argv);
