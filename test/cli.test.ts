import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { writeFile, mkdir } from 'node:fs/promises';
import path from 'node:path';
import sharp from 'sharp';
import { REPO_ROOT, NO_SHARED, shared } from './helpers/paths.js';
import { VERSION } from '../src/version.js';
import { tempDir } from './helpers/tmp.js';
import { runInProcess } from './helpers/in-process.js';
import { main } from '../src/cli/main.js';

const BIN = path.join(REPO_ROOT, 'bin', 'xfer.js');

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Run bin/xfer.js to its end (async, so that independent runs can go at once). */
function xfer(...args: string[]): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

/**
 * The same command through main() in this process (helpers/in-process.ts): what the CLI prints and
 * its exit code, without a process start each. --version stays a child process, checking bin/xfer.js.
 */
function xferHere(...args: string[]): Promise<Run> {
  return runInProcess(main, BIN, args);
}

/** A user-facing error: non-zero exit, `error: ...` naming the thing, a hint, no stack trace. */
function assertCleanError(r: Run, re: RegExp): void {
  assert.notEqual(r.code, 0, 'exit code is non-zero');
  assert.match(r.stderr, re);
  assert.match(r.stderr, /^error: /m);
  assert.doesNotMatch(r.stderr, /\n\s+at .*\(.*:\d+:\d+\)/, 'no stack trace without --verbose');
}

test('package.json and --version agree', async () => {
  const pkg = JSON.parse(await (await import('node:fs/promises')).readFile(path.join(REPO_ROOT, 'package.json'), 'utf8'));
  assert.equal(pkg.version, VERSION);
  assert.equal((await xfer('--version')).stdout.trim(), VERSION);
});

test('xfer models lists the two built-in backbones', async () => {
  const r = await xferHere('models');
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^mobilenet_v2 +224x224 RGB/m);
  assert.match(r.stdout, /^inception_v3 +299x299 RGB/m);
});

test('xfer layers mobilenet_v2 prints every tensor with its shape', async () => {
  const [r, grep] = await Promise.all([xferHere('layers', 'mobilenet_v2'), xferHere('layers', 'mobilenet_v2', '--grep', 'block_6', '--json')]);
  assert.equal(r.code, 0, r.stderr);
  const rows = r.stdout.split('\n').filter((l) => /^\d+ /.test(l));
  assert.ok(rows.length >= 150, `${rows.length} rows`);
  assert.match(r.stdout, /block_13_expand_relu +float +\[N, 576, 14, 14\] +\* recommended/);
  assert.match(r.stdout, /out_relu +float +\[N, 1280, 7, 7\] +\* default/);
  const json = JSON.parse(grep.stdout);
  assert.ok(json.layers.every((l: { name: string }) => l.name.includes('block_6')));
  assert.match(json.sha256, /^[0-9a-f]{64}$/);
});

test('xfer layers on SqueezeNet fp16 (../shared)', { skip: NO_SHARED }, async () => {
  const r = await xferHere('layers', shared('models', 'squeezenet1.1-fp16.onnx'), '--op', 'Concat');
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /fire9\/concat_1 +float16 +\[1, 512, 13, 13\]/);
});

test('bad model inputs: one-line errors naming the file, non-zero exit, stack only with --verbose', async () => {
  const dir = await tempDir('xfer-cli-');
  const txt = path.join(dir, 'notes.onnx');
  await writeFile(txt, 'hello, not a model\n'.repeat(10));
  const card = path.join(dir, 'card.json');
  await writeFile(card, JSON.stringify({ id: 'x' }));
  // Independent runs, all at once.
  const [missing, notModel, unknown, badCard, verbose] = await Promise.all([
    xferHere('layers', path.join(dir, 'missing.onnx')),
    xferHere('layers', txt),
    xferHere('layers', 'resnet9000'),
    xferHere('layers', 'mobilenet_v2', '--card', card),
    xferHere('layers', path.join(dir, 'missing.onnx'), '--verbose'),
  ]);
  assertCleanError(missing, /missing\.onnx: model file not found/);
  assertCleanError(notModel, /notes\.onnx: not an ONNX model/);
  assertCleanError(unknown, /unknown model "resnet9000".*\n\s+hint: built-in ids: .*mobilenet_v2/);
  assertCleanError(badCard, /card\.json: invalid model card: missing "description"/);
  assert.match(verbose.stderr, /\n\s+at /, '--verbose prints the stack');
});

test('an unknown tap name lists the closest names', async () => {
  const dir = await tempDir('xfer-cli-');
  await mkdir(path.join(dir, 'data', 'a'), { recursive: true });
  await sharp({ create: { width: 32, height: 32, channels: 3, background: '#808080' } }).jpeg().toFile(path.join(dir, 'data', 'a', '1.jpg'));
  const r = await xferHere('extract', '--model', 'mobilenet_v2', '--layers', 'block_13_expand_rel', '--data', path.join(dir, 'data'), '--out', path.join(dir, 'f'), '--quiet');
  assertCleanError(r, /unknown tap "block_13_expand_rel"; closest: block_13_expand_relu/);
});
