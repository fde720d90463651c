/**
 * onnxruntime's telemetry stays off (src/util/ort-telemetry.ts): the environment variable is set in
 * the main thread unless the user set it, and a real extraction (sessions in worker threads) leaves
 * none of ORT's telemetry files.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, statSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { ORT_TELEMETRY_VAR, disableOrtTelemetry } from '../src/util/ort-telemetry.js';
import { makeDataset, makeTinyModel, spawnCli, tmpDir } from './extract-helpers.js';

test('disableOrtTelemetry: ORT_DISABLE_TELEMETRY=1 unless the user set it; never from a worker thread (its env is a copy ORT does not see)', () => {
  const env: NodeJS.ProcessEnv = {};
  disableOrtTelemetry(env, true);
  assert.equal(env[ORT_TELEMETRY_VAR], '1');
  const allowed: NodeJS.ProcessEnv = { [ORT_TELEMETRY_VAR]: '0' };
  disableOrtTelemetry(allowed, true);
  assert.equal(allowed[ORT_TELEMETRY_VAR], '0', "the user's choice is kept");
  const worker: NodeJS.ProcessEnv = {};
  disableOrtTelemetry(worker, false);
  assert.equal(worker[ORT_TELEMETRY_VAR], undefined);
  assert.equal(process.env[ORT_TELEMETRY_VAR], '1', 'set in this process by importing xfer');
});

let dir: string;
let tiny: { model: string; card: string };
let data: string;

before(async () => {
  dir = await tmpDir('xfer-telemetry-');
  tiny = await makeTinyModel(dir);
  data = path.join(dir, 'data');
  await makeDataset(data, ['a', 'b'], 3);
});

after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/**
 * Variables by which onnxruntime recognises a CI build and then collects nothing, whatever
 * ORT_DISABLE_TELEMETRY says (the list is in libonnxruntime's strings; `CI` measured too). They are
 * removed from both runs so that ORT behaves as on a user's machine, or the control proves nothing.
 */
const CI_MARKERS = ['CI', 'TF_BUILD', 'GITHUB_ACTIONS', 'GITLAB_CI', 'CIRCLECI', 'TRAVIS', 'JENKINS_URL', 'CODEBUILD_BUILD_ID', 'BUILDKITE', 'TEAMCITY_VERSION', 'APPVEYOR', 'BITBUCKET_BUILD_NUMBER'];

/** Run `xfer extract` with a home of its own; what ORT left there and in /tmp. */
async function extractWithHome(name: string, telemetryVar: string | undefined): Promise<{ database: boolean; debugLog: boolean }> {
  const home = path.join(dir, name);
  const env: NodeJS.ProcessEnv = { ...process.env, HOME: home, XDG_CACHE_HOME: path.join(home, '.cache'), XFER_CACHE: path.join(home, 'xfer-cache') };
  // undefined, not delete: spawnCli lays env over process.env, and spawn leaves undefined values out.
  env[ORT_TELEMETRY_VAR] = undefined;
  for (const marker of CI_MARKERS) env[marker] = undefined;
  if (telemetryVar !== undefined) env[ORT_TELEMETRY_VAR] = telemetryVar;
  const started = Date.now();
  const child = spawnCli(['extract', '--model', tiny.model, '--card', tiny.card, '--data', data, '--out', path.join(dir, `${name}-out`), '--quiet'], env);
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  assert.equal(code, 0, stderr);
  const debugLog = `/tmp/mat-debug-${child.pid}.log`;
  // only a log written by this child: other processes (Python onnxruntime in the benchmarks' anchors)
  // leave theirs, and a pid is reused
  const debugFresh = existsSync(debugLog) && statSync(debugLog).mtimeMs >= started - 1000;
  const found = { database: existsSync(path.join(home, '.cache', 'Microsoft')), debugLog: debugFresh };
  if (debugFresh) await rm(debugLog, { force: true });
  return found;
}

// No control run with telemetry allowed: a test must never turn telemetry on on the machine it runs on
// (ORT would upload where it can reach Microsoft's servers).
test('an extraction leaves no ORT telemetry database or debug log', { skip: process.platform === 'win32' && 'ORT reports through ETW on Windows' }, async () => {
  assert.deepEqual(await extractWithHome('off', undefined), { database: false, debugLog: false });
});
