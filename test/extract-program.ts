/**
 * The extract tests' `xfer`: only the extract/merge commands, run by src/cli/main.ts's runProgram
 * (the same error handling and exit codes). extract-cli.ts runs it as a child process; runCliHere in this process.
 */
import { Command } from 'commander';
import { runProgram } from '../src/cli/main.js';
import { registerExtractCommands } from '../src/cli/extract-cmd.js';

/** Run `argv` (node, script, args...) to its end; returns the exit code. A fresh program each call: commander keeps parsed values. */
export function runExtractProgram(argv: string[]): Promise<number> {
  const program = new Command().name('xfer').option('--verbose');
  registerExtractCommands(program);
  program.exitOverride();
  return runProgram(program, argv);
}
