#!/usr/bin/env bash
# Builds Caffe from Debian's `caffe` source package with the project's patches
# (cpp/patches/) and installs it into a prefix under the cache directory whose
# name is a hash of everything that goes into it. A prefix is complete when it
# holds `.complete`; it is moved into place whole, so an interrupted or failed
# build never leaves something a later run takes for finished.
#
#   scripts/build_caffe.sh                 # CPU build (what CI and `make` use)
#   scripts/build_caffe.sh --cuda          # CUDA build, cuDNN off, sm_90 and others
#   scripts/build_caffe.sh --cuda --cuda-arch "80 90"
#   scripts/build_caffe.sh --print-prefix  # where the build goes, builds nothing
#
# The prefix is printed as the last line of standard output.
# FCRN_CACHE_DIR overrides the cache directory (default ~/.cache/fcrn).
set -euo pipefail

CAFFE_VERSION=1.0.0+git20180821.99bd997-8
CAFFE_SUITE=bullseye   # the newest Debian suite that carries the package
RECIPE=1               # bump when a change here alters what gets built

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${FCRN_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/fcrn}
CUDA=0
CUDA_ARCH="75 80 86 90"
PRINT_ONLY=0
JOBS=$(nproc)

usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --cuda) CUDA=1 ;;
    --cuda-arch) CUDA_ARCH=${2:?--cuda-arch needs a list such as \"80 90\"}; shift ;;
    --print-prefix) PRINT_ONLY=1 ;;
    -j|--jobs) JOBS=${2:?--jobs needs a number}; shift ;;
    -h|--help) usage 0 ;;
    *) echo "build_caffe: unknown option '$1'" >&2; usage 2 >&2 ;;
  esac
  shift
done

log() { echo "build_caffe: $*" >&2; }

CMAKE_OPTS=(
  -DCMAKE_BUILD_TYPE=Release -DBLAS=Open -DUSE_LEVELDB=OFF -DUSE_LMDB=ON
  -DUSE_OPENCV=ON -DBUILD_python=ON -DBUILD_python_layer=ON -DBUILD_docs=OFF
  -Dpython_version=3 -DPYTHON_EXECUTABLE=/usr/bin/python3
)
if [ "$CUDA" = 1 ]; then
  CMAKE_OPTS+=(-DCPU_ONLY=OFF -DUSE_CUDNN=OFF -DCUDA_ARCH_NAME=Manual
               "-DCUDA_ARCH_BIN=$CUDA_ARCH" -DCUDA_ARCH_PTX=)
  FLAVOUR=cuda
else
  CMAKE_OPTS+=(-DCPU_ONLY=ON)
  FLAVOUR=cpu
fi

KEY=$( { echo "$CAFFE_VERSION $RECIPE"; printf '%s\n' "${CMAKE_OPTS[@]}";
         cat "$ROOT"/cpp/patches/*.patch; } | sha256sum | cut -c1-12)
PREFIX=$CACHE/caffe-$FLAVOUR-$KEY

if [ "$PRINT_ONLY" = 1 ]; then echo "$PREFIX"; exit 0; fi
mkdir -p "$CACHE"
exec 9>"$CACHE/caffe.lock"
flock 9   # one build at a time; a second caller waits and then reuses it
if [ -f "$PREFIX/.complete" ]; then echo "$PREFIX"; exit 0; fi

# --- source: Debian's package, fetched once into the cache ---------------------
SRC_CACHE=$CACHE/debian-src
DSC=$SRC_CACHE/caffe_${CAFFE_VERSION#*:}.dsc
if [ ! -f "$DSC" ]; then
  log "downloading Debian source package caffe=$CAFFE_VERSION ($CAFFE_SUITE)"
  APT_DIR=$(mktemp -d "$CACHE/apt.XXXXXX")
  mkdir -p "$APT_DIR/lists/partial" "$APT_DIR/cache/archives/partial" "$APT_DIR/dl"
  echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg]" \
       "http://deb.debian.org/debian $CAFFE_SUITE main" > "$APT_DIR/sources.list"
  # Private lists and sources: nothing under /etc or /var/lib/apt changes.
  APT=(apt-get -q -o "Dir::Etc::SourceList=$APT_DIR/sources.list"
       -o Dir::Etc::SourceParts=/dev/null -o "Dir::State::Lists=$APT_DIR/lists"
       -o "Dir::Cache=$APT_DIR/cache" -o APT::Sandbox::User=root)
  if ! "${APT[@]}" update >&2 || \
     ! (cd "$APT_DIR/dl" && "${APT[@]}" source --download-only "caffe=$CAFFE_VERSION" >&2); then
    rm -rf "$APT_DIR"
    log "could not download the source package from deb.debian.org ($CAFFE_SUITE);"
    log "check the network, or put caffe_${CAFFE_VERSION}.dsc and its tarballs in $SRC_CACHE"
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
log "configuring ($FLAVOUR) and building with $JOBS jobs"
cmake -S "$BUILD/src" -B "$BUILD/build" "-DCMAKE_INSTALL_PREFIX=$PREFIX" "${CMAKE_OPTS[@]}" >&2
make -C "$BUILD/build" -j"$JOBS" >&2
make -C "$BUILD/build" install DESTDIR="$STAGE" >&2
trap - ERR

touch "$STAGE$PREFIX/.complete"
mv "$STAGE$PREFIX" "$PREFIX"
rm -rf "$STAGE" "$BUILD"
log "installed into $PREFIX"
echo "$PREFIX"
