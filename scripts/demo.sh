#!/usr/bin/env bash
# The main job on the built-in default backbone: extract CNN codes of an ImageFolder dataset,
# pick a linear head's C by validation, evaluate it. Then, when the network (or XFER_MIRROR) is
# reachable, the same on the 3.6 MB ImageNet MobileNetV2 from the catalog, and both accuracies
# side by side; offline it says how to get that backbone.
#   npm run demo [-- <dataset dir> [<output dir>]]
# Default dataset: ../shared/datasets/hymenoptera (train/ and val/ splits of ants and bees).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${1:-../shared/datasets/hymenoptera}"
OUT="${2:-data/demo}"
if [ ! -d "$DATA" ]; then
  echo "demo: dataset folder $DATA not found." >&2
  echo "      pass an ImageFolder tree: npm run demo -- <root>   (root/<class>/*.jpg or root/<split>/<class>/*.jpg)" >&2
  exit 2
fi
XFER="node bin/xfer.js"
CATALOG_ID=mobilenet-v2-quant

# Linear probe on one backbone: extract, sweep C, evaluate on val; the eval's accuracy line goes to $OUT/<name>/val.txt.
probe() {
  local model=$1 dir=$OUT/$2
  shift 2
  set -x
  # exit 3 = finished, some inputs skipped (listed in errors.jsonl): carry on with the rest
  $XFER extract --model "$model" "$@" --data "$DATA" --out "$dir/features" --resume || [ $? -eq 3 ]
  $XFER train --features "$dir/features" --head linear --sweep C=1e-3..1e2:6 --out "$dir/head-linear"
  $XFER eval --head "$dir/head-linear" --features "$dir/features" --split val | tee "$dir/eval.txt"
  { set +x; } 2>/dev/null
  grep -o 'accuracy [0-9.]*%' "$dir/eval.txt" | head -1 | cut -d' ' -f2 > "$dir/val.txt"
}

mkdir -p "$OUT"
probe mobilenet_v2 . --layers out_relu --pool avg
BUILTIN=$(cat "$OUT/val.txt")

echo
echo "demo: trying the catalog's ImageNet MobileNetV2 ($CATALOG_ID, 3.6 MB; xfer pull verifies its sha256)"
if XFER_STALL_TIMEOUT_MS="${XFER_STALL_TIMEOUT_MS:-15000}" $XFER pull "$CATALOG_ID" 2> "$OUT/pull.log"; then
  probe "$CATALOG_ID" "$CATALOG_ID"
  echo
  echo "val accuracy (linear head on frozen features, $DATA):"
  printf '  %-34s %s\n' "mobilenet_v2 (built-in, nsfwjs)" "$BUILTIN" "$CATALOG_ID (ImageNet)" "$(cat "$OUT/$CATALOG_ID/val.txt")"
else
  echo "demo: $CATALOG_ID could not be downloaded (no network?):"
  sed 's/^/      /' "$OUT/pull.log" | tail -3
  echo
  echo "val accuracy (linear head on frozen features, $DATA): mobilenet_v2 (built-in, nsfwjs) $BUILTIN"
  echo "To compare with an ImageNet backbone: on a machine with internet run  xfer pull $CATALOG_ID"
  echo "(behind a proxy: HTTPS_PROXY=...; through an artifact mirror: XFER_MIRROR=<base url>),"
  echo "or download its two files elsewhere (xfer models --json lists the URLs and sha256) and register them:"
  echo "  xfer pull $CATALOG_ID --file mobilenet_v2_1.0_224_quant.tflite && xfer pull $CATALOG_ID --file imagenet_labels.txt --labels"
  echo "then run npm run demo again."
fi
