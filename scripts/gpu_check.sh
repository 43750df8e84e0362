#!/usr/bin/env bash
# Runs the GPU kit (build/gpu-kit.tar.xz, from `make gpu-kit`) on a GPU
# machine, from the repository root: the GPU suites of the project's layers
# and of Caffe's own, the benchmarks of the FCRN-101 beside PyTorch's, and a
# training run checked against the CPU's losses. Writes OUTDIR/gpu.md (the
# table), OUTDIR/gpu.json and the logs; needs only python3 (and PyTorch for
# the comparison), never Caffe's dependencies.
#
#   scripts/gpu_check.sh OUTDIR          # on a GPU machine
#   scripts/gpu_check.sh --cpu OUTDIR    # here: the same steps on the CPU,
#                                        # small sizes, GPU-only parts skipped
#   --kit FILE                           # another archive
#   --budget SECONDS                     # stop starting benchmarks after this
#                                        # (default 420: it ends within 8 min)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
KIT_ARCHIVE=$ROOT/build/gpu-kit.tar.xz
ARGS=()
OUT=
usage() { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu) ARGS+=(--cpu) ;;
    --kit) KIT_ARCHIVE=${2:?--kit needs a file}; shift ;;
    --budget) ARGS+=(--budget "${2:?--budget needs seconds}"); shift ;;
    -h|--help) usage 0 ;;
    -*) echo "gpu_check: unknown option '$1'" >&2; usage 2 >&2 ;;
    *) [ -z "$OUT" ] || { echo "gpu_check: one OUTDIR only" >&2; exit 2; }; OUT=$1 ;;
  esac
  shift
done
[ -n "$OUT" ] || { echo "gpu_check: OUTDIR missing" >&2; usage 2 >&2; }
[ -f "$KIT_ARCHIVE" ] || { echo "gpu_check: no kit at $KIT_ARCHIVE; run 'make gpu-kit' first" >&2; exit 1; }
mkdir -p "$OUT"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu-kit.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
tar -C "$WORK" -xJf "$KIT_ARCHIVE"
python3 "$ROOT/scripts/gpu_check.py" --kit "$WORK/gpu-kit" --out "$OUT" "${ARGS[@]}"
