#!/usr/bin/env bash
# Extract CNN codes of the images listed in a CSV file (header: path,label[,split]; paths relative
# to the CSV's folder) or a JSONL file ({"path", "label", "split"} per line).
#   scripts/extract-csv.sh <list.csv> <out dir> [model=mobilenet_v2] [extra xfer extract flags...]
# Safe to re-run: an interrupted extraction resumes, a finished one is left as is.
set -euo pipefail
if [ $# -lt 2 ]; then
  sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
list=$1 out=$2 model=${3:-mobilenet_v2}
shift $(( $# < 3 ? $# : 3 ))
case $list in *.csv|*.jsonl|*.ndjson) ;; *) echo "error: $list: expected a .csv or .jsonl list file" >&2; exit 2 ;; esac
xfer=${XFER:-xfer}
command -v "$xfer" >/dev/null 2>&1 || xfer="node $(dirname "$0")/../bin/xfer.js"
mkdir -p "$(dirname "$out")"
set +e
$xfer extract --model "$model" --data "$list" --out "$out" --resume "$@"
rc=$?
set -e
case $rc in
  0) echo "features: $out" ;;
  3) echo "features: $out (some entries were skipped, see $out/errors.jsonl)"; rc=0 ;;
  130) echo "interrupted; run the same command again to continue" ;;
esac
exit $rc
