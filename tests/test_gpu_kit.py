"""The GPU kit (`make gpu-kit`), checked on this GPU-less machine: it carries
every shared library its binaries need except the C runtime and CUDA's own,
and scripts/gpu_check.sh runs each of its steps on the CPU."""
import json
import os
import re
import shutil
import subprocess
import tarfile

import pytest

from conftest import ROOT

ARCHIVE = os.path.join(ROOT, 'build', 'gpu-kit.tar.xz')
CHECK = os.path.join(ROOT, 'scripts', 'gpu_check.sh')
# What a GPU machine is expected to have (the GPU issue's list): glibc's
# libraries and the CUDA libraries of its driver, toolkit and PyTorch.
PROVIDED = re.compile(r'^(linux-vdso|ld-linux-x86-64|libc|libm|libdl|libpthread|librt|'
                      r'libresolv|libutil)\.so|^lib(cudart|cublas|cublasLt|curand|cudnn\w*|nccl|'
                      r'cuda)\.so')

pytestmark = pytest.mark.skipif(not os.path.exists(ARCHIVE),
                                reason='no kit; `make gpu-kit` (part of `make test`) builds it')


@pytest.fixture(scope='module')
def kit(tmp_path_factory):
    folder = tmp_path_factory.mktemp('kit')
    with tarfile.open(ARCHIVE) as archive:
        archive.extractall(folder)
    return folder / 'gpu-kit'


def elf_files(kit):
    for sub in ('bin', 'lib'):
        for name in sorted(os.listdir(kit / sub)):
            path = kit / sub / name
            with open(path, 'rb') as f:
                if f.read(4) == b'\x7fELF':
                    yield path


def test_kit_is_small_enough():
    assert os.path.getsize(ARCHIVE) <= 48 * 2 ** 20


def test_every_library_is_in_the_kit_or_provided(kit):
    """Found through the kit's own RUNPATHs, with no LD_LIBRARY_PATH."""
    env = {k: v for k, v in os.environ.items() if k not in ('LD_LIBRARY_PATH', 'LD_PRELOAD')}
    checked = 0
    for path in elf_files(kit):
        output = subprocess.run(['ldd', str(path)], env=env, capture_output=True,
                                text=True, check=True).stdout
        for soname, target in re.findall(r'^\s*(\S+) => (\S+)', output, re.M):
            checked += 1
            inside = os.path.realpath(target).startswith(str(kit) + os.sep)
            assert inside or PROVIDED.match(soname), \
                '%s needs %s from %s, outside the kit' % (path.name, soname, target)
    assert checked > 20  # libcaffe alone needs boost, glog, protobuf, hdf5, BLAS, ...


def test_no_binary_looks_outside_the_kit(kit):
    for path in elf_files(kit):
        dynamic = subprocess.run(['readelf', '-d', str(path)], capture_output=True,
                                 text=True, check=True).stdout
        for kind, value in re.findall(r'\((RPATH|RUNPATH)\)\s+Library \w+: \[(.*)\]', dynamic):
            assert all(p.startswith('$ORIGIN') for p in value.split(':')), (path.name, value)


def test_manifest_names_every_binary(kit):
    manifest = json.loads((kit / 'manifest.json').read_text())
    assert sorted(manifest['binaries']) == sorted(
        os.path.relpath(p, kit) for p in elf_files(kit))
    assert re.fullmatch(r'2\.\d+', manifest['glibc'])


def run_check(tmp_path, archive=ARCHIVE):
    out = tmp_path / 'out'
    result = subprocess.run(['bash', CHECK, '--cpu', '--kit', str(archive), str(out)],
                            capture_output=True, text=True, timeout=900)
    return result, out


def test_cpu_run_of_every_step(tmp_path):
    result, out = run_check(tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((out / 'gpu.json').read_text())
    assert [t['binary'] for t in report['tests']] == ['test_fcrn_layers', 'test_caffe_gpu']
    for tests in report['tests']:
        assert tests['passed'] and tests['tests'] > 0, tests
    # A CUDA build without a GPU says so and runs the CPU suites.
    assert 'GPU tests skipped' in report['tests'][0].get('gpu_skipped', '')
    assert report['training']['passed'], report['training']
    assert report['training']['first_difference'] <= report['training']['first_tolerance']
    assert report['benchmarks'] and all('median_ms' in b for b in report['benchmarks']), \
        report['benchmarks']
    assert all(b['peak_bytes'] > 0 for b in report['benchmarks'])
    assert 'GPU only' in report['torch']['skipped']
    assert (out / 'gpu.md').read_text().startswith('# GPU check')
    assert len(os.listdir(out)) <= 8  # what a GPU machine can send back


def test_a_missing_library_stops_the_check_naming_it(tmp_path, kit):
    """libcaffe: this machine has every other library of the kit elsewhere."""
    broken = tmp_path / 'broken'
    shutil.copytree(kit, broken / 'gpu-kit', symlinks=True)
    missing = 'libcaffe.so.1.0.0'
    os.remove(broken / 'gpu-kit' / 'lib' / missing)
    archive = tmp_path / 'broken.tar.xz'
    with tarfile.open(archive, 'w:xz') as tar:
        tar.add(broken / 'gpu-kit', arcname='gpu-kit')
    result, out = run_check(tmp_path, archive)
    assert result.returncode == 1
    report = (out / 'gpu.md').read_text()
    assert '**Stopped:** the kit needs libraries this machine lacks: %s' % missing in report
    assert 'tests' not in json.loads((out / 'gpu.json').read_text())


def test_usage_errors(tmp_path):
    result = subprocess.run(['bash', CHECK], capture_output=True, text=True)
    assert result.returncode == 2 and 'OUTDIR missing' in result.stderr
    result = subprocess.run(['bash', CHECK, '--kit', str(tmp_path / 'none.tar.xz'),
                             str(tmp_path / 'out')], capture_output=True, text=True)
    assert result.returncode == 1 and "no kit at" in result.stderr
