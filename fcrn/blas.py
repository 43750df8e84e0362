"""OpenBLAS's kernels on CPUs newer than its release.

Debian's OpenBLAS (0.3.21, built with DYNAMIC_ARCH) picks its kernels by CPU
model when it is loaded. On a model it does not know it falls back to its
oldest x86-64 kernels (Prescott: SSE3); on an Intel Xeon of family 6, model
207 (AVX-512) they run SGEMM, and with it Caffe's 1x1 convolutions on the
BLAS, several times slower than the kernels of the CPU's instruction set
(the SGEMM table of benchmarks/peers-xeon.md). Where
OpenBLAS fell back below what the CPU runs, and OPENBLAS_CORETYPE is unset,
the project names the kernels of the CPU's instruction set: SkylakeX for
AVX-512, Haswell for AVX2 with FMA. OpenBLAS reads the variable once, when it
is loaded, so `import fcrn` sets it (pin_kernels()) before numpy (Debian's
links the same OpenBLAS) or pycaffe load it, and scripts/env.sh and the caffe
wrapper export what `python fcrn/blas.py` prints before the caffe tool starts.
A process that loaded OpenBLAS before importing fcrn keeps OpenBLAS's choice.
"""
import ctypes
import os
import subprocess
import sys

VARIABLE = "OPENBLAS_CORETYPE"

# Each instruction set's rank, the CPU flags it needs, and the kernels named for it.
_AVX2 = (1, ("avx2", "fma"), "Haswell")
_AVX512 = (2, ("avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"), "SkylakeX")

# OpenBLAS's x86-64 kernel sets by the instruction set they use; any other
# (Prescott, Nehalem, Sandybridge, ...) ranks below AVX2.
_CORE_RANKS = {"Haswell": 1, "Zen": 1, "SkylakeX": 2, "Cooperlake": 2, "SapphireRapids": 2}


def cpu_flags(path="/proc/cpuinfo"):
    """The CPU's feature flags (an empty set where /proc/cpuinfo has none)."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def best_kernels(flags):
    """(rank, kernels) of the best instruction set a CPU with `flags` runs,
    or None below AVX2 (OpenBLAS's own choice is then kept)."""
    best = None
    for rank, needed, name in (_AVX2, _AVX512):
        if all(flag in flags for flag in needed):
            best = (rank, name)
    return best


def kernels_for(core, flags):
    """The kernels to name for a CPU with `flags` on which OpenBLAS chose
    `core`, or None where its choice uses the CPU's best instruction set."""
    best = best_kernels(flags)
    if best is None or _CORE_RANKS.get(core, 0) >= best[0]:
        return None
    return best[1]


def openblas_core(library="libopenblas.so.0"):
    """The kernels OpenBLAS picked in this process (loading `library`, a name
    or a path, if need be), or None where it is not found or not OpenBLAS."""
    try:
        lib = ctypes.CDLL(library)
        lib.openblas_get_corename.restype = ctypes.c_char_p
        return lib.openblas_get_corename().decode()
    except (OSError, AttributeError):
        return None


def openblas_loaded(maps="/proc/self/maps"):
    """Whether this process has OpenBLAS loaded (then it chose already)."""
    try:
        with open(maps) as f:
            return any("libopenblas" in line for line in f)
    except OSError:
        return False


def pin_kernels(environ=None):
    """Set OPENBLAS_CORETYPE in `environ` (os.environ by default) before this
    process loads OpenBLAS: to the kernels kernels_for() names, else to
    OpenBLAS's own choice, so that child processes inherit the answer
    instead of asking again. Asks a child process, which loads OpenBLAS
    (about 40 ms), so that this one's is not loaded by asking. Returns the
    value set, or None (set already, OpenBLAS loaded, no AVX2, no OpenBLAS)."""
    environ = os.environ if environ is None else environ
    if environ.get(VARIABLE) or openblas_loaded() or best_kernels(cpu_flags()) is None \
            or not sys.executable:  # an embedded interpreter may have none
        return None
    # This file as a script: `-m fcrn.blas` would import the package, which pins.
    try:
        value = subprocess.run([sys.executable, os.path.abspath(__file__)], env=dict(environ),
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               text=True).stdout.strip()
    except OSError:
        return None
    if value:
        environ[VARIABLE] = value
    return value or None


def main():
    # Prints the value pin_kernels() sets (nothing where OPENBLAS_CORETYPE is
    # set or OpenBLAS is not found); scripts/env.sh and the caffe wrapper
    # export it.
    if not os.environ.get(VARIABLE):
        core = openblas_core()
        if core:
            print(kernels_for(core, cpu_flags()) or core)
    return 0


if __name__ == "__main__":
    sys.exit(main())
