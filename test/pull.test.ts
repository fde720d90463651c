/**
 * `xfer pull` and catalog models on first use, against a local HTTP server on 127.0.0.1 that serves
 * the files in ../shared/models (whose sha256 match the catalog's Coral entries) through XFER_MIRROR:
 * plain, redirected, stalled, cut in the middle then resumed, wrong bytes, 404, 5xx then success,
 * through a proxy, two pulls at once, a full disk; never the internet.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { mkdir, readdir, rm, utimes, writeFile } from 'node:fs/promises';
import { spawnSync } from 'node:child_process';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { XferError } from '../src/errors.js';
import { cachedPath, candidateUrls, isPresent, listCatalog, type CatalogEntry } from '../src/model/catalog.js';
import { noProxy, proxyFor } from '../src/model/http-get.js';
import { pullEntry, registerLocalFile } from '../src/model/pull.js';
import { builtinCardDir, resolveBackbone } from '../src/model/registry.js';
import { sha256File } from '../src/util/hash.js';
import { NO_SHARED, REPO_ROOT, shared } from './helpers/paths.js';
import { tempDir } from './helpers/tmp.js';
import { runInProcess } from './helpers/in-process.js';
import { main } from '../src/cli/main.js';

const V2 = 'mobilenet_v2_1.0_224_quant.tflite';
const FILES: Record<string, string> = {
  [V2]: shared('models', 'tflite', V2),
  'mobilenet_v1_1.0_224_quant_embedding_extractor.tflite': shared('models', 'tflite', 'mobilenet_v1_1.0_224_quant_embedding_extractor.tflite'),
  'imagenet_labels.txt': shared('models', 'tflite', 'imagenet_labels.txt'),
  // Stand-ins for the test-only resnet18-v1 override (see the last tests).
  'resnet18-v1-7.onnx': shared('models', 'squeezenet1.1-fp16.onnx'),
  'synset.txt': shared('models', 'tflite', 'imagenet_labels.txt'),
};

interface Served {
  url: string;
  range?: string;
}

/**
 * The test server. The first path segment picks the behaviour (the rest is the upstream path the
 * mirror serves); behaviours that misbehave once count their calls in `hits`.
 */
async function startServer(tlsOpts?: { key: Buffer; cert: Buffer }) {
  const log: Served[] = [];
  const hits = new Map<string, number>();
  const stalled: http.ServerResponse[] = [];
  const handler = (req: http.IncomingMessage, res: http.ServerResponse) => {
    const url = new URL(req.url!, 'http://x');
    const [, mode, ...rest] = url.pathname.split('/');
    log.push({ url: url.pathname, range: req.headers.range });
    const n = (hits.get(url.pathname) ?? 0) + 1;
    hits.set(url.pathname, n);
    const name = rest[rest.length - 1];
    const file = FILES[name];
    if (mode === 'redirect') {
      res.writeHead(302, { Location: `/ok/${rest.join('/')}` }).end();
      return;
    }
    if (!file || mode === 'missing') {
      res.writeHead(404).end('not found');
      return;
    }
    if (mode === 'flaky' && n <= 2) {
      res.writeHead(503).end('busy');
      return;
    }
    const bytes = mode === 'wrong' ? readFileSync(shared('models', 'tflite', 'tf2_mobilenet_v2_1.0_224_ptq.tflite')).subarray(0, statSync(file).size) : readFileSync(file);
    // 'norange': a server (or proxy) that ignores Range and always sends the whole file.
    const m = mode === 'norange' ? null : /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
    const start = m ? Number(m[1]) : 0;
    if (start >= bytes.length && m) {
      res.writeHead(416).end();
      return;
    }
    const body = bytes.subarray(start);
    res.writeHead(m ? 206 : 200, { 'Content-Length': body.length, ...(m ? { 'Content-Range': `bytes ${start}-${bytes.length - 1}/${bytes.length}` } : {}) });
    if ((mode === 'cut' || mode === 'stall' || mode === 'norange') && n === 1) {
      // Half the body, then the connection dies (cut) or goes silent (stall).
      res.write(body.subarray(0, body.length >> 1), () => {
        if (mode !== 'stall') res.destroy();
        else stalled.push(res);
      });
      return;
    }
    res.end(body);
  };
  const server = tlsOpts ? https.createServer(tlsOpts, handler) : http.createServer(handler);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  return {
    base: `${tlsOpts ? 'https://localhost' : 'http://127.0.0.1'}:${port}`,
    log,
    close: async () => {
      for (const r of stalled) r.destroy();
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    },
  };
}

type Server = Awaited<ReturnType<typeof startServer>>;

async function withEnv<T>(env: Record<string, string | undefined>, fn: () => Promise<T>): Promise<T> {
  const saved = Object.fromEntries(Object.keys(env).map((k) => [k, process.env[k]]));
  for (const [k, v] of Object.entries(env)) if (v === undefined) delete process.env[k];
  else process.env[k] = v;
  try {
    return await fn();
  } finally {
    for (const [k, v] of Object.entries(saved)) if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
}

async function coral(id = 'mobilenet-v2-quant'): Promise<CatalogEntry> {
  const e = (await listCatalog(builtinCardDir())).find((x) => x.id === id);
  assert.ok(e, `${id} in the catalog`);
  return e;
}

/** A fresh cache and the server, torn down after. */
async function session(fn: (srv: Server, cache: string) => Promise<void>): Promise<void> {
  const cache = await tempDir('xfer-pull-');
  const srv = await startServer();
  try {
    await withEnv({ XFER_CACHE: cache, HTTP_PROXY: undefined, http_proxy: undefined, XFER_OFFLINE: undefined }, () => fn(srv, cache));
  } finally {
    await srv.close();
    await rm(cache, { recursive: true, force: true });
  }
}

const FAST = { stallMs: 2000, backoffMs: 1, retries: 3 };

async function assertVerified(e: CatalogEntry): Promise<void> {
  assert.ok(isPresent(e));
  for (const f of e.catalog.files) assert.equal(await sha256File(cachedPath(e, f)), f.sha256);
  const leftovers = (await readdir(path.dirname(cachedPath(e, e.catalog.files[0])))).filter((n) => n.endsWith('.part') || n.endsWith('.lock'));
  assert.deepEqual(leftovers, []);
}

test('catalog: every entry has sha256, size or an unverified note, a licence and a valid card', async () => {
  const entries = await listCatalog(builtinCardDir());
  assert.deepEqual(entries.map((e) => e.id).sort(), ['dinov2-small', 'efficientnet-lite4', 'mobilenet-v1-embed', 'mobilenet-v2-quant', 'mobilenetv2-7', 'resnet18-v1', 'resnet50-v2']);
  for (const e of entries) {
    assert.ok(e.card.license && e.card.license !== 'unknown', `${e.id} licence`);
    for (const f of e.catalog.files) {
      assert.match(f.sha256, /^[0-9a-f]{64}$/);
      if (f.size === null) assert.ok(e.catalog.unverified?.some((u) => u.includes('size')), `${e.id}: unknown size is marked unverified`);
      assert.ok(f.urls.every((u) => u.startsWith('https://')));
      assert.ok(!f.name.endsWith('_edgetpu.tflite'), 'no Edge TPU builds');
    }
  }
  // Hugging Face URLs to model repos pin a commit; the legacy_models mirror's revision is marked unverified.
  for (const e of entries) for (const u of e.catalog.files.flatMap((f) => f.urls)) if (u.includes('/resolve/main/')) assert.ok(e.catalog.unverified?.some((x) => x.includes("'main'") || x.includes('main')), `${e.id}: unpinned revision is marked`);
});

test('XFER_MIRROR keeps the upstream path on the mirror host', () => {
  const f = { role: 'model' as const, name: 'a.onnx', urls: ['https://huggingface.co/r/resolve/abc/onnx/a.onnx', 'https://raw.githubusercontent.com/o/r/c/a.onnx'], sha256: '0'.repeat(64), size: 1 };
  assert.deepEqual(candidateUrls(f, 'http://artifacts.local/proxy/'), ['http://artifacts.local/proxy/r/resolve/abc/onnx/a.onnx', 'http://artifacts.local/proxy/o/r/c/a.onnx']);
  assert.deepEqual(candidateUrls(f, ''), f.urls);
});

test('NO_PROXY and HTTPS_PROXY / HTTP_PROXY pick the proxy per URL', () => {
  const env = { HTTPS_PROXY: 'http://proxy:3128', HTTP_PROXY: 'proxy2:8080', NO_PROXY: 'localhost,.internal.example,example.org:8443' };
  assert.equal(proxyFor(new URL('https://huggingface.co/x'), env)?.href, 'http://proxy:3128/');
  assert.equal(proxyFor(new URL('http://huggingface.co/x'), env)?.host, 'proxy2:8080');
  assert.equal(proxyFor(new URL('https://a.internal.example/x'), env), null);
  assert.equal(proxyFor(new URL('https://example.org:8443/x'), env), null);
  assert.ok(proxyFor(new URL('https://example.org/x'), env));
  assert.ok(noProxy(new URL('http://anything'), { no_proxy: '*' }));
});

test('pull through the mirror: progress, sha256 verified, atomic, then "already present"', { skip: NO_SHARED }, async () => {
  await session(async (srv) => {
    const e = await coral();
    const progress: number[] = [];
    const r = await withEnv({ XFER_MIRROR: `${srv.base}/ok` }, () => pullEntry(e, { ...FAST, onProgress: (_f, got) => progress.push(got) }));
    assert.equal(r.downloaded.length, 2);
    assert.equal(r.bytes, 3610798 + 21686);
    assert.ok(progress.length > 2 && progress.includes(3610798));
    await assertVerified(e);
    const again = await withEnv({ XFER_MIRROR: `${srv.base}/ok` }, () => pullEntry(e, FAST));
    assert.deepEqual(again.downloaded, []);
    assert.equal(srv.log.length, 2, 'no request once present');
  });
});

test('pull follows a redirect (Hugging Face answers with one to its CDN)', { skip: NO_SHARED }, async () => {
  await session(async (srv) => {
    const e = await coral('mobilenet-v1-embed');
    await withEnv({ XFER_MIRROR: `${srv.base}/redirect` }, () => pullEntry(e, FAST));
    await assertVerified(e);
    assert.deepEqual(srv.log.map((l) => l.url.split('/')[1]), ['redirect', 'ok']);
  });
});

test('a body cut in the middle resumes with a Range request', { skip: NO_SHARED }, async () => {
  await session(async (srv) => {
    const e = await coral('mobilenet-v1-embed');
    const notices: string[] = [];
    await withEnv({ XFER_MIRROR: `${srv.base}/cut` }, () => pullEntry(e, { ...FAST, onNotice: (m) => notices.push(m) }));
    await assertVerified(e);
    assert.equal(srv.log.length, 2);
    // The resume starts where the received bytes end (at most the half the server sent before dying).
    const from = Number(/^bytes=(\d+)-$/.exec(srv.log[1].range ?? '')?.[1]);
    assert.ok(from > 0 && from <= 3251736 >> 1, srv.log[1].range);
    assert.ok(notices.some((n) => n.includes('connection closed') || n.includes('aborted')), notices.join('\n'));
    assert.ok(notices.some((n) => n.startsWith('resuming')));
  });
});

test('a server that ignores Range: the download starts over and still verifies', { skip: NO_SHARED }, async () => {
  await session(async (srv) => {
    const e = await coral('mobilenet-v1-embed');
    await withEnv({ XFER_MIRROR: `${srv.base}/norange` }, () => pullEntry(e, FAST));
    await assertVerified(e);
    assert.equal(srv.log.length, 2);
    assert.match(srv.log[1].range ?? '', /^bytes=\d+-$/, 'it asked to resume');
  });
});

test('no server listening (no network): retried, then one line with the manual route', { skip: NO_SHARED }, async () => {
  await session(async () => {
    const e = await coral('mobilenet-v1-embed');
    // A port nobody listens on: take one from the OS and close it.
    const probe = net.createServer();
    await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
    const port = (probe.address() as net.AddressInfo).port;
    await new Promise((r) => probe.close(r));
    const notices: string[] = [];
    await assert.rejects(
      withEnv({ XFER_MIRROR: `http://127.0.0.1:${port}` }, () => pullEntry(e, { ...FAST, onNotice: (m) => notices.push(m) })),
      (x: XferError) => x instanceof XferError && /ECONNREFUSED/.test(x.message) && /xfer pull mobilenet-v1-embed --file/.test(x.hint ?? ''),
    );
    assert.equal(notices.filter((n) => n.includes('retrying')).length, FAST.retries - 1);
    assert.ok(!isPresent(e));
  });
});

test('a stalled connection times out and the download resumes', { skip: NO_SHARED }, async () => {
  await session(async (srv) => {
    const e = await coral('mobilenet-v1-embed');
    const notices: string[] = [];
    await withEnv({ XFER_MIRROR: `${srv.base}/stall` }, () => pullEntry(e, { ...FAST, stallMs: 300, onNotice: (m) => notices.push(m) }));
    await assertVerified(e);
    assert.ok(notices.some((n) => n.includes('stalled')), notices.join('\n'));
    assert.equal(srv.log[1].range, `bytes=${3251736 >> 1}-`);
  });
});

test('5xx answers are retried with backoff, then succeed', { skip: NO_SHARED }, async () => {
  await session(async (srv) => {
    const e = await coral('mobilenet-v1-embed');
    const notices: string[] = [];
    await withEnv({ XFER_MIRROR: `${srv.base}/flaky` }, () => pullEntry(e, { ...FAST, onNotice: (m) => notices.push(m) }));
    await assertVerified(e);
    assert.equal(srv.log.length, 3);
    assert.equal(notices.filter((n) => n.includes('HTTP 503') && n.includes('retrying')).length, 2);
  });
});

test('wrong bytes: deleted, never used, the error shows expected and received sha256', { skip: NO_SHARED }, async () => {
  await session(async (srv) => {
    const e = await coral('mobilenet-v1-embed');
    const err = await withEnv({ XFER_MIRROR: `${srv.base}/wrong` }, () => pullEntry(e, FAST)).then(
      () => assert.fail('wrong bytes accepted'),
      (x: unknown) => x,
    );
    assert.ok(err instanceof XferError);
    assert.match(err.message, new RegExp(`expected sha256 ${e.catalog.files[0].sha256}`));
    assert.match(err.message, /received sha256 [0-9a-f]{64}/);
    assert.match(err.hint ?? '', /xfer pull mobilenet-v1-embed --file/);
    const dir = path.dirname(cachedPath(e, e.catalog.files[0]));
    assert.deepEqual((await readdir(dir)).filter((n) => !n.endsWith('.lock')), []);
    assert.ok(!isPresent(e));
  });
});

test('404 on the first URL: the next URL (mirror) is tried in order', { skip: NO_SHARED }, async () => {
  await session(async (srv) => {
    const base = await coral('mobilenet-v1-embed');
    const f = base.catalog.files[0];
    const e: CatalogEntry = { ...base, catalog: { ...base.catalog, files: [{ ...f, urls: [`${srv.base}/missing/${f.name}`, `${srv.base}/ok/${f.name}`] }] } };
    await pullEntry(e, FAST);
    await assertVerified(e);
    assert.deepEqual(srv.log.map((l) => l.url.split('/')[1]), ['missing', 'ok']);
    // Only 404s: one line naming the status, with the manual route as hint.
    const gone: CatalogEntry = { ...base, catalog: { ...base.catalog, files: [{ ...f, urls: [`${srv.base}/missing/${f.name}`] }] } };
    await rm(cachedPath(e, f));
    await assert.rejects(pullEntry(gone, FAST), (x: XferError) => /HTTP 404/.test(x.message) && /--file/.test(x.hint ?? '') && x.exitCode === 1);
  });
});

test('HTTP_PROXY: the download goes through the proxy (absolute-URI request)', { skip: NO_SHARED }, async () => {
  await session(async (srv) => {
    const seen: string[] = [];
    const proxy = http.createServer((req, res) => {
      seen.push(req.url!);
      const target = new URL(req.url!);
      const up = http.request({ host: '127.0.0.1', port: new URL(srv.base).port, path: target.pathname, headers: req.headers }, (r) => {
        res.writeHead(r.statusCode!, r.headers);
        r.pipe(res);
      });
      req.pipe(up);
    });
    await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
    try {
      const e = await coral('mobilenet-v1-embed');
      const port = (proxy.address() as net.AddressInfo).port;
      // The mirror's host name exists only for the proxy.
      await withEnv({ XFER_MIRROR: 'http://artifacts.invalid/ok', HTTP_PROXY: `http://127.0.0.1:${port}`, NO_PROXY: 'localhost' }, () => pullEntry(e, FAST));
      await assertVerified(e);
      assert.equal(seen.length, 1);
      assert.match(seen[0], /^http:\/\/artifacts\.invalid\/ok\/google-coral\/test_data\//);
    } finally {
      proxy.closeAllConnections();
      await new Promise((r) => proxy.close(r));
    }
  });
});

test('two pulls of one model at once make one download', { skip: NO_SHARED }, async () => {
  await session(async (srv) => {
    const e = await coral();
    const waits: string[] = [];
    const [a, b] = await withEnv({ XFER_MIRROR: `${srv.base}/ok` }, () =>
      Promise.all([pullEntry(e, { ...FAST, onNotice: (m) => waits.push(m) }), pullEntry(e, { ...FAST, onNotice: (m) => waits.push(m) })]),
    );
    await assertVerified(e);
    assert.equal(srv.log.length, 2, 'each file fetched once');
    assert.equal(a.downloaded.length + b.downloaded.length, 2);
    assert.ok(waits.some((w) => w.startsWith('waiting for process')));
  });
});

test('a stale lock (dead owner, or untouched past the stale time) is taken over', { skip: NO_SHARED }, async () => {
  await session(async (srv) => {
    const e = await coral('mobilenet-v1-embed');
    const dest = cachedPath(e, e.catalog.files[0]);
    await mkdir(path.dirname(dest), { recursive: true });
    // A pid that cannot be alive: above the kernel's pid_max.
    const plant = async (owner: object) => {
      await mkdir(`${dest}.lock`);
      await writeFile(path.join(`${dest}.lock`, 'owner.json'), JSON.stringify({ since: new Date().toISOString(), command: 'xfer pull', ...owner }));
    };
    await plant({ pid: 2 ** 22 + 1, host: os.hostname(), token: 'dead' });
    await withEnv({ XFER_MIRROR: `${srv.base}/ok` }, () => pullEntry(e, FAST));
    await assertVerified(e);
    // Another host's lock that nobody has touched for minutes (its owner's heartbeat stopped) is stale too.
    await rm(dest);
    await plant({ pid: process.pid, host: 'elsewhere', token: 'old' });
    const old = new Date(Date.now() - 5 * 60_000);
    await utimes(`${dest}.lock`, old, old);
    await withEnv({ XFER_MIRROR: `${srv.base}/ok` }, () => pullEntry(e, FAST));
    await assertVerified(e);
  });
});

test('disk full: one-line error, the partial download is kept for the next pull', { skip: NO_SHARED }, async () => {
  await session(async (srv) => {
    const e = await coral('mobilenet-v1-embed');
    let written = 0;
    const full = async (fh: import('node:fs/promises').FileHandle, data: Uint8Array, pos: number) => {
      if (written > 1_000_000) throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
      await fh.write(data, 0, data.length, pos);
      written += data.length;
    };
    await assert.rejects(
      withEnv({ XFER_MIRROR: `${srv.base}/ok` }, () => pullEntry(e, { ...FAST, write: full })),
      (x: XferError) => x instanceof XferError && /^disk full writing .*\.part \(the file needs 3\.3 MB\)$/.test(x.message) && x.exitCode === 1,
    );
    assert.ok(!isPresent(e));
    const part = `${cachedPath(e, e.catalog.files[0])}.${e.catalog.files[0].sha256.slice(0, 12)}.part`;
    assert.ok(statSync(part).size > 1_000_000);
    await withEnv({ XFER_MIRROR: `${srv.base}/ok` }, () => pullEntry(e, FAST));
    await assertVerified(e);
    assert.match(srv.log[1].range ?? '', /^bytes=\d+-$/);
  });
});

test('pull --file registers a local copy after the sha256 check, and refuses another file', { skip: NO_SHARED }, async () => {
  await session(async () => {
    const e = await coral();
    await assert.rejects(registerLocalFile(e, FILES['imagenet_labels.txt']), /expected sha256 7aad0c74.*received sha256 b8aaeb56/);
    await registerLocalFile(e, FILES[V2]);
    assert.ok(!isPresent(e), 'labels still missing');
    await registerLocalFile(e, FILES['imagenet_labels.txt'], 'labels');
    await assertVerified(e);
  });
});

/** A catalog folder with a resnet18-v1 entry whose bytes are the shared SqueezeNet (test-only XFER_CATALOG override). */
async function standInCatalog(dir: string): Promise<void> {
  const entry = JSON.parse(readFileSync(path.join(REPO_ROOT, 'models', 'resnet18-v1.json'), 'utf8')) as { input: unknown; catalog: { files: { sha256: string; size: number }[] } };
  const sq = FILES['resnet18-v1-7.onnx'];
  entry.catalog.files[0].sha256 = await sha256File(sq);
  entry.catalog.files[0].size = statSync(sq).size;
  entry.catalog.files[1].sha256 = await sha256File(FILES['synset.txt']);
  entry.catalog.files[1].size = statSync(FILES['synset.txt']).size;
  // SqueezeNet's own input (fp16 data_0, Caffe BGR means) so the model can run.
  entry.input = JSON.parse(readFileSync(path.join(REPO_ROOT, 'test', 'fixtures', 'cards', 'squeezenet1.1.json'), 'utf8')).input;
  await mkdir(dir, { recursive: true });
  await writeFile(path.join(dir, 'resnet18-v1.json'), JSON.stringify(entry));
}

/** `xfer …` as a child process of bin/xfer.js: for NODE_EXTRA_CA_CERTS, which Node reads when a process starts. */
function runChild(args: string[], env: Record<string, string>): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [path.join(REPO_ROOT, 'bin', 'xfer.js'), ...args], { env: { ...process.env, ...env } });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => (stdout += d));
    p.stderr.on('data', (d) => (stderr += d));
    p.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

/** `xfer …` through main() in this process (helpers/in-process.ts): its exit code and output, no process start each. */
function runCli(args: string[], env: Record<string, string>): Promise<{ code: number; stdout: string; stderr: string }> {
  return runInProcess(main, path.join(REPO_ROOT, 'bin', 'xfer.js'), args, env);
}

test('--model resnet18-v1 pulls on first use through the mirror; offline it says what to fetch', { skip: NO_SHARED }, async () => {
  await session(async (srv, cache) => {
    const catalogDir = path.join(cache, 'catalog-override');
    await standInCatalog(catalogDir);
    const env = { XFER_CACHE: cache, XFER_CATALOG: catalogDir, XFER_MIRROR: `${srv.base}/ok` };
    const off = await runCli(['layers', 'resnet18-v1', '--no-probe', '--json', '--offline'], env);
    assert.equal(off.code, 2, off.stderr);
    assert.match(off.stderr, /resnet18-v1 is not downloaded yet.*fetch https:\/\/huggingface\.co\/onnxmodelzoo\/legacy_models\/resolve\/main\/validated\/vision\/classification\/resnet\/model\/resnet18-v1-7\.onnx/);
    assert.match(off.stderr, /hint: then register: xfer pull resnet18-v1 --file <path of resnet18-v1-7\.onnx>/);
    assert.equal(srv.log.length, 0, 'offline: no request');
    const on = await runCli(['layers', 'resnet18-v1', '--no-probe', '--json'], env);
    assert.equal(on.code, 0, on.stderr);
    assert.match(on.stderr, /resnet18-v1 is not in the cache: pulling it/);
    const out = JSON.parse(on.stdout) as { model: string; layers: { name: string; mark: string | null }[] };
    assert.equal(out.model, 'resnet18-v1');
    // Default tap found from the graph: SqueezeNet's last global pooling.
    const def = out.layers.find((l) => l.mark === 'default');
    assert.ok(def, 'a default tap was found');
    assert.equal(srv.log.length, 2);
    // Library use: the resolved card labels point at the pulled labels file.
    const b = await withEnv({ XFER_CATALOG: catalogDir, XFER_MIRROR: `${srv.base}/ok` }, () => resolveBackbone('resnet18-v1'));
    assert.equal(b.card?.labels, path.join(cache, 'catalog', 'resnet18-v1', 'synset.txt'));
    assert.equal(b.card?.taps?.default, def.name);
    assert.equal(srv.log.length, 2, 'second use: no download');
  });
});

test('a TFLite catalog entry converts through the importer on first use', { skip: NO_SHARED }, async () => {
  await session(async (srv) => {
    const b = await withEnv({ XFER_MIRROR: `${srv.base}/ok` }, () => resolveBackbone('mobilenet-v1-embed'));
    assert.match(b.file, /\.onnx$/);
    assert.equal(b.card?.taps?.default, 'MobilenetV1/Logits/AvgPool_1a/AvgPool');
  });
});

test('xfer pull and xfer models on the command line: download, the present column, failures exit 1, unknown ids exit 2', { skip: NO_SHARED }, async () => {
  await session(async (srv, cache) => {
    const env = { XFER_CACHE: cache, XFER_MIRROR: `${srv.base}/ok` };
    const first = await runCli(['pull', 'mobilenet-v1-embed'], env);
    assert.equal(first.code, 0, first.stderr);
    assert.match(first.stdout, /^mobilenet-v1-embed: downloaded 3\.3 MB, sha256 verified/);
    assert.match(first.stderr, /100 %/);
    const models = await runCli(['models'], env);
    assert.match(models.stdout, /mobilenet-v1-embed\s+yes\s+tflite/);
    assert.match(models.stdout, /resnet18-v1\s+no\s+onnx/);
    const bad = await runCli(['pull', 'mobilenet-v2-quant'], { ...env, XFER_MIRROR: `${srv.base}/missing` });
    assert.ok(!existsSync(path.join(cache, 'catalog', 'mobilenet-v2-quant', V2)));
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /^error: mobilenet-v2-quant: could not download mobilenet_v2_1\.0_224_quant\.tflite: .*HTTP 404/);
    // --all goes on past failures (here: only the Coral files are served) and exits 1 at the end.
    const all = await runCli(['pull', '--all', '--quiet'], env);
    assert.equal(all.code, 1);
    assert.match(all.stdout, /^mobilenet-v1-embed: already present$/m);
    assert.match(all.stdout, /^mobilenet-v2-quant: downloaded 3\.6 MB/m);
    assert.match(all.stderr, /5 of 7 catalog entries could not be downloaded \(pull --all\): dinov2-small, efficientnet-lite4, mobilenetv2-7, resnet18-v1, resnet50-v2/);
    const usage = await runCli(['pull', 'no-such-model'], env);
    assert.equal(usage.code, 2);
    assert.match(usage.stderr, /"no-such-model" is not in the catalog/);
  });
});

test('https: direct when NO_PROXY matches, else through the HTTPS_PROXY CONNECT tunnel', { skip: NO_SHARED }, async (t) => {
  const dir = await tempDir('xfer-tls-');
  try {
    const key = path.join(dir, 'key.pem');
    const cert = path.join(dir, 'cert.pem');
    const made = spawnSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost'], { stdio: 'ignore' });
    if (made.status !== 0) {
      t.skip('openssl not available to make a test certificate');
      return;
    }
    const srv = await startServer({ key: readFileSync(key), cert: readFileSync(cert) });
    const tunnels: string[] = [];
    const proxy = http.createServer((_req, res) => res.writeHead(405).end());
    const sockets: net.Socket[] = [];
    proxy.on('connect', (req: http.IncomingMessage, client: net.Socket) => {
      tunnels.push(req.url!);
      sockets.push(client);
      const up = net.connect(Number(req.url!.split(':')[1]), '127.0.0.1', () => {
        client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
        up.pipe(client);
        client.pipe(up);
      });
      sockets.push(up);
      up.on('error', () => client.destroy());
      client.on('error', () => up.destroy());
    });
    await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
    const cache = path.join(dir, 'cache');
    try {
      const port = (proxy.address() as net.AddressInfo).port;
      // NO_PROXY=localhost: straight to the https server, no tunnel.
      const direct = await runChild(['pull', 'mobilenet-v1-embed', '--quiet'], {
        XFER_CACHE: path.join(dir, 'direct'),
        XFER_MIRROR: `${srv.base}/ok`,
        HTTPS_PROXY: `http://127.0.0.1:${port}`,
        NO_PROXY: 'localhost',
        NODE_EXTRA_CA_CERTS: cert,
      });
      assert.equal(direct.code, 0, direct.stderr);
      assert.deepEqual(tunnels, []);
      const r = await runChild(['pull', 'mobilenet-v1-embed', '--quiet'], {
        XFER_CACHE: cache,
        XFER_MIRROR: `${srv.base}/ok`,
        HTTPS_PROXY: `http://127.0.0.1:${port}`,
        NO_PROXY: '',
        NODE_EXTRA_CA_CERTS: cert,
      });
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(tunnels, [`localhost:${new URL(srv.base).port}`]);
      assert.equal(await sha256File(path.join(cache, 'catalog', 'mobilenet-v1-embed', 'mobilenet_v1_1.0_224_quant_embedding_extractor.tflite')), 'f409ef4f73fcbb9667841965623c5c8524aac33d41b9bf5f3667161fb4a76319');
    } finally {
      // Tunnelled sockets belong to no HTTP request: closeAllConnections does not see them.
      for (const so of sockets) so.destroy();
      proxy.closeAllConnections();
      await new Promise((r) => proxy.close(r));
      await srv.close();
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('an entry of unknown size (DINOv2-like, a tiny ViT standing in) pulls, verifies by sha256 and extracts cls+mean by default', { skip: NO_SHARED }, async () => {
  await session(async (srv, cache) => {
    const vit = path.join(REPO_ROOT, 'test', 'fixtures', 'tiny-vit.onnx');
    const entry = JSON.parse(readFileSync(path.join(REPO_ROOT, 'models', 'dinov2-small.json'), 'utf8')) as { input: { size: number[] }; catalog: { files: { sha256: string; size: number | null }[] } };
    assert.equal(entry.catalog.files[0].size, null);
    entry.catalog.files[0].sha256 = await sha256File(vit);
    entry.input.size = [32, 32];
    const catalogDir = path.join(cache, 'catalog-override');
    await mkdir(catalogDir, { recursive: true });
    await writeFile(path.join(catalogDir, 'dinov2-small.json'), JSON.stringify(entry));
    FILES['model.onnx'] = vit;
    const data = path.join(cache, 'imgs');
    for (const cls of ['ants', 'bees']) {
      await mkdir(path.join(data, cls), { recursive: true });
      const first = (await readdir(shared('datasets', 'hymenoptera', 'val', cls))).sort()[0];
      await writeFile(path.join(data, cls, first), readFileSync(shared('datasets', 'hymenoptera', 'val', cls, first)));
    }
    try {
      const r = await runCli(['extract', '--model', 'dinov2-small', '--data', data, '--out', path.join(cache, 'feats'), '--quiet'], { XFER_CACHE: cache, XFER_CATALOG: catalogDir, XFER_MIRROR: `${srv.base}/ok` });
      assert.equal(r.code, 0, r.stderr);
      const meta = JSON.parse(readFileSync(path.join(cache, 'feats', 'meta.json'), 'utf8')) as { layers: { name: string; pool: string; shape: number[] }[] };
      assert.deepEqual(meta.layers.map((l) => [l.name, l.pool, l.shape]), [['last_hidden_state', 'cls+mean', [64]]]);
    } finally {
      delete FILES['model.onnx'];
    }
  });
});

