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
unset _fcrn_root
