#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py says what it measures), on any CUDA machine with torch, from a checkout:
#
#   ANNCORE_WHEELS=.gpu-wheels bash benchmarks/gpu_check.sh --out DIR [--budget-s 540] [--only STEP ...]
#
# Puts this repository on PYTHONPATH (so anncore need not be installed, only its core dependencies), installs the wheels
# in $ANNCORE_WHEELS, if set, offline into a temporary --target folder added to PYTHONPATH (papermill, nbclient,
# ipykernel, nbformat for the notebooks step: `make gpu-wheels` downloads them), then runs
# `python benchmarks/gpu_check.py "$@"`. $PYTHON picks the interpreter (default: python3, else python).
set -uo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-$(command -v python3 || command -v python)}"
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"

target=""
cleanup() { if [ -n "$target" ]; then rm -rf "$target"; fi; }
trap cleanup EXIT

if [ -n "${ANNCORE_WHEELS:-}" ]; then
  wheels="$ANNCORE_WHEELS"
  case "$wheels" in /*) ;; *) wheels="$PWD/$wheels" ;; esac
  if compgen -G "$wheels/*.whl" >/dev/null; then
    target="$(mktemp -d "${TMPDIR:-/tmp}/anncore-wheels.XXXXXX")"
    if "$python" -m pip install --quiet --disable-pip-version-check --no-index --find-links "$wheels" \
        --target "$target" papermill nbclient ipykernel nbformat; then
      export PYTHONPATH="$PYTHONPATH:$target"  # after the repository: its anncore comes first
      echo "gpu_check.sh: installed the notebook runner from $wheels into $target" >&2
    else
      echo "gpu_check.sh: note: could not install the wheels in $wheels (wrong Python version or platform?);" \
        "the notebooks step will say what is missing" >&2
    fi
  else
    echo "gpu_check.sh: note: ANNCORE_WHEELS=$ANNCORE_WHEELS holds no .whl files (make gpu-wheels fills" \
      ".gpu-wheels/); the notebooks step will say what is missing" >&2
  fi
fi

"$python" "$repo/benchmarks/gpu_check.py" "$@"
status=$?
exit "$status"
