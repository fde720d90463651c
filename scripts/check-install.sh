#!/usr/bin/env bash
# Install check (run by .ci/run after the tests): pack xfer, install the tarball into an empty project
# outside the repository as a user would (registry only, the documented CPU-only flag, none of the
# repository's .npmrc), then run `xfer --version` and one `extract` on the built-in backbone.
# NuGet is made unreachable for onnxruntime-node's installer (it honours GLOBAL_AGENT_* proxies;
# npm itself does not), so an install that tried to download the CUDA provider would fail here.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d "${TMPDIR:-/tmp}/xfer-install-check.XXXXXX")"
trap 'rm -rf "$work"' EXIT
version="$(node -p "require('$repo/package.json').version")"

# dist/ is built by then (npm ci's prepare, npm test); --ignore-scripts skips a second build.
(cd "$repo" && npm pack --ignore-scripts --pack-destination "$work" --silent >/dev/null)
tgz="$work/xfer-$version.tgz"
echo "install-check: $(basename "$tgz") is $(du -k "$tgz" | cut -f1) KiB"

mkdir "$work/app"
cd "$work/app"
# onnxruntime-node's postinstall is allowed here, as npm before 11 runs every install script: it is
# ONNXRUNTIME_NODE_INSTALL=skip that must keep it off NuGet. (xfer's own prepare builds dist/ in a
# git checkout; the tarball has dist/ already, and npm 11 lists it as not reviewed: fine.)
echo '{ "name": "xfer-install-check", "version": "1.0.0", "private": true, "allowScripts": { "onnxruntime-node": true } }' >package.json
export ONNXRUNTIME_NODE_INSTALL=skip GLOBAL_AGENT_HTTPS_PROXY=http://127.0.0.1:9 GLOBAL_AGENT_HTTP_PROXY=http://127.0.0.1:9
export XFER_CACHE="$work/cache"
npm install --no-audit --no-fund --userconfig "$work/npmrc" "$tgz" 2>&1 | tee "$work/install.log"
if grep -q 'Unknown project config\|EBADENGINE\|install-scripts .*onnxruntime-node' "$work/install.log"; then echo "install-check: npm warned (above)"; exit 1; fi
for p in @tensorflow nsfwjs; do
  if [ -e "node_modules/$p" ]; then echo "install-check: node_modules/$p was installed; it must stay optional"; exit 1; fi
done
echo "install-check: node_modules is $(du -sm node_modules | cut -f1) MB"

got="$(npx --no-install xfer --version)"
[ "$got" = "$version" ] || { echo "install-check: xfer --version printed '$got', expected $version"; exit 1; }

node --input-type=module -e "
import sharp from 'sharp';
for (const [c, background] of [['red', '#d00'], ['blue', '#00d']]) {
  await import('node:fs').then((fs) => fs.mkdirSync('images/' + c, { recursive: true }));
  for (const i of [0, 1]) await sharp({ create: { width: 64 + i, height: 48, channels: 3, background } }).png().toFile('images/' + c + '/' + i + '.png');
}"
npx --no-install xfer extract --data images --out feat --quiet
node -e "const m = require('./feat/meta.json'); if (m.counts.images !== 4) { console.error('install-check: expected 4 rows', m.counts); process.exit(1); }"
echo "install-check: ok (xfer $version installed from the tarball, --version and extract on the built-in backbone)"
