#!/usr/bin/env bash
# Extract CNN codes of an ImageFolder tree (root/<class>/*.jpg or root/<split>/<class>/*.jpg).
#   scripts/extract-imagefolder.sh <dataset dir> <out dir> [model=mobilenet_v2] [extra xfer extract flags...]
# Safe to re-run: an interrupted extraction resumes, a finished one is left as is.
# Sharded: set XFER_SHARD=i/n (or run as a Kubernetes Indexed Job / Slurm array) and use an out dir
# with {shard}, e.g. features/part-{shard}; then `xfer merge features/all features/part-*`.
set -euo pipefail
if [ $# -lt 2 ]; then
  sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
data=$1 out=$2 model=${3:-mobilenet_v2}
shift $(( $# < 3 ? $# : 3 ))
xfer=${XFER:-xfer}
command -v "$xfer" >/dev/null 2>&1 || xfer="node $(dirname "$0")/../bin/xfer.js"
mkdir -p "$(dirname "$out")"
set +e
$xfer extract --model "$model" --data "$data" --out "$out" --resume "$@"
rc=$?
set -e
case $rc in
  0) echo "features: $out" ;;
  3) echo "features: $out (some images were skipped, see $out/errors.jsonl)"; rc=0 ;;
  130) echo "interrupted; run the same command again to continue" ;;
esac
exit $rc
