#!/usr/bin/env node
// `npm test` after the build: node --test over the compiled test files, at least two files at once.
// node's default, availableParallelism() - 1, is one file at a time on 2 cores, where most files
// spend much of their time waiting on child processes, session starts and disk, leaving a core idle
// (measured in docs/performance.md, "The test suite"). Extra arguments go to node --test.
import { readdirSync } from 'node:fs';
import os from 'node:os';
import { spawnSync } from 'node:child_process';

const dir = 'dist/test';
const files = readdirSync(dir).filter((f) => f.endsWith('.test.js')).sort().map((f) => `${dir}/${f}`);
const concurrency = Math.max(2, os.availableParallelism() - 1);
const r = spawnSync(process.execPath, ['--test', `--test-concurrency=${concurrency}`, ...process.argv.slice(2), ...files], { stdio: 'inherit' });
process.exitCode = r.status ?? 1;
