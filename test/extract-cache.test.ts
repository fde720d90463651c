/**
 * First use of a built-in backbone on a cold cache: the conversion must run once and never leave a
 * torn or missing cache file, whether extraction starts 2 inference workers or 2 worker threads ask
 * for the same built-in at once.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import { pathToFileURL } from 'node:url';
import { keepCacheEnv, makeDataset, tmpDir } from './extract-helpers.js';
import { extractFeatures } from '../src/extract/pipeline.js';
import { openFeatures } from '../src/features/reader.js';
import { readOnnxFile } from '../src/onnx/io.js';

let dir: string;
let restoreCache: () => void;

before(async () => {
  dir = await tmpDir('xfer-cache-');
  restoreCache = keepCacheEnv();
});

after(async () => {
  restoreCache();
  await rm(dir, { recursive: true, force: true });
});

test('extract with an empty XFER_CACHE and 2 workers converts mobilenet_v2 once and succeeds', async () => {
  const cache = path.join(dir, 'cache-extract');
  process.env.XFER_CACHE = cache; // worker threads copy process.env when they start
  const data = path.join(dir, 'data');
  await makeDataset(data, ['a', 'b'], 2);
  const notices: string[] = [];
  const out = path.join(dir, 'feat');
  const s = await extractFeatures({
    model: 'mobilenet_v2',
    data,
    out,
    batch: 2,
    workers: 2,
    device: { device: 'cpu' },
    env: {},
    onEvent: (e) => {
      if (e.type === 'notice') notices.push(e.message);
    },
  });
  assert.equal(s.complete, true);
  assert.equal(s.images, 4);
  assert.equal(notices.filter((n) => /converting nsfwjs mobilenet_v2/.test(n)).length, 1, notices.join('\n'));
  const files = await readdir(path.join(cache, 'models'));
  assert.deepEqual(files.filter((f) => f.includes('.tmp')), [], 'no temp files left in the cache');
  const f = await openFeatures(out);
  assert.equal(f.index.length, 4);
});

test('2 worker threads converting the same built-in at once leave one whole cache file', async () => {
  const cache = path.join(dir, 'cache-threads');
  const mod = pathToFileURL(path.resolve(path.dirname(new URL(import.meta.url).pathname), '..', 'src', 'import', 'keras', 'nsfwjs.js')).href;
  const code = `import { workerData, parentPort } from 'node:worker_threads';
const { builtinOnnxPath } = await import(workerData.mod);
parentPort.postMessage(await builtinOnnxPath('mobilenet_v2'));`;
  const run = () =>
    new Promise<string>((resolve, reject) => {
      const w = new Worker(new URL(`data:text/javascript,${encodeURIComponent(code)}`), { workerData: { mod }, env: { ...process.env, XFER_CACHE: cache } });
      w.once('message', resolve);
      w.once('error', reject);
      w.once('exit', (c) => (c === 0 ? undefined : reject(new Error(`worker exited with ${c}`))));
    });
  const [a, b] = await Promise.all([run(), run()]);
  assert.equal(a, b);
  const m = await readOnnxFile(a);
  assert.ok(m.model.graph.node.length > 100);
  const files = await readdir(path.join(cache, 'models'));
  assert.deepEqual(files, [path.basename(a)], 'exactly the model file, no temp files');
});
