#!/usr/bin/env bash
# Builds Caffe from Debian's `caffe` source package with the project's patches
# (cpp/patches/) and installs it into a prefix under the cache directory whose
# name is a hash of everything that goes into it. A prefix is complete when it
# holds `.complete`; it is moved into place whole, so an interrupted or failed
# build never leaves something a later run takes for finished.
#
#   scripts/build_caffe.sh                 # CPU build (what CI and `make` use)
#   scripts/build_caffe.sh --cuda          # CUDA build with cuDNN and NCCL, sm_90
#   scripts/build_caffe.sh --cuda --cuda-arch "80 90" --no-nccl
#   scripts/build_caffe.sh --kit           # CUDA, sm_90, cuDNN, and nothing the
#                                          # GPU kit does not need (no Python,
#                                          # OpenCV, LMDB, LevelDB or NCCL)
#   scripts/build_caffe.sh --print-prefix  # where the build goes, builds nothing
#
# The prefix is printed as the last line of standard output.
# FCRN_CACHE_DIR overrides the cache directory (default ~/.cache/fcrn),
# FCRN_PYTHON the Python that pycaffe is built for (default /usr/bin/python3),
# FCRN_DEBIAN_MIRROR the Debian mirror (default: the machine's own, from apt's
# sources), CUDA_HOME the CUDA toolkit (default: nvcc's on PATH, else
# /usr/local/cuda). Where ccache is installed, every compile (g++ and nvcc)
# goes through it, with its cache in the cache directory (FCRN_CCACHE=0: not):
# a prefix rebuilt because a patch changed recompiles only what the change
# reaches.
set -euo pipefail

CAFFE_VERSION=1.0.0+git20180821.99bd997-8
CAFFE_SUITE=bullseye   # the newest Debian suite that carries the package
RECIPE=2               # bump when a change here alters what gets built

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${FCRN_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/fcrn}
CUDA=0
KIT=0
CUDNN=1
NCCL=1
CUDA_ARCH=90
PRINT_ONLY=0
PYTHON=${FCRN_PYTHON:-/usr/bin/python3}
JOBS=$(nproc)

usage() { sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --cuda) CUDA=1 ;;
    --kit) CUDA=1; KIT=1; NCCL=0 ;;
    --no-cudnn) CUDNN=0 ;;
    --no-nccl) NCCL=0 ;;
    --cuda-arch) CUDA_ARCH=${2:?--cuda-arch needs a list such as \"80 90\"}; shift ;;
    --print-prefix) PRINT_ONLY=1 ;;
    -j|--jobs) JOBS=${2:?--jobs needs a number}; shift ;;
    -h|--help) usage 0 ;;
    *) echo "build_caffe: unknown option '$1'" >&2; usage 2 >&2 ;;
  esac
  shift
done

log() { echo "build_caffe: $*" >&2; }

CMAKE_OPTS=(-DCMAKE_BUILD_TYPE=Release -DBLAS=Open -DUSE_LEVELDB=OFF -DBUILD_docs=OFF)
if [ "$KIT" = 1 ]; then
  CMAKE_OPTS+=(-DUSE_LMDB=OFF -DUSE_OPENCV=OFF -DBUILD_python=OFF
               -DBUILD_python_layer=OFF)
  FLAVOUR=kit
else
  CMAKE_OPTS+=(-DUSE_LMDB=ON -DUSE_OPENCV=ON -DBUILD_python=ON
               -DBUILD_python_layer=ON -Dpython_version=3
               "-DPYTHON_EXECUTABLE=$PYTHON"
               # CPU speed (patches 0013, 0014): oneDNN convolutions, the
               # element-wise layers on OpenMP's threads and this CPU's
               # vector instructions. Not in the kit, which runs elsewhere.
               -DUSE_DNNL=ON -DUSE_OPENMP=ON -DUSE_NATIVE_ARCH=ON)
  FLAVOUR=cpu
fi
if [ "$CUDA" = 1 ]; then
  CMAKE_OPTS+=(-DCPU_ONLY=OFF "-DUSE_CUDNN=$([ "$CUDNN" = 1 ] && echo ON || echo OFF)"
               "-DUSE_NCCL=$([ "$NCCL" = 1 ] && echo ON || echo OFF)"
               -DCUDA_ARCH_NAME=Manual "-DCUDA_ARCH_BIN=$CUDA_ARCH" -DCUDA_ARCH_PTX=)
  [ "$KIT" = 1 ] || FLAVOUR=cuda
else
  CMAKE_OPTS+=(-DCPU_ONLY=ON)
fi

# -march=native builds for this CPU: a prefix is only for CPUs of its kind.
MARCH=$(c++ -march=native -Q --help=target 2>/dev/null |
        awk '$1 == "-march=" && !cpu {cpu = $2} END {print cpu}')
KEY=$( { echo "$CAFFE_VERSION $RECIPE ${MARCH:-unknown}"; printf '%s\n' "${CMAKE_OPTS[@]}";
         cat "$ROOT"/cpp/patches/*.patch; } | sha256sum | cut -c1-12)
PREFIX=$CACHE/caffe-$FLAVOUR-$KEY

if [ "$PRINT_ONLY" = 1 ]; then echo "$PREFIX"; exit 0; fi

# --- a CUDA build stops here, before anything is built, if a part is missing -----
fail() { log "$*"; exit 1; }
# The CUDNN_MAJOR of the first cudnn_version.h (cuDNN 8 and later) found.
# The CUDNN_MAJOR of the first cudnn_version.h (cuDNN 8 and later) found: in
# $CUDNN_ROOT/include only, where that is set.
cudnn_major() {
  local dir dirs=("$CUDA_HOME/include" /usr/local/include /usr/include)
  [ -z "${CUDNN_ROOT:-}" ] || dirs=("$CUDNN_ROOT/include")
  for dir in "${dirs[@]}"; do
    if [ -f "$dir/cudnn_version.h" ]; then
      sed -n 's/^#define CUDNN_MAJOR \([0-9]*\).*/\1/p' "$dir/cudnn_version.h"
      return
    fi
  done
}
# Whether libnccl.so is there: in $NCCL_DIR/lib* only, where that is set.
have_nccl() {
  local dir dirs=("$CUDA_HOME"/lib* /usr/local/lib* /usr/lib /usr/lib/x86_64-linux-gnu)
  [ -z "${NCCL_DIR:-}" ] || dirs=("$NCCL_DIR"/lib*)
  for dir in "${dirs[@]}"; do
    ls "$dir"/libnccl.so* >/dev/null 2>&1 && return 0
  done
  return 1
}
if [ "$CUDA" = 1 ]; then
  NVCC=$(command -v nvcc || true)
  CUDA_HOME=${CUDA_HOME:-$( [ -n "$NVCC" ] && dirname "$(dirname "$NVCC")" || echo /usr/local/cuda)}
  [ -x "$CUDA_HOME/bin/nvcc" ] || fail "CUDA build asked for, but no nvcc on PATH or in" \
      "$CUDA_HOME/bin; install the CUDA toolkit or set CUDA_HOME (or build without --cuda, CUDA=0)"
  export PATH="$CUDA_HOME/bin:$PATH"
  if [ "$CUDNN" = 1 ]; then
    major=$(cudnn_major)
    [ -n "$major" ] || fail "cuDNN not found (no cudnn_version.h in" \
        "${CUDNN_ROOT:+$CUDNN_ROOT/include}${CUDNN_ROOT:-$CUDA_HOME/include, /usr/local/include or /usr/include});" \
        "install cuDNN 8 or later, or build without it: --no-cudnn (make CUDNN=0)"
    [ "$major" -ge 8 ] || fail "cuDNN $major found; cuDNN 8 or later is needed," \
        "or build without it: --no-cudnn (make CUDNN=0)"
  fi
  if [ "$NCCL" = 1 ] && ! have_nccl; then
    fail "NCCL not found (no libnccl.so in" \
        "${NCCL_DIR:+$NCCL_DIR/lib*}${NCCL_DIR:-$CUDA_HOME/lib*, /usr/local/lib* or /usr/lib});" \
        "install NCCL, or build without it: --no-nccl (make NCCL=0)"
  fi
fi
# A complete prefix was moved into place whole: it needs no lock, so that a
# build of another flavour running elsewhere does not hold this caller up.
if [ -f "$PREFIX/.complete" ]; then echo "$PREFIX"; exit 0; fi
mkdir -p "$CACHE"
exec 9>"$CACHE/caffe.lock"
flock 9   # one build at a time; a second caller waits and then reuses it
if [ -f "$PREFIX/.complete" ]; then echo "$PREFIX"; exit 0; fi

# --- source: Debian's package, fetched once into the cache ---------------------
# The Debian archive this machine's apt uses: the first URI of its sources whose
# suites include the release itself (not -security or -updates).
debian_mirror() {
  local release
  release=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}") || true
  [ -n "$release" ] || return 0
  { cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk -v want="$release" '
      BEGIN { RS = ""; FS = "\n" }
      { uri = ""; on = 1; found = 0
        for (i = 1; i <= NF; i++) {
          if ($i ~ /^URIs:/) { split(substr($i, 6), u, " "); uri = u[1] }
          if ($i ~ /^Suites:/ && index(" " substr($i, 8) " ", " " want " ")) found = 1
          if ($i ~ /^Enabled: *no/) on = 0 }
        if (on && found && uri != "") print uri }'
    cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | awk -v want="$release" '
      $1 == "deb" || $1 == "deb-src" {
        i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
        if ($(i + 1) == want) print $i }'
  } | head -n 1 || true   # no sources.list, or head closing the pipe early
}
SRC_CACHE=$CACHE/debian-src
DSC=$SRC_CACHE/caffe_${CAFFE_VERSION#*:}.dsc
if [ ! -f "$DSC" ]; then
  MIRROR=${FCRN_DEBIAN_MIRROR:-$(debian_mirror)}
  [ -n "$MIRROR" ] || fail "no Debian mirror found in /etc/apt's sources;" \
      "set FCRN_DEBIAN_MIRROR to one (its URL, as in a sources.list line)"
  log "downloading Debian source package caffe=$CAFFE_VERSION ($CAFFE_SUITE) from $MIRROR"
  APT_DIR=$(mktemp -d "$CACHE/apt.XXXXXX")
  mkdir -p "$APT_DIR/lists/partial" "$APT_DIR/cache/archives/partial" "$APT_DIR/dl"
  echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg]" \
       "$MIRROR $CAFFE_SUITE main" > "$APT_DIR/sources.list"
  # Private lists and sources: nothing under /etc or /var/lib/apt changes.
  APT=(apt-get -q -o "Dir::Etc::SourceList=$APT_DIR/sources.list"
       -o Dir::Etc::SourceParts=/dev/null -o "Dir::State::Lists=$APT_DIR/lists"
       -o "Dir::Cache=$APT_DIR/cache" -o APT::Sandbox::User=root)
  if ! "${APT[@]}" update >&2 || \
     ! (cd "$APT_DIR/dl" && "${APT[@]}" source --download-only "caffe=$CAFFE_VERSION" >&2); then
    rm -rf "$APT_DIR"
    log "could not download the source package from $MIRROR ($CAFFE_SUITE);"
    log "check the network, set FCRN_DEBIAN_MIRROR to a mirror that carries $CAFFE_SUITE,"
    log "or put caffe_${CAFFE_VERSION}.dsc and its tarballs in $SRC_CACHE"
    exit 1
  fi
  mkdir -p "$SRC_CACHE"
  mv "$APT_DIR"/dl/caffe_* "$SRC_CACHE"/
  rm -rf "$APT_DIR"
fi

# --- build in a scratch directory, install into a staging root ------------------
BUILD=$CACHE/build-$FLAVOUR-$KEY
STAGE=$CACHE/stage-$FLAVOUR-$KEY
rm -rf "$BUILD" "$STAGE"
mkdir -p "$BUILD"
trap 'rm -rf "$STAGE"; log "failed; nothing was installed (build tree kept in $BUILD)"' ERR
log "unpacking and patching into $BUILD"
dpkg-source -q -x "$DSC" "$BUILD/src" >&2
for p in "$ROOT"/cpp/patches/*.patch; do
  log "applying $(basename "$p")"
  patch -d "$BUILD/src" -p1 --forward --batch -s < "$p"
done
# ccache: not part of the key (it changes no output). Paths are hashed
# relative to the build folder, whose name holds the key, so that builds of
# other keys share the cache; nvcc goes through a wrapper, since Caffe's
# FindCUDA runs it directly.
LAUNCH=()
if [ "${FCRN_CCACHE:-1}" != 0 ] && command -v ccache >/dev/null; then
  export CCACHE_DIR=${CCACHE_DIR:-$CACHE/ccache} CCACHE_BASEDIR=$BUILD
  LAUNCH=(-DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
  if [ "$CUDA" = 1 ]; then
    mkdir -p "$BUILD/bin"
    printf '#!/bin/sh\nexec ccache "%s" "$@"\n' "$CUDA_HOME/bin/nvcc" > "$BUILD/bin/nvcc"
    chmod +x "$BUILD/bin/nvcc"
    LAUNCH+=("-DCUDA_TOOLKIT_ROOT_DIR=$CUDA_HOME" "-DCUDA_NVCC_EXECUTABLE=$BUILD/bin/nvcc")
  fi
fi
log "configuring ($FLAVOUR) and building with $JOBS jobs${LAUNCH:+ (through ccache)}"
cmake -S "$BUILD/src" -B "$BUILD/build" "-DCMAKE_INSTALL_PREFIX=$PREFIX" "${CMAKE_OPTS[@]}" \
  "${LAUNCH[@]}" >&2
make -C "$BUILD/build" -j"$JOBS" >&2
make -C "$BUILD/build" install DESTDIR="$STAGE" >&2
if [ "$CUDA" = 1 ]; then
  # Caffe's own tests, for the GPU kit's test binary (CMakeLists.txt).
  cp -r "$BUILD/src/src/caffe/test" "$STAGE$PREFIX/share/Caffe/test-src"
fi
trap - ERR

touch "$STAGE$PREFIX/.complete"
mv "$STAGE$PREFIX" "$PREFIX"
rm -rf "$STAGE" "$BUILD"
log "installed into $PREFIX"
echo "$PREFIX"
