#!/usr/bin/env bash
# Runs the GPU kit (build/gpu-kit.tar.xz, from `make gpu-kit`) on a GPU
# machine, from the repository root: the GPU suites of the project's layers
# and of Caffe's own, the benchmarks of the FCRN-101 beside PyTorch's, the
# whole net against the CPU's output, and a training run checked against the
# CPU's losses, most valuable first, within one deadline. Writes OUTDIR/gpu.md
# (the table), OUTDIR/gpu.json and the logs, rewritten after every command;
# needs only python3 (and PyTorch for the comparison), never Caffe's
# dependencies.
#
#   scripts/gpu_check.sh OUTDIR          # on a GPU machine
#   scripts/gpu_check.sh --cpu OUTDIR    # here: the same steps on the CPU,
#                                        # small sizes, GPU-only parts skipped
#   --kit FILE                           # another archive
#   --deadline SECONDS                   # everything, unpacking included, ends
#                                        # by then (default 480, 1500 with --cpu)
#   --cxx auto|machine|kit               # the C++ runtime (default: the
#                                        # machine's where new enough)
set -euo pipefail

STARTED=$(date +%s.%N)
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
KIT_ARCHIVE=$ROOT/build/gpu-kit.tar.xz
ARGS=()
OUT=
usage() { sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu) ARGS+=(--cpu) ;;
    --kit) KIT_ARCHIVE=${2:?--kit needs a file}; shift ;;
    # Checked before the kit is unpacked, which takes a share of the deadline.
    --deadline) [[ ${2:-} =~ ^[0-9]*[.]?[0-9]+$ && ! ${2} =~ ^[0.]+$ ]] ||
      { echo "gpu_check: --deadline needs a positive number of seconds, not '${2:-}'" >&2; exit 2; }
      ARGS+=(--deadline "$2"); shift ;;
    --cxx) ARGS+=(--cxx "${2:?--cxx needs auto, machine or kit}"); shift ;;
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
# Python unpacks it (its lzma): a GPU machine's image need not have xz. A kit
# that cannot be unpacked still leaves a report saying so.
if ! python3 -c 'import sys, tarfile
with tarfile.open(sys.argv[1]) as kit:
    kit.extractall(sys.argv[2], **({"filter": "tar"} if hasattr(tarfile, "tar_filter") else {}))
' "$KIT_ARCHIVE" "$WORK" 2> "$OUT/environment.log"; then
  printf '# GPU check\n\nThe kit %s could not be unpacked here:\n\n    %s\n' \
    "$KIT_ARCHIVE" "$(tail -n 1 "$OUT/environment.log")" > "$OUT/gpu.md"
  cat "$OUT/gpu.md" >&2
  exit 1
fi
python3 "$ROOT/scripts/gpu_check.py" --kit "$WORK/gpu-kit" --out "$OUT" --started "$STARTED" \
  "${ARGS[@]}"
