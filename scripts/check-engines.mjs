#!/usr/bin/env node
// `npm run check:engines`: every installed runtime dependency (package-lock.json, dev and
// platform-optional packages aside) must accept every Node version that package.json's "engines"
// claims, so `npm install xfer` never prints EBADENGINE on a supported Node. CI runs it (.ci/run).
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const semver = require('semver');
const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));
const lock = JSON.parse(readFileSync(new URL('../package-lock.json', import.meta.url), 'utf8'));
const claimed = pkg.engines.node;
const bad = [];
for (const [where, p] of Object.entries(lock.packages)) {
  if (!where || p.dev || p.optional || !p.engines?.node) continue;
  if (!semver.subset(claimed, p.engines.node)) bad.push(`${where.replace(/^.*node_modules\//, '')}@${p.version} needs node ${p.engines.node}`);
}
if (bad.length) {
  console.error(`engines.node "${claimed}" claims versions that these dependencies refuse:\n  ${bad.join('\n  ')}`);
  process.exit(1);
}
console.log(`ok: every runtime dependency accepts node ${claimed}`);
