#!/usr/bin/env bash
# The main job on the built-in default backbone: extract CNN codes of an ImageFolder dataset,
# pick a linear head's C by validation, evaluate it.
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
set -x
# exit 3 = finished, some inputs skipped (listed in errors.jsonl): carry on with the rest
$XFER extract --model mobilenet_v2 --layers out_relu --pool avg --data "$DATA" --out "$OUT/features" --resume || [ $? -eq 3 ]
$XFER train --features "$OUT/features" --head linear --sweep C=1e-3..1e2:6 --out "$OUT/head-linear"
$XFER eval --head "$OUT/head-linear" --features "$OUT/features" --split val
