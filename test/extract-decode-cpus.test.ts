/**
 * Decoding confined to its own CPUs (src/extract/decode-cpus.ts, src/util/affinity.ts): CPU lists,
 * the decision for each kind of machine, the utilization watch that gives the confinement up, and a
 * real run (Linux with taskset and 2+ CPUs): the main thread decodes on the CPUs asked for while the
 * inference threads keep all of them, the features are the same bytes as unconfined, and every thread
 * is back on all CPUs afterwards.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { XferError } from '../src/errors.js';
import { AffinityShell, allowedCpus, findTaskset, formatCpuList, parseCpuList, threadId } from '../src/util/affinity.js';
import { DecodeConfinement, MIN_UTILIZATION, RECENT_WINDOWS, parseDecodeCpus, planDecodeCpus, utilization, type Machine } from '../src/extract/decode-cpus.js';
import { extractFeatures, type ExtractEvent } from '../src/extract/pipeline.js';
import { folderBytes, makeDataset, makeTinyModel, tmpDir, useCacheIn } from './extract-helpers.js';

test('CPU lists: parsed to sorted distinct CPUs, written back in the shortest form', () => {
  assert.deepEqual(parseCpuList('0-3,8,10-11'), [0, 1, 2, 3, 8, 10, 11]);
  assert.deepEqual(parseCpuList(' 5, 1-2 ,2'), [1, 2, 5]);
  assert.equal(formatCpuList([11, 0, 1, 2, 3, 8, 10, 3]), '0-3,8,10-11');
  assert.equal(formatCpuList([7]), '7');
  for (const bad of ['', 'a', '3-1', '1,,2', '-1', '1-']) assert.throws(() => parseCpuList(bad), RangeError, bad);
});

test('--decode-cpus: auto, off or a CPU list; anything else is refused naming the flag', () => {
  assert.equal(parseDecodeCpus(undefined), undefined);
  assert.equal(parseDecodeCpus('auto'), 'auto');
  assert.equal(parseDecodeCpus('off'), 'off');
  assert.deepEqual(parseDecodeCpus('2-3'), [2, 3]);
  assert.throws(() => parseDecodeCpus('fast'), (e: Error) => e instanceof XferError && /--decode-cpus: expected auto, off or a CPU list/.test(e.message));
});

const linux2: Machine = { platform: 'linux', allowed: [0, 1], taskset: '/usr/bin/taskset', gpu: false };

test('planDecodeCpus: auto confines on a 2-CPU Linux machine only, and never fails', () => {
  assert.deepEqual(planDecodeCpus('auto', linux2).split, { decode: [1], all: [0, 1], taskset: '/usr/bin/taskset' });
  assert.deepEqual(planDecodeCpus('auto', { ...linux2, allowed: [2, 5] }).split?.decode, [5], 'the CPUs the process may use, whatever their numbers');
  const none: [Machine, RegExp][] = [
    [{ ...linux2, gpu: true }, /GPU/],
    [{ ...linux2, platform: 'darwin' }, /only .* on Linux/],
    [{ ...linux2, taskset: null }, /taskset/],
    [{ ...linux2, allowed: [0] }, /fewer than 2/],
    [{ ...linux2, allowed: null }, /fewer than 2/],
    [{ ...linux2, allowed: [0, 1, 2, 3] }, /4 CPUs .*--decode-cpus <list>/],
  ];
  for (const [m, why] of none) {
    const p = planDecodeCpus('auto', m);
    assert.equal(p.split, null);
    assert.match(p.why, why);
  }
  assert.equal(planDecodeCpus('off', linux2).split, null);
});

test('planDecodeCpus: an explicit list is applied as asked, or refused with what to do', () => {
  const m4 = { ...linux2, allowed: [0, 1, 2, 3] };
  assert.deepEqual(planDecodeCpus([2, 3], m4).split?.decode, [2, 3]);
  const refused: [number[], Machine, RegExp][] = [
    [[4], m4, /CPU 4 is not available to this process \(allowed: 0-3\)/],
    [[0, 1, 2, 3], m4, /every allowed CPU/],
    [[1], { ...linux2, platform: 'win32' }, /only set on Linux/],
    [[1], { ...linux2, taskset: null }, /taskset \(util-linux\) not found/],
  ];
  for (const [list, m, msg] of refused) {
    assert.throws(
      () => planDecodeCpus(list, m),
      (e: Error) => e instanceof XferError && e.message.startsWith(`--decode-cpus ${formatCpuList(list)}: `) && msg.test(e.message) && !!(e as XferError).hint,
      String(list),
    );
  }
  assert.equal(planDecodeCpus([1], { ...linux2, gpu: true }).split, null, 'inference on the GPU: nothing to keep apart');
});

test('the watch gives the confinement up after one window below MIN_UTILIZATION, or RECENT_WINDOWS whose median is below SUSTAINED_UTILIZATION, once', { skip: process.platform === 'win32' && 'needs /bin/sh' }, async () => {
  assert.equal(utilization(1_800_000, 1000, 2), 0.9);
  assert.equal(utilization(0, 0, 2), 0);
  const shell = new AffinityShell();
  assert.equal(DecodeConfinement.apply({ decode: [1], all: [0, 1], taskset: '/bin/true' }, shell, []), null, 'no inference threads to keep apart');
  /** A confinement (with a taskset that does nothing: the decisions only) fed windows of 1 s at these utilizations. */
  const feed = async (utils: number[]) => {
    const c = DecodeConfinement.apply({ decode: [1], all: [0, 1], taskset: '/bin/true' }, shell, [123])!;
    let t = 0;
    let cpu = 0;
    assert.equal(c.watch(t, cpu), null, 'the first call starts the first window');
    assert.equal(c.watch(t + 500, cpu), null, 'a window is not judged before it is full');
    const reasons = utils.map((u) => {
      t += 1000;
      cpu += u * 2 * 1e6;
      return c.watch(t, cpu);
    });
    await c.restore();
    return { reasons, state: c.state() };
  };
  const clear = await feed([0.95, MIN_UTILIZATION - 0.1, 0.5]);
  assert.equal(clear.reasons[0], null, '95 % busy: kept');
  assert.match(clear.reasons[1] ?? '', /^decoding on CPU 1 could not keep up: the 2 CPUs were 67 % busy over 1\.0 s \(< 77 %\)$/);
  assert.equal(clear.reasons[2], null, 'released once');
  assert.equal(clear.state.released, clear.reasons[1]);
  const sustained = await feed([0.95, 0.88, 0.87, 0.8]);
  assert.deepEqual(sustained.reasons.slice(0, 2), [null, null], 'not before RECENT_WINDOWS windows');
  assert.match(sustained.reasons[2] ?? '', /^decoding on CPU 1 only just kept up: the 2 CPUs were 88 % busy \(median of 3 windows of 1\.0 s; < 90 %\)$/);
  assert.equal(RECENT_WINDOWS, 3);
  const failing = DecodeConfinement.apply({ decode: [1], all: [0, 1], taskset: '/bin/false' }, shell, [123])!;
  await failing.restore();
  assert.match(failing.state().released ?? '', /^\/bin\/false could not set the CPU affinity/, 'a taskset that fails is reported, not taken for a confinement');
  const dips = await feed([0.95, 0.88, 0.95, 0.95, 0.86, 0.97]);
  assert.deepEqual(dips.reasons, [null, null, null, null, null, null], 'single dips below SUSTAINED_UTILIZATION are kept');
  assert.equal(dips.state.released, null);
  shell.close();
});

test('AffinityShell: one shell applies changes in order, answers false for a failing step and once closed or gone, never holds Node', { skip: process.platform === 'win32' && 'needs /bin/sh' }, async () => {
  const shell = new AffinityShell();
  const tid = threadId();
  if (taskset && cpus && tid !== null) {
    const before = threadCpus().get(tid);
    assert.equal(await shell.set(taskset, [{ id: tid, cpus: [cpus[0]] }]), true, 'a real taskset on this thread');
    assert.equal(threadCpus().get(tid), String(cpus[0]));
    assert.equal(await shell.set(taskset, [{ id: tid, cpus }]), true);
    assert.equal(threadCpus().get(tid), before, 'put back');
  }
  assert.equal(await shell.set('/bin/true', []), true, 'nothing to do');
  // Answers come back to the right callers, in order, whatever each one's outcome.
  const answers = await Promise.all([shell.set('/bin/true', [{ id: 1, cpus: [0] }]), shell.set('/bin/false', [{ id: 1, cpus: [0] }]), shell.set('/bin/true', [{ id: 1, cpus: [0] }, { id: 2, cpus: [0] }])]);
  assert.deepEqual(answers, [true, false, true]);
  assert.equal(await shell.set('/bin/true', [{ id: 1, cpus: [0] }, { id: 2, cpus: [0], allThreads: true }]), true);
  assert.equal(await shell.set('/no/such/taskset', [{ id: 1, cpus: [0] }]), false, 'a missing taskset is a failure, not an error');
  // A quote in the path cannot break out of the command line.
  assert.equal(await shell.set("/bin/true'; exit 3; '", [{ id: 1, cpus: [0] }]), false);
  assert.equal(await shell.set('/bin/true', [{ id: 1, cpus: [0] }]), true, 'the shell is still there');
  const last = shell.set('/bin/true', [{ id: 1, cpus: [0] }]);
  shell.close();
  assert.equal(await last, true, 'a change written before close still answers');
  assert.equal(await shell.set('/bin/true', [{ id: 1, cpus: [0] }]), false, 'closed');
  // A process that starts a shell and never closes it still exits at once.
  const script = `import { AffinityShell } from ${JSON.stringify(new URL('../src/util/affinity.js', import.meta.url).href)}; const s = new AffinityShell(); console.log(await s.set('/bin/true', [{ id: 1, cpus: [0] }]));`;
  const t0 = Date.now();
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 20_000 });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout.trim(), 'true');
  assert.ok(Date.now() - t0 < 10_000, 'did not wait for the shell');
  // A shell that dies answers false to what is pending and to what comes after.
  const doomed = new AffinityShell();
  const pending = doomed.set('/bin/sleep', [{ id: 5, cpus: [0] }]);
  (doomed as unknown as { child: { kill(): void } }).child.kill();
  assert.equal(await pending, false);
  assert.equal(await doomed.set('/bin/true', [{ id: 1, cpus: [0] }]), false);
});

// ---------- a real run ----------
const taskset = findTaskset();
const cpus = allowedCpus();
const canPin = process.platform === 'linux' && taskset !== null && cpus !== null && cpus.length >= 2 && threadId() !== null;
let dir: string;
let tiny: { model: string; card: string };
let data: string;
let restoreCache: () => void;

before(async () => {
  dir = await tmpDir('xfer-decode-cpus-');
  restoreCache = useCacheIn(dir);
  tiny = await makeTinyModel(dir);
  data = path.join(dir, 'data');
  await makeDataset(data, ['a', 'b'], 12);
});

after(async () => {
  restoreCache();
  await rm(dir, { recursive: true, force: true });
});

/** CPUs of every thread of this process, by thread id. */
function threadCpus(): Map<number, string> {
  const out = new Map<number, string>();
  for (const t of readdirSync('/proc/self/task')) {
    try {
      out.set(Number(t), /Cpus_allowed_list:\s*(\S+)/.exec(readFileSync(`/proc/self/task/${t}/status`, 'utf8'))![1]);
    } catch {
      /* the thread ended meanwhile */
    }
  }
  return out;
}

test(
  'a confined run: decoding on the CPUs asked for, inference on all, the same features, every thread back on all CPUs after',
  { skip: !canPin && 'needs Linux, taskset (util-linux) and 2+ CPUs' },
  async () => {
    const all = formatCpuList(cpus!);
    const decode = [cpus![cpus!.length - 1]];
    const common = { model: tiny.model, card: tiny.card, data, batch: 2, rowsPerShard: 8, overwrite: true };
    const plain = await extractFeatures({ ...common, out: path.join(dir, 'plain'), decodeCpus: 'off' });
    assert.equal(plain.decodeCpus, null);

    const events: ExtractEvent[] = [];
    const seen: Map<number, string>[] = [];
    let releasedSeen = false;
    const prev = process.env.XFER_TEST_BATCH_DELAY_MS;
    process.env.XFER_TEST_BATCH_DELAY_MS = '120'; // batches slow enough to look at the threads mid-run (and to be released)
    let confined;
    try {
      confined = await extractFeatures({
        ...common,
        out: path.join(dir, 'confined'),
        decodeCpus: decode,
        onEvent: (e) => {
          events.push(e);
          // Looks only while the confinement holds: the watch gives it up after its first 1 s window
          // (the test delay leaves the CPUs idle), and on a slow machine a third progress event can
          // come after that. A 'cpus' event with a reason is emitted before the threads are moved back.
          if (e.type === 'cpus' && e.released !== null) releasedSeen = true;
          if (e.type === 'progress' && !releasedSeen && seen.length < 10) seen.push(threadCpus());
        },
      });
    } finally {
      if (prev === undefined) delete process.env.XFER_TEST_BATCH_DELAY_MS;
      else process.env.XFER_TEST_BATCH_DELAY_MS = prev;
    }
    const cpuEvents = events.filter((e) => e.type === 'cpus');
    assert.deepEqual(cpuEvents[0], { type: 'cpus', decode, all: cpus, released: null });
    // Mid-run (the affinity changes run in the background: the last look is the one that counts):
    // this (main, decoding) thread on the decode CPUs, the inference threads on all.
    const mid = seen[seen.length - 1];
    assert.ok(mid, 'looked at the threads mid-run');
    assert.equal(mid.get(process.pid), formatCpuList(decode), 'the main thread decodes on the CPUs asked for');
    assert.ok([...mid.values()].filter((c) => c === all).length >= 2, `the inference threads (2 workers) stay on ${all}: ${[...mid.entries()].join(' ')}`);
    // The batches wait on the test delay, so the CPUs are mostly idle: the watch gives the confinement up.
    assert.match(confined.decodeCpus?.released ?? '', /decoding on CPU .* (could not keep|only just kept) up/);
    assert.equal(cpuEvents.length, 2);
    // Features: the same bytes.
    assert.deepEqual(await folderBytes(path.join(dir, 'confined')), await folderBytes(path.join(dir, 'plain')));
    // Every thread is back on all CPUs.
    for (const [tid, c] of threadCpus()) assert.equal(c, all, `thread ${tid}`);
  },
);
