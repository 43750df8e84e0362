#!/usr/bin/env bash
# Builds build/gpu-kit.tar.xz: what a GPU machine without any of Caffe's
# dependencies needs to run scripts/gpu_check.sh. `make gpu-kit` runs this.
#
#   gpu-kit/bin/   caffe, fcrn_time, fcrn_output, test_fcrn_layers, test_caffe_gpu
#   gpu-kit/lib/   libcaffe, libfcrn_layers and every shared library they use,
#                  found with ldd, except the allowed ones below
#   gpu-kit/lib/cxx/  this machine's libstdc++ and libgcc_s, off the binaries'
#                  search path: gpu_check uses them only where the GPU
#                  machine's own are older than the kit needs
#   gpu-kit/manifest.json  the binaries, and the newest GLIBC, GLIBCXX, CXXABI
#                  and GCC symbol versions they ask for (printed here too)
#   gpu-kit/nets/, train/, reference/, plan.json   (tools/gpukit.py)
#
# Caffe for the kit: CUDA with cuDNN for sm_90 and nothing else it can do
# without (scripts/build_caffe.sh --kit). The archive is written to a
# temporary name and renamed when complete.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
JOBS=$(nproc)
MAX_MIB=48
CARRY_MIB=64  # what a device call carries: the working tree and the kit together
while [ $# -gt 0 ]; do
  case "$1" in
    -j|--jobs) JOBS=${2:?--jobs needs a number}; shift ;;
    -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build_gpu_kit: unknown option '$1'" >&2; exit 2 ;;
  esac
  shift
done
log() { echo "build_gpu_kit: $*" >&2; }

# Libraries a GPU machine has: the C runtime (glibc) and the CUDA libraries,
# which come with its driver, toolkit and PyTorch (nvidia-* packages) and are
# too large to carry (cuBLASLt alone is over 500 MiB).
ALLOWED='^(linux-vdso|ld-linux-x86-64|libc|libm|libdl|libpthread|librt|libresolv|libutil)\.so|^lib(cudart|cublas|cublasLt|curand|cudnn[a-z_]*|nccl|cuda)\.so'

KIT_PREFIX=$("$ROOT/scripts/build_caffe.sh" --kit -j "$JOBS" | tail -n 1)
BUILD=$ROOT/build-kit
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release \
  "-DCaffe_DIR=$KIT_PREFIX/share/Caffe" -DFCRN_CUDA_ARCH=90 -Wno-dev >/dev/null
cmake --build "$BUILD" -j "$JOBS" --target fcrn_layers fcrn_time fcrn_output test_fcrn_layers \
  test_caffe_gpu

STAGE=$ROOT/build/gpu-kit.stage
KIT=$STAGE/gpu-kit
rm -rf "$STAGE"
mkdir -p "$KIT/bin" "$KIT/lib"
cp "$KIT_PREFIX/bin/caffe" "$BUILD/fcrn_time" "$BUILD/fcrn_output" "$BUILD/test_fcrn_layers" \
   "$BUILD/test_caffe_gpu" "$KIT/bin/"
cp -P "$KIT_PREFIX"/lib/libcaffe.so* "$BUILD/libfcrn_layers.so" "$KIT/lib/"

# Every library the binaries resolve here, but the allowed ones. ldd lists the
# whole closure; libfcrn_layers is preloaded at run time, so it is asked too.
for elf in "$KIT"/bin/* "$KIT"/lib/libfcrn_layers.so; do
  LD_LIBRARY_PATH="$KIT/lib" ldd "$elf"
done | awk '$2 == "=>" && $3 ~ /^\// { print $1, $3 }' | sort -u |
while read -r soname path; do
  if [[ $soname =~ $ALLOWED ]]; then continue; fi
  [ -e "$KIT/lib/$soname" ] || cp -L "$path" "$KIT/lib/$soname"
done
# The C++ runtime (Debian 12's needs glibc 2.36) goes aside: found through
# the binaries' RUNPATHs, it would shadow a GPU machine's own, which older
# glibcs can load.
mkdir "$KIT/lib/cxx"
for soname in libstdc++.so.6 libgcc_s.so.1; do
  [ ! -e "$KIT/lib/$soname" ] || mv "$KIT/lib/$soname" "$KIT/lib/cxx/"
done
# The binaries look for libraries in the kit first, and never in this
# machine's build folders (their RUNPATHs), which a GPU machine does not have.
for elf in "$KIT"/bin/*; do patchelf --set-rpath '$ORIGIN/../lib' "$elf"; done
for elf in "$KIT"/lib/*.so* "$KIT"/lib/cxx/*; do
  [ -L "$elf" ] || patchelf --set-rpath '$ORIGIN' "$elf"
done
missing=$(for elf in "$KIT"/bin/* "$KIT"/lib/*.so*; do
            LD_LIBRARY_PATH="$KIT/lib:$KIT/lib/cxx" ldd "$elf" | awk '/not found/ { print $1 }'
          done | sort -u | grep -Ev "$ALLOWED" || true)
[ -z "$missing" ] || { log "libraries not found here: $missing"; exit 1; }

# What gpu_check needs to know before running anything: the binaries, and the
# newest symbol versions they ask of glibc and of the C++ runtime, and that
# the carried runtime asks of glibc.
required_versions() {  # "LIBRARY VERSION" per symbol version the files ask for
  for elf in "$@"; do objdump -p "$elf"; done | awk '
    /required from/ { lib = $3; sub(/:$/, "", lib); next }
    /^$/ || /Version definitions/ { lib = "" }
    lib != "" && NF == 4 { print lib, $4 }'
}
newest() { sed -n "s/.* $1_\([0-9.]*\)\$/\1/p" | sort -uV | tail -n 1; }
(cd "$KIT" && ls bin/* lib/*.so*) > "$STAGE/binaries"
(cd "$KIT" && required_versions $(cat "$STAGE/binaries")) > "$STAGE/required"
glibc=$(newest GLIBC < "$STAGE/required")
glibcxx=$(newest GLIBCXX < "$STAGE/required")
cxxabi=$(newest CXXABI < "$STAGE/required")
gcc=$(newest GCC < "$STAGE/required")
cxx_glibc=$(required_versions "$KIT"/lib/cxx/* | newest GLIBC)
json_list() { sed 's/.*/"&"/' | paste -sd, -; }
printf '{"needs": {"glibc": "%s", "GLIBCXX": "%s", "CXXABI": "%s", "GCC": "%s", "cxx_glibc": "%s"},
 "binaries": [%s],
 "cxx": [%s]}\n' "$glibc" "$glibcxx" "${cxxabi:-0}" "${gcc:-0}" "$cxx_glibc" \
  "$(json_list < "$STAGE/binaries")" "$(cd "$KIT" && ls lib/cxx/* | json_list)" > "$KIT/manifest.json"
log "the kit needs glibc $glibc, GLIBCXX_$glibcxx, CXXABI_${cxxabi:-none}, GCC_${gcc:-none};" \
    "the libstdc++ and libgcc_s it carries need glibc $cxx_glibc"

log "writing the kit's nets, training data and CPU reference losses"
(cd "$ROOT" && source scripts/env.sh && export GLOG_minloglevel=1 &&
 python -c 'import sys, tools.gpukit; tools.gpukit.write(sys.argv[1])' "$KIT")

OUT=$ROOT/build/gpu-kit.tar.xz
tar -C "$STAGE" -cf - gpu-kit | xz -T0 -6 > "$OUT.partial"
size_bytes=$(stat -c %s "$OUT.partial")
size_mib=$(( size_bytes / 1048576 ))
# The files a device call sends beside the kit: those git tracks or would.
tree_bytes=$(cd "$ROOT" && git ls-files -z -co --exclude-standard 2>/dev/null |
             xargs -0 -r stat -c %s -- 2>/dev/null | awk '{ s += $1 } END { print s + 0 }')
if [ "$size_mib" -gt "$MAX_MIB" ] || [ $(( (size_bytes + tree_bytes) / 1048576 )) -ge "$CARRY_MIB" ]; then
  rm -f "$OUT.partial"
  log "the kit is $size_mib MiB and the working tree $(( tree_bytes / 1048576 )) MiB: over" \
      "the $MAX_MIB MiB that a GPU machine takes, or the $CARRY_MIB MiB a device call carries"
  exit 1
fi
mv "$OUT.partial" "$OUT"
rm -rf "$STAGE"
log "wrote $OUT ($size_mib MiB; the working tree beside it $(( tree_bytes / 1048576 )) MiB)"
