/**
 * `xfer` command line: a thin shell over the library. Each subcommand lives in its own module and
 * registers itself on the program; this file only wires them and turns errors into exit codes.
 */
import { Command, CommanderError } from 'commander';
import { formatError, isXferError } from '../errors.js';
import { VERSION } from '../version.js';
import { cudaProviderInstalled } from '../model/provider.js';
import { notice } from './output.js';
import { registerModelCommands } from './models-cmd.js';
import { registerImportCommand } from './import-cmd.js';
import { registerClassifyCommand } from './classify-cmd.js';
import { registerExtractCommands } from './extract-cmd.js';
import { registerTrainCommands } from './train-cmd.js';
import { registerPredictCommands } from './predict-cmd.js';
import { registerPlotCommand } from './plot-cmd.js';
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
    .configureHelp({ sortSubcommands: false })
    // Before the subcommands are added, so they inherit it: commander's own usage errors (unknown
    // option, bad choice, missing argument) then reach main() and exit 2 instead of 1.
    .exitOverride();
  program.hook('preAction', (_root, action) => {
    // The one device line nobody asked for: printed only under --verbose (a GPU that was asked for
    // or found reports itself through the session's notices or errors).
    const usesDevice = action.options.some((o) => o.long === '--device');
    if (usesDevice && action.optsWithGlobals().verbose && action.getOptionValue('device') === undefined && !cudaProviderInstalled()) {
      notice('device: CPU (onnxruntime-node\'s CUDA provider is not installed; `npx xfer-setup-cuda` enables GPUs, docs/install.md)');
    }
  });
  registerModelCommands(program);
  registerImportCommand(program);
  registerClassifyCommand(program);
  registerExtractCommands(program);
  registerTrainCommands(program);
  registerPredictCommands(program);
  registerPlotCommand(program);
  registerSweepCommands(program);
  registerPullCommands(program);
  // The CLI is the process: it may set the environment that library calls read (model resolution reads XFER_OFFLINE).
  program.hook('preAction', (root) => {
    if ((root.opts() as { offline?: boolean }).offline) process.env.XFER_OFFLINE = '1';
  });
  return program;
}

export function main(argv: string[]): Promise<number> {
  return runProgram(buildProgram(), argv);
}

/** Parse and run `argv` on `program` (built with exitOverride) to its end; returns the exit code: 2 for usage errors, an XferError's own, else 1. */
export async function runProgram(program: Command, argv: string[]): Promise<number> {
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
