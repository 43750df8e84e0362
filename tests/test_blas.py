"""OpenBLAS's kernels (fcrn/blas.py): the rule that names them where OpenBLAS
falls back below the CPU's instruction set, and that every way into Caffe
(`import fcrn`, scripts/env.sh, the caffe wrapper) leaves OpenBLAS on kernels
of the CPU's instruction set, not its SSE3 fallback."""
import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT
from fcrn import blas

AVX2 = {"sse4_2", "avx", "avx2", "fma"}
AVX512 = AVX2 | {"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"}


@pytest.mark.parametrize("core, flags, expected", [
    ("Prescott", AVX512, "SkylakeX"),       # a Xeon newer than OpenBLAS 0.3.21
    ("Prescott", AVX2, "Haswell"),
    ("Sandybridge", AVX2, "Haswell"),       # AVX kernels on an AVX2 CPU
    ("Zen", AVX512, "SkylakeX"),            # AVX-512 Zen taken for an older Zen
    ("Zen", AVX2, None),                    # OpenBLAS's own choice is right
    ("SkylakeX", AVX512, None),
    ("Cooperlake", AVX512, None),
    ("Prescott", {"sse3", "avx"}, None),     # nothing better to name
    ("Prescott", {"avx2"}, None),            # AVX2 without FMA: Haswell's kernels need both
    ("Prescott", AVX2 | {"avx512f"}, "Haswell"),  # SkylakeX's kernels need all five
])
def test_kernels_for(core, flags, expected):
    assert blas.kernels_for(core, flags) == expected


def test_cpu_flags_reads_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse3 avx2 fma\nbugs\t\t: none\n")
    assert blas.cpu_flags(str(cpuinfo)) == {"fpu", "sse3", "avx2", "fma"}
    assert blas.cpu_flags(str(tmp_path / "missing")) == set()


def test_pin_kernels_keeps_a_set_variable():
    environ = {blas.VARIABLE: "Haswell"}
    assert blas.pin_kernels(environ) is None
    assert environ == {blas.VARIABLE: "Haswell"}


def unpinned_env(**extra):
    env = {k: v for k, v in os.environ.items() if k != blas.VARIABLE}
    env.update(extra)
    return env


def assert_cpu_kernels(core):
    """OpenBLAS's kernels in use are of the CPU's best instruction set."""
    assert core, "OpenBLAS not found"
    assert blas.kernels_for(core, blas.cpu_flags()) is None, \
        "OpenBLAS runs %s kernels on a CPU with %s" % (
            core, blas.kernels_for(core, blas.cpu_flags()))


def test_import_fcrn_pins_before_numpy_loads_openblas():
    code = ("import sys; sys.path.insert(0, %r); import fcrn, numpy\n"
            "from fcrn import blas\n"
            "assert blas.openblas_loaded()  # Debian's numpy links OpenBLAS\n"
            "print(blas.openblas_core())" % ROOT)
    out = subprocess.run([sys.executable, "-c", code], env=unpinned_env(), check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    assert_cpu_kernels(out.strip())


def test_caffe_wrapper_names_kernels():
    # OPENBLAS_VERBOSE=2: OpenBLAS says which kernels it loaded.
    run = subprocess.run([os.path.join(ROOT, "build", "bin", "caffe"), "--version"],
                         env=unpinned_env(OPENBLAS_VERBOSE="2"), check=True,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert_cpu_kernels(re.search(r"Core: (\w+)", run.stdout).group(1))


def test_env_sh_exports_kernels():
    run = subprocess.run(["bash", "-c", 'source scripts/env.sh && echo "$OPENBLAS_CORETYPE"'],
                         cwd=ROOT, env=unpinned_env(), check=True,
                         stdout=subprocess.PIPE, text=True)
    assert_cpu_kernels(run.stdout.strip())
