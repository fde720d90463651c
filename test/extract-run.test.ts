/**
 * End-to-end `xfer extract` / `xfer merge` runs on a tiny ONNX backbone and a few generated JPEGs:
 * output format, numpy compatibility, resume after kill -9 and Ctrl-C, shard + merge, job files,
 * refusing another model's folder, --strict, and a full disk. The reference run and the runs that
 * are killed or interrupted are child processes; the others run the same program in this process
 * (runCliHere: same exit codes and output, without a process start each).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { cp, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { spawnSync, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { folderBytes, havePythonNumpy, pythonWithNumpy, makeDataset, makeTinyModel, runCli, runCliHere, spawnCli, tmpDir, type CliResult } from './extract-helpers.js';
import { DEFAULT_BATCH_CPU } from '../src/runtime/plan.js';

let dir: string;
let model: string;
let card: string;
let data: string;
let ref: string;
let strictOut: string;
let strict: CliResult;
/** 3 classes × 12 JPEGs + one text file named .jpg = 37 inputs; 8 rows per shard → 5 shards. */
const base = () => ['extract', '--model', model, '--card', card, '--data', data, '--batch', '4', '--shard-rows', '8', '--quiet'];

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- meta.json is checked field by field below
function meta(out: string): Promise<Record<string, any>> {
  return readFile(path.join(out, 'meta.json'), 'utf8').then((t) => JSON.parse(t));
}

async function assertSameFolder(a: string, b: string, ignoreMeta: string[] = []): Promise<void> {
  const fa = await folderBytes(a);
  const fb = await folderBytes(b);
  assert.deepEqual([...fa.keys()].sort(), [...fb.keys()].sort());
  for (const [k, v] of fa) assert.ok(v.equals(fb.get(k)!), `${k} differs`);
  const ma = await meta(a);
  const mb = await meta(b);
  delete ma.created;
  delete mb.created;
  delete ma.model.file;
  delete mb.model.file;
  for (const k of ignoreMeta) {
    delete ma[k];
    delete mb[k];
  }
  assert.deepEqual(ma, mb);
}

/** Resolves once the child (run with --json) has reported `n` committed shards on stdout; rejects if it ends first. */
function shardsReported(child: ChildProcess, n: number): Promise<void> {
  return new Promise((resolve, reject) => {
    let seen = 0;
    let buf = '';
    const onData = (d: Buffer) => {
      buf += d.toString();
      const lines = buf.split('\n');
      buf = lines.pop()!;
      for (const l of lines) if (l.includes('"event":"shard"') && ++seen === n) {
        child.stdout!.off('data', onData);
        child.off('close', onClose);
        resolve();
      }
    };
    const onClose = (code: number | null) => reject(new Error(`the run ended (exit ${code}) after ${seen} of ${n} shards`));
    child.stdout!.on('data', onData);
    child.once('close', onClose);
  });
}

describe('xfer extract (end to end)', () => {
  before(async () => {
    dir = await tmpDir();
    ({ model, card } = await makeTinyModel(dir));
    data = path.join(dir, 'data');
    await makeDataset(data, ['ants', 'bees', 'wasps'], 12);
    await writeFile(path.join(data, 'bees', 'zz_not_an_image.jpg'), 'hello, I am text\n');
    ref = path.join(dir, 'ref');
    strictOut = path.join(dir, 'strict');
    // Two tests read the --strict run's folder (one copies it): run it once, beside the reference run.
    let r: CliResult;
    [r, strict] = await Promise.all([runCli([...base(), '--out', ref]), runCliHere([...base(), '--out', strictOut, '--strict'])]);
    assert.equal(r.code, 3, `exit 3 when inputs were skipped; stderr: ${r.stderr}`);
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  test('writes the documented folder: meta, labels, index, errors, shards', async () => {
    const m = await meta(ref);
    assert.equal(m.format, 'xfer-features');
    assert.equal(m.complete, true);
    assert.deepEqual(m.counts, { images: 36, errors: 1, shards: 5, rows_per_shard: 8 });
    assert.deepEqual(m.layers, [{ name: 'relu2', dir: 'relu2', pool: 'avg', shape: [6], dtype: 'float32' }]);
    assert.equal(m.model.id, 'tiny');
    assert.equal(m.data.items, 37);
    assert.deepEqual(JSON.parse(await readFile(path.join(ref, 'labels.json'), 'utf8')), ['ants', 'bees', 'wasps']);
    const index = (await readFile(path.join(ref, 'index.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l));
    assert.equal(index.length, 36);
    index.forEach((r, i) => assert.equal(r.row, i));
    assert.deepEqual(index[0], { row: 0, path: 'ants/img_000.jpg', label: 'ants', label_index: 0, split: null, shard: 0, shard_row: 0 });
    const errors = (await readFile(path.join(ref, 'errors.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l));
    assert.equal(errors.length, 1);
    assert.equal(errors[0].path, 'bees/zz_not_an_image.jpg');
    assert.equal(errors[0].shard, 3);
    // Shard 3 holds inputs 24..31, one of them unusable: 7 rows.
    assert.equal(index.filter((r) => r.shard === 3).length, 7);
  });

  test('numpy reads the shards unchanged', { skip: !havePythonNumpy() && 'python3 with numpy not installed' }, () => {
    const py = `
import numpy as np, json, glob
rows = [json.loads(l) for l in open("${ref}/index.jsonl")]
a = np.concatenate([np.load(f) for f in sorted(glob.glob("${ref}/relu2/*.npy"))])
assert a.dtype == np.float32 and a.shape == (len(rows), 6), (a.dtype, a.shape)
assert np.isfinite(a).all() and (a >= 0).all()
print(a.shape)`;
    const r = spawnSync(pythonWithNumpy(), ['-c', py], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /\(36, 6\)/);
  });

  test('--dtype float16 writes <f2 shards close to float32', async () => {
    const out = path.join(dir, 'f16');
    const r = await runCliHere([...base(), '--out', out, '--dtype', 'float16']);
    assert.equal(r.code, 3, r.stderr);
    const head = (await readFile(path.join(out, 'relu2', '00000.npy'))).subarray(0, 128).toString('latin1');
    assert.match(head, /'descr': '<f2'/);
    if (havePythonNumpy()) {
      const py = `import numpy as np; a=np.load("${out}/relu2/00000.npy"); b=np.load("${ref}/relu2/00000.npy"); assert a.dtype==np.float16; assert np.allclose(a.astype(np.float32), b, rtol=1e-2, atol=1e-3)`;
      const p = spawnSync(pythonWithNumpy(), ['-c', py], { encoding: 'utf8' });
      assert.equal(p.status, 0, p.stderr);
    }
  });

  test('kill -9 mid-run, then --resume: byte-identical to an uninterrupted run', async () => {
    const out = path.join(dir, 'killed');
    // The run holds after its second shard until it is killed.
    const child = spawnCli([...base(), '--out', out, '--json'], { XFER_TEST_HOLD_AFTER_SHARDS: '2' });
    await shardsReported(child, 2);
    child.kill('SIGKILL');
    await new Promise((r) => child.once('close', r));
    const m = await meta(out);
    assert.equal(m.complete, false);
    assert.equal(m.counts.shards, 2, 'killed after its second shard');
    const r = await runCliHere([...base(), '--out', out, '--resume']);
    assert.equal(r.code, 3, r.stderr);
    await assertSameFolder(out, ref);
  });

  test('Ctrl-C stops after the batch in flight (exit 130); --resume completes identically', async () => {
    const out = path.join(dir, 'sigint');
    // The run holds after its first shard until Ctrl-C; the batches already at the backbone are then finished.
    const child = spawnCli([...base(), '--out', out, '--json'], { XFER_TEST_HOLD_AFTER_SHARDS: '1' });
    await shardsReported(child, 1);
    child.kill('SIGINT');
    const code = await new Promise<number | null>((r) => child.once('close', (c) => r(c)));
    assert.equal(code, 130);
    assert.equal((await meta(out)).complete, false);
    const again = await runCliHere([...base(), '--out', out]);
    assert.equal(again.code, 2, 'an unfinished folder needs --resume');
    assert.match(again.stderr, /--resume/);
    const r = await runCliHere([...base(), '--out', out, '--resume']);
    assert.equal(r.code, 3, r.stderr);
    await assertSameFolder(out, ref);
    const noop = await runCliHere([...base(), '--out', out, '--resume', '--json']);
    assert.equal(noop.code, 3);
    const summary = JSON.parse(noop.stdout.trim().split('\n').pop()!);
    assert.equal(summary.event, 'summary');
    assert.equal(summary.imagesThisRun, 0);
  });

  test('--shard i/n parts + xfer merge equal the single run (2 and 3 parts, flag and env)', async () => {
    const parts2 = [0, 1].map((i) => path.join(dir, `p2-${i}`));
    // The parts are independent runs (as on a cluster): all five at once.
    const runs = await Promise.all([
      ...parts2.map((p, i) => runCliHere([...base(), '--out', p, '--shard', `${i}/2`])),
      // Kubernetes Indexed Job style: index from JOB_COMPLETION_INDEX, count from XFER_SHARDS, {shard} in --out.
      ...[0, 1, 2].map((i) => runCliHere([...base(), '--out', path.join(dir, 'p3-{shard}')], { XFER_NO_AUTO_SHARD: '', JOB_COMPLETION_INDEX: String(i), XFER_SHARDS: '3' })),
    ]);
    for (const r of runs) assert.ok(r.code === 0 || r.code === 3, r.stderr);
    assert.equal((await meta(path.join(dir, 'p3-2'))).shard.index, 2);
    // A merge that fails half-way leaves an unfinished <out>; the same merge run again starts it over.
    const broken = path.join(dir, 'p2-1-broken');
    await cp(parts2[1], broken, { recursive: true });
    await rm(path.join(broken, 'relu2', '00001.npy'));
    const m2 = path.join(dir, 'merged2');
    const m3 = path.join(dir, 'merged3');
    const m2b = path.join(dir, 'merged2-retry');
    // Four independent merges at once.
    const [r2, r3, missing, failed] = await Promise.all([
      runCliHere(['merge', m2, parts2[1], parts2[0]]),
      runCliHere(['merge', m3, ...[0, 1, 2].map((i) => path.join(dir, `p3-${i}`))]),
      runCliHere(['merge', path.join(dir, 'bad-merge'), parts2[0]]),
      runCliHere(['merge', m2b, parts2[0], broken]),
    ]);
    assert.equal(r2.code, 3, r2.stderr);
    await assertSameFolder(m2, ref);
    assert.equal(r3.code, 3, r3.stderr);
    await assertSameFolder(m3, ref);
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /missing part/);
    assert.equal(failed.code, 1, failed.stderr);
    assert.equal((await meta(m2b)).complete, false);
    const retry = await runCliHere(['merge', m2b, parts2[0], parts2[1]]);
    assert.equal(retry.code, 3, retry.stderr);
    await assertSameFolder(m2b, ref);
    const done = await runCliHere(['merge', m2b, parts2[0], parts2[1]]);
    assert.equal(done.code, 2, 'a complete merge output needs --overwrite');
  });

  test('--workers 1 --threads 2 and --background are parsed and applied', async () => {
    const out = path.join(dir, 'w1');
    const [bad, badBg, r] = await Promise.all([
      runCliHere([...base(), '--out', path.join(dir, 'w0'), '--workers', '0']),
      runCliHere([...base(), '--out', path.join(dir, 'bg0'), '--background', '1,2']),
      runCliHere([...base(), '--out', out, '--workers', '1', '--threads', '2', '--background', '0,0,0']),
    ]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--workers: expected a positive integer, got "0"/);
    assert.equal(badBg.code, 2);
    assert.match(badBg.stderr, /--background: expected r,g,b/);
    assert.equal(r.code, 3, r.stderr);
    const m = await meta(out);
    assert.deepEqual(m.preprocessing.background, [0, 0, 0]);
    assert.deepEqual(m.counts, (await meta(ref)).counts);
  });

  test(`on CPU --batch only changes speed: batch 1, 3 and the default (${DEFAULT_BATCH_CPU}) write the same bytes as batch 4`, async () => {
    const noBatch = base().filter((a, i, all) => a !== '--batch' && all[i - 1] !== '--batch');
    const batches = [['--batch', '1'], ['--batch', '3'], []];
    const outs = batches.map((b) => path.join(dir, `batch${b[1] ?? 'default'}`));
    const runs = await Promise.all(batches.map((b, i) => runCliHere([...noBatch, ...b, '--out', outs[i]])));
    for (const [i, b] of batches.entries()) {
      const out = outs[i];
      const r = runs[i];
      assert.equal(r.code, 3, r.stderr);
      const m = await meta(out);
      assert.equal(m.batch, b.length ? Number(b[1]) : DEFAULT_BATCH_CPU, 'meta.json records the batch used');
      await assertSameFolder(out, ref, ['batch']);
    }
  });

  test('refuses an --out holding another model/layers unless --overwrite', async () => {
    const out = path.join(dir, 'refuse');
    await cp(ref, out, { recursive: true });
    const notOurs = path.join(dir, 'not-ours');
    await mkdir(notOurs);
    await writeFile(path.join(notOurs, 'thesis.tex'), 'x');
    // The refusals on `out` one after the other (each takes the folder's lock), the one on notOurs beside them.
    const refusals = async () => [await runCliHere([...base(), '--out', out, '--layers', 'relu1']), await runCliHere([...base(), '--out', out, '--layers', 'relu1', '--resume'])];
    const [[r, r2], r3] = await Promise.all([refusals(), runCliHere([...base(), '--out', notOurs, '--overwrite'])]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /already holds different features/);
    assert.match(r.stderr, /--overwrite/);
    assert.equal(r2.code, 2, 'resume does not mix models either');
    const ok = await runCliHere([...base(), '--out', out, '--layers', 'relu1', '--pool', 'max', '--overwrite']);
    assert.equal(ok.code, 3, ok.stderr);
    const m = await meta(out);
    assert.deepEqual(m.layers[0], { name: 'relu1', dir: 'relu1', pool: 'max', shape: [4], dtype: 'float32' });
    assert.equal(r3.code, 2);
    assert.match(r3.stderr, /not an xfer feature folder/);
  });

  test('--strict stops at the first skipped input with exit 1, keeping finished shards', async () => {
    assert.equal(strict.code, 1, strict.stderr);
    const m = await meta(strictOut);
    assert.equal(m.counts.shards, 4, 'shards 0..3 (the one with the bad input) committed');
    assert.equal(m.complete, false);
  });

  test('a folder started before ICC profiles were ignored by default resumes with --apply-icc, and says so without it', async () => {
    const out = path.join(dir, 'pre-icc');
    assert.equal(strict.code, 1, 'an unfinished folder');
    await cp(strictOut, out, { recursive: true });
    const m = await meta(out);
    assert.equal(m.preprocessing.apply_icc, false);
    delete m.preprocessing.apply_icc; // as written by the earlier xfer
    await writeFile(path.join(out, 'meta.json'), JSON.stringify(m, null, 2) + '\n');
    const plain = await runCliHere([...base(), '--out', out, '--resume']);
    assert.equal(plain.code, 2, plain.stderr);
    assert.match(plain.stderr, /preprocessing apply_icc true vs false \(extracted with ICC profiles applied: resume with --apply-icc\)/);
    const r = await runCliHere([...base(), '--out', out, '--resume', '--apply-icc']);
    assert.equal(r.code, 3, r.stderr);
    // (the generated JPEGs carry no profile, so the features equal the reference run's)
    await assertSameFolder(out, ref, ['preprocessing']);
    assert.equal((await meta(out)).complete, true);
  });

  test('--jobs (YAML) runs every job; --resume skips finished ones', async () => {
    const jobs = path.join(dir, 'jobs.yaml');
    await writeFile(
      jobs,
      `defaults:\n  batch: 4\n  shard_rows: 8\njobs:\n  - name: pooled\n    model: ${model}\n    card: ${card}\n    data: data\n    out: jobs-out/pooled\n  - name: early\n    model: ${model}\n    card: ${card}\n    layers: [relu1]\n    pool: max\n    dtype: float16\n    data: data\n    out: jobs-out/early\n`,
    );
    const r = await runCliHere(['extract', '--jobs', jobs, '--json']);
    assert.equal(r.code, 3, r.stderr);
    const summaries = r.stdout.trim().split('\n').map((l) => JSON.parse(l)).filter((e) => e.event === 'summary');
    assert.deepEqual(summaries.map((s) => s.job), ['pooled', 'early']);
    await assertSameFolder(path.join(dir, 'jobs-out', 'pooled'), ref);
    assert.equal((await meta(path.join(dir, 'jobs-out', 'early'))).dtype, 'float16');
    const again = await runCliHere(['extract', '--jobs', jobs, '--resume', '--json']);
    assert.equal(again.code, 3);
    const s2 = again.stdout.trim().split('\n').map((l) => JSON.parse(l)).filter((e) => e.event === 'summary');
    assert.deepEqual(s2.map((s) => s.imagesThisRun), [0, 0]);
    // A bad device in the second job fails before the first job runs, naming the file and the job.
    const badJobs = path.join(dir, 'jobs-bad.yaml');
    await writeFile(badJobs, `jobs:\n  - name: one\n    model: ${model}\n    card: ${card}\n    data: data\n    out: jobs-bad/one\n  - name: two\n    model: ${model}\n    card: ${card}\n    data: data\n    out: jobs-bad/two\n    device: gpu\n`);
    const [bad, badCard, badDev] = await Promise.all([
      runCliHere(['extract', '--jobs', jobs, '--model', model]),
      runCliHere(['extract', '--jobs', jobs, '--mean', '0.5,0.5,0.5']),
      runCliHere(['extract', '--jobs', badJobs]),
    ]);
    assert.equal(bad.code, 2);
    assert.equal(badCard.code, 2);
    assert.match(badCard.stderr, /--jobs: card-override flags .* cannot be combined with a job file/);
    assert.equal(badDev.code, 2);
    assert.ok(badDev.stderr.includes(`--jobs ${badJobs}: job "two": "device" expected auto, cpu, cuda or cuda:<id>, got "gpu"`), badDev.stderr);
    await assert.rejects(readFile(path.join(dir, 'jobs-bad', 'one', 'meta.json')), 'no job ran');
  });

  const canMount = process.getuid?.() === 0 && spawnSync('sh', ['-c', 'd=$(mktemp -d) && mount -t tmpfs -o size=64k tmpfs "$d" && umount "$d" && rmdir "$d"']).status === 0;
  test('a full disk: clear error, finished shards kept, --resume completes after space is freed', { skip: !canMount && 'needs root and tmpfs mounts (the writer unit test covers ENOSPC with an injected write)' }, async () => {
    const mnt = path.join(dir, 'tiny-disk');
    await mkdir(mnt);
    // relu1 flattened: 4×32×32 float32 = 16 KiB per row, 128 KiB per shard of 8 rows.
    assert.equal(spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=320k', 'tmpfs', mnt]).status, 0);
    try {
      const out = path.join(mnt, 'feat');
      const args = [...base(), '--out', out, '--layers', 'relu1', '--pool', 'flatten'];
      const full = path.join(dir, 'flat-ref');
      // The uninterrupted reference (on the big disk) runs beside the one that fills the small disk.
      const [r, r3] = await Promise.all([runCliHere(args), runCliHere([...base(), '--out', full, '--layers', 'relu1', '--pool', 'flatten'])]);
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, /disk full \(ENOSPC\)/);
      assert.match(r.stderr, /--resume/);
      const m = await meta(out);
      assert.ok(m.counts.shards >= 1 && m.counts.shards < 5, `kept ${m.counts.shards} shards`);
      assert.equal(m.complete, false);
      assert.equal(spawnSync('mount', ['-o', 'remount,size=4m', mnt]).status, 0);
      const r2 = await runCliHere([...args, '--resume']);
      assert.equal(r2.code, 3, r2.stderr);
      assert.equal(r3.code, 3);
      await assertSameFolder(out, full);
    } finally {
      spawnSync('umount', [mnt]);
    }
  });
});
