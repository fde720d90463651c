/**
 * A stand-alone `xfer` with only the extract/merge commands, for the extract tests' child
 * processes (same error handling and exit codes as src/cli/main.ts).
 */
import { Command, CommanderError } from 'commander';
import { formatError, isXferError } from '../src/errors.js';
import { registerExtractCommands } from '../src/cli/extract-cmd.js';

const program = new Command().name('xfer').option('--verbose');
registerExtractCommands(program);
program.exitOverride();
// `node --test dist/test/` also runs this file (with no arguments): then do nothing.
if (process.argv.length > 2) {
try {
  await program.parseAsync(process.argv);
} catch (e) {
  if (e instanceof CommanderError) process.exitCode = e.exitCode === 0 ? 0 : 2;
  else {
    process.stderr.write(`${formatError(e, process.argv.includes('--verbose'))}\n`);
    process.exitCode = isXferError(e) ? e.exitCode : 1;
  }
}
}
