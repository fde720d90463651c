#!/usr/bin/env node
// The image commands keep V8's young generation at its start size from the first line, before the
// CLI's modules load (src/cli/young-generation.ts says why).
if (process.argv[2] === 'extract' || process.argv[2] === 'predict') {
  const { keepYoungGenerationSmall } = await import('../dist/src/cli/young-generation.js');
  keepYoungGenerationSmall();
}
const { main } = await import('../dist/src/cli/main.js');

process.exitCode = await main(process.argv);
