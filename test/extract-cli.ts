/**
 * A stand-alone `xfer` with only the extract/merge commands (extract-program.ts), for the extract
 * tests' child processes.
 */
import { runExtractProgram } from './extract-program.js';

// `node --test dist/test/` also runs this file (with no arguments): then do nothing.
if (process.argv.length > 2) process.exitCode = await runExtractProgram(process.argv);
