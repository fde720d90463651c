/**
 * onnxruntime's telemetry stays off (src/util/ort-telemetry.ts): the environment variable is set in
 * the main thread unless the user set it, and a real extraction (sessions in worker threads) leaves
 * none of ORT's telemetry files, where the same run with ORT_DISABLE_TELEMETRY=0 does.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
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

/** Run `xfer extract` with a home of its own; what ORT left there and in /tmp. */
async function extractWithHome(name: string, telemetryVar: string | undefined): Promise<{ database: boolean; debugLog: boolean }> {
  const home = path.join(dir, name);
  const env: NodeJS.ProcessEnv = { ...process.env, HOME: home, XDG_CACHE_HOME: path.join(home, '.cache'), XFER_CACHE: path.join(home, 'xfer-cache') };
  delete env[ORT_TELEMETRY_VAR];
  if (telemetryVar !== undefined) env[ORT_TELEMETRY_VAR] = telemetryVar;
  const child = spawnCli(['extract', '--model', tiny.model, '--card', tiny.card, '--data', data, '--out', path.join(dir, `${name}-out`), '--quiet'], env);
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  assert.equal(code, 0, stderr);
  const debugLog = `/tmp/mat-debug-${child.pid}.log`;
  const found = { database: existsSync(path.join(home, '.cache', 'Microsoft')), debugLog: existsSync(debugLog) };
  await rm(debugLog, { force: true });
  return found;
}

test('an extraction leaves no ORT telemetry database or debug log; with ORT_DISABLE_TELEMETRY=0 (the user allowing it) ORT writes them', { skip: process.platform === 'win32' && 'ORT reports through ETW on Windows' }, async () => {
  assert.deepEqual(await extractWithHome('off', undefined), { database: false, debugLog: false });
  assert.deepEqual(await extractWithHome('allowed', '0'), { database: true, debugLog: true }, 'the control: this onnxruntime does collect telemetry when allowed');
});
