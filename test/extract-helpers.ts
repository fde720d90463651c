/**
 * Fixtures for the extract tests (not a test file itself): a tiny ONNX backbone with a card, a small
 * generated ImageFolder dataset, and ways to run the extract/merge CLI: in a child process, or in
 * this one (no process start and module load: about half the CPU of a small run).
 */
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { emptyGraph, floatTensor, makeModel, node, valueInfo } from '../src/onnx/builder.js';
import { findPython } from './helpers/python.js';
import { writeOnnxFile } from '../src/onnx/io.js';
import { DataType } from '../src/onnx/proto.js';
import { tempDir } from './helpers/tmp.js';
import { runExtractProgram } from './extract-program.js';
import { runInProcess } from './helpers/in-process.js';

export const HERE = path.dirname(fileURLToPath(import.meta.url));
/** dist/test/extract-cli.js — a CLI with only `extract` and `merge` (independent of other commands). */
export const CLI = path.join(HERE, 'extract-cli.js');

/** A temporary folder, removed when the test process exits (helpers/tmp.ts). */
export function tmpDir(prefix = 'xfer-extract-'): Promise<string> {
  return tempDir(prefix);
}

/** Remember XFER_CACHE as it is now; returns the function that puts that value back. */
export function keepCacheEnv(): () => void {
  const saved = process.env.XFER_CACHE;
  return () => {
    if (saved === undefined) delete process.env.XFER_CACHE;
    else process.env.XFER_CACHE = saved;
  };
}

/**
 * Point XFER_CACHE at `<dir>/cache` (worker threads copy process.env when they start, so set it
 * before opening any); returns the function that puts the previous value back.
 */
export function useCacheIn(dir: string): () => void {
  const restore = keepCacheEnv();
  process.env.XFER_CACHE = path.join(dir, 'cache');
  return restore;
}

/** Deterministic pseudo-random numbers. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

/** A one-conv model whose weights live in `<folder>/w.bin` (version k of them), written to `<folder>/ext.onnx`. */
export async function makeExternalModel(folder: string, k: number): Promise<string> {
  await mkdir(folder, { recursive: true });
  await writeFile(path.join(folder, 'w.bin'), Buffer.from(Float32Array.from({ length: 108 }, (_, i) => Math.sin(i * k)).buffer));
  const g = emptyGraph('ext');
  g.input.push(valueInfo('x', DataType.FLOAT, ['N', 3, 32, 32]));
  g.initializer.push({
    name: 'w1',
    dims: [4, 3, 3, 3],
    dataType: DataType.FLOAT,
    dataLocation: 1,
    externalData: [
      { key: 'location', value: 'w.bin' },
      { key: 'offset', value: '0' },
      { key: 'length', value: '432' },
    ],
  });
  g.node.push(node('Conv', ['x', 'w1'], ['c1'], { pads: [1, 1, 1, 1], kernel_shape: [3, 3] }), node('Relu', ['c1'], ['r1']));
  g.output.push(valueInfo('r1', DataType.FLOAT, ['N', 4, 32, 32]));
  const model = path.join(folder, 'ext.onnx');
  await writeOnnxFile(model, makeModel(g));
  return model;
}

/**
 * A tiny NCHW backbone on 32×32 RGB input: conv1 (3→4, 3×3, pad 1) → relu1 → conv2 (4→6, 3×3, stride 2) → relu2.
 * Tappable: relu1 [4,32,32], relu2 [6,16,16]. Card default tap relu2 with avg pooling.
 */
export async function makeTinyModel(dir: string): Promise<{ model: string; card: string }> {
  const r = rng(7);
  const w = (n: number) => Array.from({ length: n }, () => r() - 0.5);
  const g = emptyGraph('tiny');
  g.input.push(valueInfo('x', DataType.FLOAT, ['N', 3, 32, 32]));
  g.initializer.push(floatTensor('w1', [4, 3, 3, 3], w(4 * 27)), floatTensor('b1', [4], w(4)));
  g.initializer.push(floatTensor('w2', [6, 4, 3, 3], w(6 * 36)), floatTensor('b2', [6], w(6)));
  g.node.push(node('Conv', ['x', 'w1', 'b1'], ['conv1'], { pads: [1, 1, 1, 1], kernel_shape: [3, 3] }));
  g.node.push(node('Relu', ['conv1'], ['relu1']));
  g.node.push(node('Conv', ['relu1', 'w2', 'b2'], ['conv2'], { pads: [1, 1, 1, 1], strides: [2, 2], kernel_shape: [3, 3] }));
  g.node.push(node('Relu', ['conv2'], ['relu2']));
  g.output.push(valueInfo('relu2', DataType.FLOAT, ['N', 6, 16, 16]));
  const model = path.join(dir, 'tiny.onnx');
  await writeOnnxFile(model, makeModel(g));
  const card = path.join(dir, 'tiny.card.json');
  await writeFile(
    card,
    JSON.stringify({
      id: 'tiny',
      description: 'test backbone',
      source: 'test',
      license: 'MIT',
      input: { size: [32, 32], layout: 'NCHW', channel_order: 'RGB', dtype: 'float32', range: [0, 1], mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25] },
      resize: { policy: 'crop', crop_pct: 0.875, interpolation: 'bilinear' },
      taps: { recommended: ['relu1', 'relu2'], default: 'relu2', pool: 'avg' },
    }),
  );
  return { model, card };
}

/** root/<class>/img_XXX.jpg with `perClass` random JPEGs per class (sizes vary). */
export async function makeDataset(root: string, classes: string[], perClass: number, seed = 1): Promise<string[]> {
  const r = rng(seed);
  const files: string[] = [];
  for (const c of classes) {
    await mkdir(path.join(root, c), { recursive: true });
    for (let i = 0; i < perClass; i++) {
      const w = 24 + Math.floor(r() * 40);
      const h = 24 + Math.floor(r() * 40);
      const px = Buffer.alloc(w * h * 3);
      for (let j = 0; j < px.length; j++) px[j] = Math.floor(r() * 256);
      const f = path.join(root, c, `img_${String(i).padStart(3, '0')}.jpg`);
      await sharp(px, { raw: { width: w, height: h, channels: 3 } }).jpeg({ quality: 85 }).toFile(f);
      files.push(f);
    }
  }
  return files;
}

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export function runCli(args: string[], env: NodeJS.ProcessEnv = {}): Promise<CliResult> {
  return runScript(CLI, args, env);
}

/** Run a node script (the test CLI, or bin/xfer.js) to its end, collecting its output. */
export function runScript(script: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [script, ...args], { env: { ...process.env, XFER_NO_AUTO_SHARD: '1', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}

/** runCli in this process (helpers/in-process.ts): same arguments, environment, exit code and output. */
export function runCliHere(args: string[], env: NodeJS.ProcessEnv = {}): Promise<CliResult> {
  return runInProcess(runExtractProgram, CLI, args, { XFER_NO_AUTO_SHARD: '1', ...env });
}

export function spawnCli(args: string[], env: NodeJS.ProcessEnv = {}): ChildProcess {
  return spawn(process.execPath, [CLI, ...args], { env: { ...process.env, XFER_NO_AUTO_SHARD: '1', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Every file under dir (relative path → bytes), skipping meta.json (it holds a timestamp). */
export async function folderBytes(dir: string, skip: string[] = ['meta.json']): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  const walk = async (rel: string) => {
    for (const e of await readdir(path.join(dir, rel), { withFileTypes: true })) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) await walk(r);
      else if (!skip.includes(r)) out.set(r, await readFile(path.join(dir, r)));
    }
  };
  await walk('');
  return out;
}

export function havePythonNumpy(): boolean {
  return findPython(['numpy']) !== null;
}

/** The Python interpreter with numpy (see helpers/python.ts). */
export function pythonWithNumpy(): string {
  return findPython(['numpy']) ?? 'python3';
}
