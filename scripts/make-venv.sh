#!/usr/bin/env bash
# Create (idempotently) the Python virtualenv the benchmarks compare against: current PyTorch,
# scikit-learn, numpy, onnx and onnxruntime from the local wheel indexes, so the anchors are the
# versions users run rather than Debian's. Benchmarks call this and fall back to Debian's packages
# (/usr/bin/python3) when it cannot be made.
#
#   scripts/make-venv.sh            # → ./.venv-bench, or $XFER_VENV when set
#   scripts/make-venv.sh --print    # only print the venv's python path if it is ready (exit 1 if not)
#
# Overrides: XFER_VENV (directory), XFER_VENV_PYTHON (interpreter, default python3.11),
# XFER_PIP_INDEX / XFER_PIP_EXTRA_INDEX (wheel indexes), XFER_VENV_PACKAGES (package list).
set -euo pipefail

DIR="${XFER_VENV:-$(cd "$(dirname "$0")/.." && pwd)/.venv-bench}"
BASE_PY="${XFER_VENV_PYTHON:-python3.11}"
INDEX="${XFER_PIP_INDEX:-file:///opt/pypi/simple}"
EXTRA="${XFER_PIP_EXTRA_INDEX:-file:///opt/pypi-more/simple}"
PACKAGES="${XFER_VENV_PACKAGES:-torch==2.13.0 scikit-learn numpy onnx onnxruntime}"
# the modules those packages provide: a venv that imports them all is ready
MODULES="torch, sklearn, numpy, onnx, onnxruntime"
if [ -n "${XFER_VENV_PACKAGES:-}" ]; then MODULES=""; fi

ready() {
  [ -x "$DIR/bin/python" ] || return 1
  [ -f "$DIR/.xfer-packages" ] && [ "$(cat "$DIR/.xfer-packages")" = "$PACKAGES" ] || return 1
  [ -z "$MODULES" ] || "$DIR/bin/python" -c "import $MODULES" >/dev/null 2>&1
}

if [ "${1:-}" = "--print" ]; then
  ready && echo "$DIR/bin/python" && exit 0
  exit 1
fi

if ready; then
  echo "$DIR/bin/python"
  exit 0
fi

if ! command -v "$BASE_PY" >/dev/null 2>&1; then
  echo "make-venv: $BASE_PY not found; set XFER_VENV_PYTHON to a Python ≥ 3.10 interpreter" >&2
  exit 1
fi
[ -x "$DIR/bin/python" ] || "$BASE_PY" -m venv "$DIR" >&2
# shellcheck disable=SC2086  # the package list is meant to split on spaces
"$DIR/bin/pip" install --disable-pip-version-check -q --index-url "$INDEX" --extra-index-url "$EXTRA" $PACKAGES >&2
echo "$PACKAGES" >"$DIR/.xfer-packages"
ready || { echo "make-venv: $DIR was created but cannot import $MODULES" >&2; exit 1; }
echo "$DIR/bin/python"
