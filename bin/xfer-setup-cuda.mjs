#!/usr/bin/env node
// Opt-in GPU support (`npx xfer-setup-cuda`, or `npm run setup:cuda` in the repository): install
// onnxruntime-node's CUDA 12 execution provider binaries. They are not in the npm package (too large);
// onnxruntime-node's own installer fetches them from NuGet, which needs network access beyond the npm
// registry, so installs skip it (docs/install.md) and this runs that installer on request.
// Requirements on the machine: NVIDIA driver, CUDA 12.x and cuDNN 9 runtime libraries.
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import path from 'node:path';
import os from 'node:os';

const require = createRequire(import.meta.url);
const pkg = path.dirname(require.resolve('onnxruntime-node/package.json'));
const script = path.join(pkg, 'script', 'install.js');
// ONNXRUNTIME_NODE_INSTALL takes precedence over an npm config key a user may have set.
const env = { ...process.env, ONNXRUNTIME_NODE_INSTALL: 'cuda12' };
delete env.npm_config_onnxruntime_node_install;
console.log(`installing the CUDA 12 execution provider for onnxruntime-node (${pkg}) ...`);
const r = spawnSync(process.execPath, [script], { cwd: pkg, env, stdio: 'inherit' });
const lib = path.join(pkg, 'bin', 'napi-v6', process.platform, os.arch(), 'libonnxruntime_providers_cuda.so');
if (r.status !== 0 || !existsSync(lib)) {
  console.error(`xfer-setup-cuda failed (installer exit ${r.status}); ${lib} is ${existsSync(lib) ? 'present' : 'missing'}.`);
  console.error('The installer downloads from NuGet (api.nuget.org); behind a firewall, copy libonnxruntime_providers_{cuda,shared}.so');
  console.error(`from the Microsoft.ML.OnnxRuntime.Gpu.Linux package of the same version into ${path.dirname(lib)}.`);
  process.exit(1);
}
console.log(`ok: ${lib}\nUse it with: xfer extract --device cuda ...  (or --device auto)`);
