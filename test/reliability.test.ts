/**
 * Adversarial corpus (docs/reliability.md), generated at test time: corrupt, truncated, bomb-sized and
 * unusual images; damaged feature folders; tampered heads; paths in meta.json / head.json / cards that
 * lead out of their folder ("..", absolute, symlinks); a second writer on a locked folder. Each case
 * checks the exit code (or the XferError's), a one-line message naming the file, and that nothing
 * outside the folder written (--out) changed.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmod, cp, lstat, mkdir, readFile, readdir, readlink, rm, symlink, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { crc32 } from 'node:zlib';
import sharp from 'sharp';
import { makeDataset, makeTinyModel, runCli, runCliHere, runScript, tmpDir, type CliResult } from './extract-helpers.js';
import { runInProcess } from './helpers/in-process.js';
import { main } from '../src/cli/main.js';
import { blobs, writeFolder } from './heads-helpers.js';
import { REPO_ROOT } from './helpers/paths.js';
import { XferError } from '../src/errors.js';
import { openFeatures } from '../src/features/reader.js';
import { encodeNpy } from '../src/features/npy.js';
import { loadHead } from '../src/heads/model.js';
import { trainHead } from '../src/heads/train.js';
import { requireCard, resolveBackbone } from '../src/model/registry.js';
import { lockFolder, LOCK_DIR } from '../src/util/lock.js';
import { checkBatchMemory, formedBatch } from '../src/extract/batch-bound.js';

const BIN = path.join(REPO_ROOT, 'bin', 'xfer.js');

let dir: string;
let model: string;
let data: string;
/** A folder of someone else's files next to every output: it must never change. */
let victim: string;
/** A complete feature folder extracted from `data` (copied before being damaged). */
let good: string;
let head: string;

const extractArgs = (out: string, more: string[]) => ['extract', '--model', model, '--data', data, '--out', out, '--batch', '2', '--shard-rows', '4', '--quiet', ...more];
// The commands run in this process (helpers/in-process.ts), except where the test needs another
// process (a lock held by this one): extractChild and xferChild.
const extract = (out: string, ...more: string[]) => runCliHere(extractArgs(out, more));
const extractChild = (out: string, ...more: string[]) => runCli(extractArgs(out, more));

function xfer(args: string[]): Promise<CliResult> {
  return runInProcess(main, BIN, args);
}

function xferChild(args: string[]): Promise<CliResult> {
  return runScript(BIN, args);
}

/** Every file (bytes), symlink (target) and folder under `root`, except the subtree `skip`. */
async function snapshot(root: string, skip: string | null = null): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const walk = async (abs: string) => {
    if (skip && path.resolve(abs) === path.resolve(skip)) return;
    const st = await lstat(abs);
    const rel = path.relative(root, abs) || '.';
    if (st.isSymbolicLink()) out.set(rel, `link:${await readlink(abs)}`);
    else if (st.isDirectory()) {
      out.set(rel, 'dir');
      for (const e of await readdir(abs)) await walk(path.join(abs, e));
    } else out.set(rel, (await readFile(abs)).toString('base64'));
  };
  await walk(root);
  return out;
}

/** Exit `code`, exactly one `error:` line on stderr, matching `re`, and no stack trace. */
function assertRefused(r: CliResult, code: number, re: RegExp): void {
  assert.equal(r.code, code, `exit ${r.code}; stderr: ${r.stderr}`);
  const lines = r.stderr.split('\n').filter((l) => l.startsWith('error: '));
  assert.equal(lines.length, 1, r.stderr);
  assert.match(lines[0], re);
  assert.doesNotMatch(r.stderr, /\n\s+at .*:\d+:\d+/, 'no stack trace');
}

/** The promise rejects with an exit-2 XferError whose message matches `re`. */
async function rejects2(p: Promise<unknown>, re: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof XferError, String(e));
    assert.equal(e.exitCode, 2);
    assert.match(e.message, re);
    assert.doesNotMatch(e.message, /\n/);
    return true;
  });
}

/** Run `fn`; assert that nothing under `dir` changed except inside `out`. */
async function outsideUnchanged(out: string | null, fn: () => Promise<void>): Promise<void> {
  const before = await snapshot(dir, out);
  await fn();
  assert.deepEqual(await snapshot(dir, out), before, 'files outside the output changed');
}

/** A PNG whose header claims w×h pixels (no image data: a decompression bomb stand-in). */
function pngHeaderOnly(w: number, h: number): Buffer {
  const chunk = (type: string, body: Buffer) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(body.length);
    const tb = Buffer.concat([Buffer.from(type, 'latin1'), body]);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(tb));
    return Buffer.concat([len, tb, crc]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w, 0);
  ihdr.writeUInt32BE(h, 4);
  ihdr[8] = 8;
  ihdr[9] = 2;
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk('IHDR', ihdr), chunk('IEND', Buffer.alloc(0))]);
}

describe('adversarial inputs', () => {
  before(async () => {
    dir = await tmpDir('xfer-reliab-');
    ({ model } = await makeTinyModel(dir));
    data = path.join(dir, 'data');
    await makeDataset(data, ['ants', 'bees'], 3);
    victim = path.join(dir, 'victim');
    await mkdir(path.join(victim, 'relu2'), { recursive: true });
    await writeFile(path.join(victim, 'relu2', '00000.npy'), encodeNpy(new Float32Array(6), 'float32', [1, 6]));
    await writeFile(path.join(victim, 'precious.txt'), 'do not touch\n');
    good = path.join(dir, 'good');
    const r = await extract(good);
    assert.equal(r.code, 0, r.stderr);
    const feats = await writeFolder(path.join(dir, 'synth'), blobs(40, 5, 2, 3));
    head = path.join(dir, 'head');
    await trainHead({ features: feats, head: 'linear', out: head, transforms: 'standardize' });
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  test('images: corrupt, truncated, empty, bomb-sized and text files are skipped one line each; unusual ones are extracted', async () => {
    const corpus = path.join(dir, 'corpus');
    await cp(data, corpus, { recursive: true });
    const a = path.join(corpus, 'ants');
    const jpg = await readFile(path.join(a, 'img_000.jpg'));
    const bad: Record<string, Buffer> = {
      'x_random.jpg': Buffer.from(Array.from({ length: 3000 }, (_, i) => (i * 7919) % 251)),
      'x_truncated.jpg': jpg.subarray(0, Math.floor(jpg.length / 3)),
      'x_empty.jpg': Buffer.alloc(0),
      'x_bomb.png': pngHeaderOnly(60000, 60000),
      'x_text.jpg': Buffer.from('hello, I am text\n'),
    };
    for (const [n, b] of Object.entries(bad)) await writeFile(path.join(a, n), b);
    const rgb = (w: number, h: number) => sharp(Buffer.alloc(w * h * 3, 90), { raw: { width: w, height: h, channels: 3 } });
    await rgb(1, 1).png().toFile(path.join(a, 'u_1x1.png'));
    await rgb(1, 400).jpeg().toFile(path.join(a, 'u_thin.jpg'));
    await sharp(Buffer.alloc(8 * 8 * 4, 128), { raw: { width: 8, height: 8, channels: 4 } }).png().toFile(path.join(a, 'u_alpha.png'));
    await rgb(16, 16).toColourspace('b-w').png({ palette: false }).toFile(path.join(a, 'u_gray.png'));
    await rgb(16, 16).toColourspace('cmyk').jpeg().toFile(path.join(a, 'u_cmyk.jpg'));
    await rgb(16, 16).toColourspace('rgb16').png().toFile(path.join(a, 'u_16bit.png'));
    const out = path.join(dir, 'corpus-out');
    await outsideUnchanged(out, async () => {
      const r = await runCliHere(['extract', '--model', model, '--data', corpus, '--out', out, '--batch', '4']);
      assert.equal(r.code, 3, r.stderr);
      for (const n of Object.keys(bad)) assert.equal(r.stderr.split('\n').filter((l) => l.startsWith(`skipped ants/${n}: `)).length, 1, `one line for ${n}:\n${r.stderr}`);
      const errors = (await readFile(path.join(out, 'errors.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l).path);
      assert.deepEqual(errors.sort(), Object.keys(bad).map((n) => `ants/${n}`).sort());
      const rows = (await openFeatures(out)).index.map((x) => x.path);
      for (const u of ['u_1x1.png', 'u_thin.jpg', 'u_alpha.png', 'u_gray.png', 'u_cmyk.jpg', 'u_16bit.png']) assert.ok(rows.includes(`ants/${u}`), u);
    });
  });

  test('index.jsonl: renumbered, repeated positions and repeated paths are refused naming the line; so is a missing labels.json', async () => {
    const lines = (await readFile(path.join(good, 'index.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l));
    const variant = async (name: string, edit: (rows: Record<string, unknown>[]) => void): Promise<string> => {
      const d = path.join(dir, `idx-${name}`);
      await cp(good, d, { recursive: true });
      const rows = lines.map((l) => ({ ...l }));
      edit(rows);
      await writeFile(path.join(d, 'index.jsonl'), rows.map((l) => JSON.stringify(l) + '\n').join(''));
      return d;
    };
    // Two writers appending the same shard: row 1's line again where row 2 belongs.
    const dup = await variant('dup', (r) => (r[2] = { ...r[1] }));
    await rejects2(openFeatures(dup), /index\.jsonl:3: row number 1, expected 2/);
    await rejects2(openFeatures(await variant('pos', (r) => (r[2] = { ...r[1], row: 2 }))), /index\.jsonl:3: row 2 is at shard 0 position 1, like row 1/);
    await rejects2(openFeatures(await variant('path', (r) => (r[2] = { ...r[2], path: r[0].path }))), /index\.jsonl:3: row 2 repeats the path ants\/img_000\.jpg of row 0/);
    const nolabels = path.join(dir, 'nolabels');
    await cp(good, nolabels, { recursive: true });
    await rm(path.join(nolabels, 'labels.json'));
    await rejects2(openFeatures(nolabels), /labels\.json: missing/);
    // The CLI: exit 2, one line naming the file, and training wrote nothing.
    const out = path.join(dir, 'dup-head');
    await outsideUnchanged(out, async () => assertRefused(await xfer(['train', '--features', dup, '--out', out, '--quiet']), 2, /index\.jsonl:3: row number 1/));
    assert.equal(existsSync(out), false, 'a refused train leaves no folder behind');
  });

  test('meta.json layer folders leading out ("..", absolute, symlink) and root files linked out: extract --overwrite/--resume refuse before touching anything', async () => {
    const cases: [string, (d: string) => Promise<void>, string, RegExp][] = [
      ['dotdot', (d) => setLayerDir(d, '../victim/relu2'), '--overwrite', /meta\.json: layers\[0\]\.dir "\.\.\/victim\/relu2" leads outside its folder/],
      ['index-link', async (d) => {
        await rm(path.join(d, 'index.jsonl'));
        await symlink(path.join(victim, 'precious.txt'), path.join(d, 'index.jsonl'));
      }, '--resume', /: file "index\.jsonl" leads outside its folder through a symlink/],
    ];
    for (const [name, plant, flag, re] of cases) {
      const out = path.join(dir, `meta-${name}`);
      await cp(good, out, { recursive: true, verbatimSymlinks: true });
      await plant(out);
      const inside = await snapshot(out);
      // Nothing anywhere changes: not the victim, not the folder itself.
      await outsideUnchanged(null, async () => assertRefused(await extract(out, flag), 2, re));
      assert.deepEqual(await snapshot(out), inside);
    }
    // The same check guards the writer (above) and the reader (train, eval, predict): absolute and symlinked dirs.
    const abs = path.join(dir, 'meta-absolute');
    await cp(good, abs, { recursive: true });
    await setLayerDir(abs, path.join(victim, 'relu2'));
    await rejects2(openFeatures(abs), /meta\.json: layers\[0\]\.dir ".*victim\/relu2" is an absolute path/);
    const link = path.join(dir, 'meta-symlink');
    await cp(good, link, { recursive: true });
    await rm(path.join(link, 'relu2'), { recursive: true });
    await symlink(path.join(victim, 'relu2'), path.join(link, 'relu2'));
    await rejects2(openFeatures(link), /meta\.json: layers\[0\]\.dir "relu2" leads outside its folder through a symlink/);
    // The reader refuses the same folder (train, eval, predict read through it).
    const ro = path.join(dir, 'meta-read');
    await cp(good, ro, { recursive: true });
    await setLayerDir(ro, '../victim/relu2');
    await rejects2(openFeatures(ro), /layers\[0\]\.dir "\.\.\/victim\/relu2" leads outside/);
  });

  test('head.json array files leading out ("..", absolute, symlink) are refused before they are read', async () => {
    const plant: [string, (h: string, json: HeadJson) => Promise<void>, RegExp][] = [
      ['dotdot', async (_h, j) => void (j.arrays.W.file = '../victim/precious.txt'), /arrays\.W\.file "\.\.\/victim\/precious\.txt" leads outside/],
      ['absolute', async (_h, j) => void (j.arrays.W.file = '/etc/passwd'), /arrays\.W\.file "\/etc\/passwd" is an absolute path/],
      ['symlink', async (h) => {
        await rm(path.join(h, 'W.npy'));
        await symlink(path.join(victim, 'relu2', '00000.npy'), path.join(h, 'W.npy'));
      }, /arrays\.W\.file "W\.npy" leads outside its folder through a symlink/],
    ];
    for (const [name, edit, re] of plant) {
      const h = await tamperedHead(`path-${name}`, edit);
      await rejects2(loadHead(h), re);
    }
    const h = await tamperedHead('path-cli', async (_h, j) => void (j.arrays.W.file = '../victim/precious.txt'));
    const feats = path.join(dir, 'synth');
    await outsideUnchanged(path.join(h, 'eval-all'), async () => assertRefused(await xfer(['eval', '--head', h, '--features', feats]), 2, /head\.json: arrays\.W\.file .* leads outside/));
  });

  test('tampered heads: NaN weights, wrong shapes, short label lists, broken transform chains are refused naming head.json and the array', async () => {
    const W = async (h: string, values: Float32Array, shape: number[]) => writeFile(path.join(h, 'W.npy'), encodeNpy(values, 'float32', shape));
    const cases: [string, (h: string, j: HeadJson) => Promise<void>, RegExp][] = [
      ['nan', async (h, j) => {
        const v = new Float32Array(5 * 2).fill(0.5);
        v[3] = NaN;
        await W(h, v, j.arrays.W.shape);
      }, /head\.json: array W holds NaN at position 3/],
      ['inf', async (h, j) => {
        const v = new Float32Array(5 * 2);
        v[0] = Infinity;
        await W(h, v, j.arrays.W.shape);
      }, /head\.json: array W holds Infinity/],
      ['file-shape', async (h) => W(h, new Float32Array(3 * 2), [3, 2]), /head\.json: array file .*W\.npy holds shape \[3,2\] but head\.json declares \[5,2\]/],
      ['declared-shape', async (_h, j) => void (j.arrays.W.shape = [1280, 2]), /head\.json: array W has shape \[1280,2\], expected \[5, 2\]/],
      ['labels', async (_h, j) => void (j.labels = ['class0']), /head\.json: labels: 1 labels for 2 classes/],
      ['chain', async (_h, j) => void (j.transforms[0].dIn = 7), /head\.json: transforms\[0\] \(standardize\) maps 7 → 5 columns/],
      ['zero-scale', async (h) => writeFile(path.join(h, 't0_scale.npy'), encodeNpy(new Float32Array(5), 'float32', [5])), /transforms\[0\] array scale is 0 at position 0/],
      ['extra-array', async (_h, j) => void (j.arrays.Z = { ...j.arrays.b }), /head\.json: array Z is not part of this head/],
    ];
    for (const [name, edit, re] of cases) await rejects2(loadHead(await tamperedHead(name, edit)), re);
    // The CLI: eval exits 2 with one line instead of a NaN log-loss.
    const h = await tamperedHead('nan-cli', cases[0][1]);
    await outsideUnchanged(path.join(h, 'eval-all'), async () => assertRefused(await xfer(['eval', '--head', h, '--features', path.join(dir, 'synth')]), 2, /head\.json: array W holds NaN/));
  });

  test('a model card found beside a model names labels/file outside its folder: refused', async () => {
    const m = path.join(dir, 'cardmodel');
    await mkdir(m, { recursive: true });
    await cp(model, path.join(m, 'net.onnx'));
    const card = JSON.parse(await readFile(model.replace(/\.onnx$/, '.card.json'), 'utf8'));
    const cases: [Record<string, unknown>, RegExp, (() => Promise<void>)?][] = [
      [{ labels: '../victim/precious.txt' }, /net\.onnx\.card\.json: labels "\.\.\/victim\/precious\.txt" leads outside its folder/],
      [{ file: path.join(victim, 'net.onnx') }, /net\.onnx\.card\.json: file ".*" is an absolute path/],
      [{ labels: 'labels.txt' }, /labels "labels\.txt" leads outside its folder through a symlink/, () => symlink(path.join(victim, 'precious.txt'), path.join(m, 'labels.txt'))],
    ];
    for (const [fields, re, setup] of cases) {
      await writeFile(path.join(m, 'net.onnx.card.json'), JSON.stringify({ ...card, ...fields }));
      await setup?.();
      await rejects2(resolveBackbone(path.join(m, 'net.onnx')), re);
    }
    const out = path.join(dir, 'card-out');
    await outsideUnchanged(out, async () => assertRefused(await runCliHere(['extract', '--model', path.join(m, 'net.onnx'), '--data', data, '--out', out]), 2, /net\.onnx\.card\.json: labels/));
    assert.equal(existsSync(out), false);
  });

  test('a locked folder: a second writer (another process) is refused naming pid, host and start; a dead holder is taken over', async () => {
    const out = path.join(dir, 'locked');
    await cp(good, out, { recursive: true });
    const lock = await lockFolder(out, 'xfer test');
    try {
      const before = await snapshot(dir);
      const pidRe = new RegExp(`in use by xfer test \\(pid ${process.pid} on host ${os.hostname().replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}, since \\d{4}-\\d\\d-\\d\\dT`);
      assertRefused(await extractChild(out, '--resume'), 2, pidRe);
      assertRefused(await runCli(['merge', out, good]), 2, pidRe);
      assert.deepEqual(await snapshot(dir), before, 'the refused runs changed nothing');
    } finally {
      await lock.release();
    }
    assert.equal(existsSync(path.join(out, LOCK_DIR)), false);
    // A holder killed with -9 leaves its lock: the next run on the same host takes it over at once.
    const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
    await mkdir(path.join(out, LOCK_DIR));
    await writeFile(path.join(out, LOCK_DIR, 'owner.json'), JSON.stringify({ pid: Number(dead.stdout), host: os.hostname(), since: new Date().toISOString(), command: 'xfer extract', token: 'dead' }));
    const r = await extractChild(out, '--overwrite');
    assert.equal(r.code, 0, r.stderr);
    assert.equal(existsSync(path.join(out, LOCK_DIR)), false, 'released');
    // A run that stalled past the stale time on another host and lost its lock stops at its next
    // commit (the writer calls assertHeld), and leaves the new holder's lock alone.
    const lostDir = path.join(dir, 'lost');
    const lost = await lockFolder(lostDir, 'xfer test');
    await writeFile(path.join(lostDir, LOCK_DIR, 'owner.json'), JSON.stringify({ pid: 1, host: 'elsewhere', since: new Date().toISOString(), command: 'xfer extract', token: 'theirs' }));
    assert.throws(() => lost.assertHeld(), (e: unknown) => e instanceof XferError && e.exitCode === 1 && /lost: another process took this folder's lock over/.test(e.message));
    await lost.release();
    assert.equal(lost.lost, true);
    assert.ok(existsSync(path.join(lostDir, LOCK_DIR, 'owner.json')), "release leaves another holder's lock alone");
    // xfer train locks its head folder too.
    const hd = path.join(dir, 'locked-head');
    const hl = await lockFolder(hd, 'xfer test');
    try {
      assertRefused(await xferChild(['train', '--features', path.join(dir, 'synth'), '--out', hd, '--quiet']), 2, /--out .*locked-head: in use by xfer test/);
    } finally {
      await hl.release();
    }
  });

  test('--batch larger than the inputs allocates for the batch formed; an impossible batch is refused by memory', async () => {
    const out = path.join(dir, 'bigbatch');
    const r = await runCliHere(['extract', '--model', model, '--data', data, '--out', out, '--batch', '100000000', '--quiet']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(formedBatch(5000, 1024, 6, false), 6);
    assert.equal(formedBatch(5000, 1024, 6, true), 5000, 'CUDA pads every batch to --batch');
    assert.throws(
      () => checkBatchMemory(100_000_000, 224 * 224 * 3, 9, 2, 16 * 2 ** 30),
      (e: unknown) => e instanceof XferError && e.exitCode === 2 && /^--batch 100000000: the batches in flight need .* TiB|GiB/.test(e.message) && /--batch \d+ or less/.test(e.hint ?? ''),
    );
    checkBatchMemory(32, 224 * 224 * 3, 9, 2, 16 * 2 ** 30);
  });

  test('messages name the real cause: not an ONNX model, or no model card', async () => {
    const notModel = path.join(dir, 'photo.onnx');
    await cp(path.join(data, 'ants', 'img_000.jpg'), notModel);
    assertRefused(await runCliHere(['extract', '--model', notModel, '--data', data, '--out', path.join(dir, 'nm')]), 2, /photo\.onnx: not an ONNX model/);
    await rejects2((async () => requireCard(await resolveBackbone(notModel), 'x'))(), /photo\.onnx: not an ONNX model/);
    // An ONNX model without a card still says so.
    const bare = path.join(dir, 'bare');
    await mkdir(bare);
    await cp(model, path.join(bare, 'net.onnx'));
    await rejects2((async () => requireCard(await resolveBackbone(path.join(bare, 'net.onnx')), 'x'))(), /net\.onnx: no model card/);
  });

  test('a folder skipped for permissions becomes a warning (printed on stderr), not only an errors.jsonl line', async () => {
    const ds = path.join(dir, 'perm');
    await makeDataset(ds, ['ants', 'bees', 'secret'], 2);
    await chmod(ds, 0o755);
    await chmod(dir, 0o755);
    await chmod(path.join(ds, 'secret'), 0o000);
    try {
      // As root, permissions do not apply: the listing runs as nobody instead.
      const asNobody = process.getuid?.() === 0;
      const code = `const { discoverDataset } = await import(${JSON.stringify(new URL('../src/image/discover.js', import.meta.url).href)}); const d = await discoverDataset(${JSON.stringify(ds)}); process.stdout.write(JSON.stringify({ warnings: d.warnings, errors: d.errors }));`;
      const r = spawnSync(process.execPath, ['--input-type=module', '-e', code], { encoding: 'utf8', ...(asNobody ? { uid: 65534, gid: 65534 } : {}) });
      assert.equal(r.status, 0, r.stderr);
      const d = JSON.parse(r.stdout) as { warnings: string[]; errors: { path: string; reason: string }[] };
      assert.deepEqual(d.errors, [{ path: 'secret', reason: 'permission denied (folder skipped)' }]);
      assert.ok(d.warnings.includes('secret: permission denied (folder skipped)'), d.warnings.join('\n'));
    } finally {
      await chmod(path.join(ds, 'secret'), 0o755);
    }
  });
});

interface HeadJson {
  labels: string[];
  arrays: Record<string, { file: string; dtype: string; shape: number[] }>;
  transforms: { dIn: number; dOut: number }[];
}

/** A copy of the trained head with `edit` applied to its folder and head.json. */
async function tamperedHead(name: string, edit: (h: string, json: HeadJson) => Promise<void>): Promise<string> {
  const h = path.join(dir, `head-${name}`);
  await cp(head, h, { recursive: true });
  const file = path.join(h, 'head.json');
  const json = JSON.parse(await readFile(file, 'utf8')) as HeadJson;
  await edit(h, json);
  await writeFile(file, JSON.stringify(json));
  return h;
}

async function setLayerDir(d: string, value: string): Promise<void> {
  const f = path.join(d, 'meta.json');
  const m = JSON.parse(await readFile(f, 'utf8'));
  m.layers[0].dir = value;
  await writeFile(f, JSON.stringify(m));
}
