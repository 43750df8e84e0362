# Source this file: `source scripts/env.sh`. Afterwards `python` imports caffe
# and fcrn, and `caffe` (train, test, time, ...) knows the project's C++ and
# Python layers. Run `make` first; this file only points at what it built.
_fcrn_root=$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)
if [ ! -f "$_fcrn_root/.venv/bin/activate" ] || [ ! -x "$_fcrn_root/build/bin/caffe" ]; then
  echo "env.sh: the project is not built yet; run 'make' in $_fcrn_root first" >&2
  unset _fcrn_root
  return 1 2>/dev/null || exit 1
fi
# shellcheck disable=SC1091
. "$_fcrn_root/.venv/bin/activate"
export FCRN_ROOT=$_fcrn_root
export PATH="$_fcrn_root/build/bin:$PATH"
# OpenBLAS's OpenMP build, where CMake found it (as the caffe wrapper does):
# Caffe's GEMMs then share oneDNN's threads (Caffe patch 0016).
_fcrn_blas=$(cat "$_fcrn_root/build/openmp-blas" 2>/dev/null || true)
case ":${LD_LIBRARY_PATH:-}:" in
  *":$_fcrn_blas:"*) ;;
  *) [ -z "$_fcrn_blas" ] ||
       export LD_LIBRARY_PATH="$_fcrn_blas${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" ;;
esac
# OpenBLAS's kernels, named where it does not know the CPU (fcrn/blas.py).
if [ -z "${OPENBLAS_CORETYPE:-}" ]; then
  _fcrn_core=$(python "$_fcrn_root/fcrn/blas.py" 2>/dev/null || true)
  [ -z "$_fcrn_core" ] || export OPENBLAS_CORETYPE="$_fcrn_core"
fi
unset _fcrn_root _fcrn_blas _fcrn_core
