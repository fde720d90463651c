/**
 * `xfer` command line: a thin shell over the library. Each subcommand lives in its own module and
 * registers itself on the program; this file only wires them and turns errors into exit codes.
 */
import { Command, CommanderError } from 'commander';
import { formatError, isXferError } from '../errors.js';
import { VERSION } from '../version.js';
import { registerModelCommands } from './models-cmd.js';
import { registerImportCommand } from './import-cmd.js';
import { registerClassifyCommand } from './classify-cmd.js';
import { registerExtractCommands } from './extract-cmd.js';
import { registerTrainCommands } from './train-cmd.js';
import { registerPredictCommands } from './predict-cmd.js';
import { registerSweepCommands } from './sweep-cmd.js';
import { registerPullCommands } from './pull-cmd.js';

export function buildProgram(): Command {
  const program = new Command();
  program
    .name('xfer')
    .description('Transfer learning with frozen ONNX backbones: list and tap layers, extract CNN codes to disk, fit heads, classify.')
    .version(VERSION)
    .option('--verbose', 'print stack traces and extra diagnostics')
    .option('--offline', 'never download: a catalog model missing from the cache is an error saying which file to fetch (same as XFER_OFFLINE=1)')
    .showHelpAfterError('(run with --help for usage)')
    .configureHelp({ sortSubcommands: false });
  registerModelCommands(program);
  registerImportCommand(program);
  registerClassifyCommand(program);
  registerExtractCommands(program);
  registerTrainCommands(program);
  registerPredictCommands(program);
  registerSweepCommands(program);
  registerPullCommands(program);
  // The CLI is the process: it may set the environment that library calls read (model resolution reads XFER_OFFLINE).
  program.hook('preAction', (root) => {
    if ((root.opts() as { offline?: boolean }).offline) process.env.XFER_OFFLINE = '1';
  });
  return program;
}

export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  program.exitOverride();
  const verbose = argv.includes('--verbose');
  try {
    await program.parseAsync(argv);
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (e) {
    if (e instanceof CommanderError) return e.exitCode === 0 ? 0 : 2;
    process.stderr.write(`${formatError(e, verbose)}\n`);
    return isXferError(e) ? e.exitCode : 1;
  }
}
