/**
 * The extract tests' `xfer`: only the extract/merge commands, with the same error handling and exit
 * codes as src/cli/main.ts. extract-cli.ts runs it as a child process; runCliHere in this process.
 */
import { Command, CommanderError } from 'commander';
import { formatError, isXferError } from '../src/errors.js';
import { registerExtractCommands } from '../src/cli/extract-cmd.js';

/** Run `argv` (node, script, args...) to its end; returns the exit code. A fresh program each call: commander keeps parsed values. */
export async function runExtractProgram(argv: string[]): Promise<number> {
  const program = new Command().name('xfer').option('--verbose');
  registerExtractCommands(program);
  program.exitOverride();
  try {
    await program.parseAsync(argv);
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (e) {
    if (e instanceof CommanderError) return e.exitCode === 0 ? 0 : 2;
    process.stderr.write(`${formatError(e, argv.includes('--verbose'))}\n`);
    return isXferError(e) ? e.exitCode : 1;
  }
}
