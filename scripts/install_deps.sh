#!/usr/bin/env bash
# Installs the Debian 12 packages the project builds and runs with, if any is missing.
# Idempotent: prints nothing and changes nothing when all are present.
set -euo pipefail

# First, the platform: the package names below and the Caffe build are those of
# Debian 12. FCRN_SKIP_OS_CHECK=1 tries anyway; FCRN_OS_RELEASE names another
# os-release file (tests).
OS_RELEASE=${FCRN_OS_RELEASE:-/etc/os-release}
os=$( . "$OS_RELEASE" 2>/dev/null && echo "${ID:-?} ${VERSION_ID:-?} (${PRETTY_NAME:-?})" || echo "unknown (no $OS_RELEASE)")
case "$os" in
  "debian 12 "*) ;;
  *) if [ "${FCRN_SKIP_OS_CHECK:-0}" != 1 ]; then
       echo "install_deps: this project builds on Debian 12 (bookworm); this machine is $os." >&2
       echo "install_deps: set FCRN_SKIP_OS_CHECK=1 to try anyway." >&2
       exit 1
     fi ;;
esac

PACKAGES=(
  # toolchain and source handling
  build-essential cmake pkg-config dpkg-dev debian-archive-keyring patch
  # compile cache: a Caffe prefix rebuilt after a patch change recompiles only
  # what the change reaches (scripts/build_caffe.sh)
  ccache
  # Caffe's build dependencies (scripts/build_caffe.sh)
  libboost-filesystem-dev libboost-system-dev libboost-thread-dev libboost-python-dev
  libgflags-dev libgoogle-glog-dev libhdf5-dev liblmdb-dev libopenblas-dev
  libopencv-dev libprotobuf-dev protobuf-compiler
  # oneDNN, for the CPU convolutions (cpp/patches/0013-*)
  libdnnl-dev
  python3-dev python3-venv python3-numpy python3-skimage python3-scipy
  python3-protobuf python3-yaml python3-pil
  # the GPU kit's training crops (tools/gpukit.py)
  python3-h5py
  # C++ layer tests
  libgtest-dev
  # the GPU kit (make gpu-kit): its archive, and binaries that find its libraries
  xz-utils patchelf
  # OpenBLAS's OpenMP build, which scripts/env.sh and the caffe wrapper put
  # first on LD_LIBRARY_PATH (Caffe patch 0016); BLIS for the comparison of
  # BLAS builds in scripts/bench_peers.py
  libopenblas0-openmp libblis4-openmp
)

missing=()
for pkg in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
  [ "$status" = installed ] || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "install_deps: missing Debian packages: ${missing[*]}" >&2
if [ "$(id -u)" -eq 0 ]; then
  SUDO=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  SUDO=(sudo -n)
else
  echo "install_deps: not root and no password-less sudo; run as root:" >&2
  echo "  apt-get update && apt-get install -y --no-install-recommends ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
if ! "${SUDO[@]}" apt-get update -q || \
   ! "${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"; then
  echo "install_deps: apt-get failed (is the Debian mirror reachable?); packages still missing: ${missing[*]}" >&2
  exit 1
fi
