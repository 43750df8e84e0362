"""The GPU kit (`make gpu-kit`), checked on this GPU-less machine: it carries
every shared library its binaries need except the C runtime and CUDA's own,
scripts/gpu_check.sh runs each of its steps on the CPU, keeps its deadline
and names what a machine lacks before any step runs."""
import importlib.util
import json
import os
import re
import shutil
import subprocess
import tarfile
import time

import pytest

from conftest import ROOT

ARCHIVE = os.path.join(ROOT, 'build', 'gpu-kit.tar.xz')
CHECK = os.path.join(ROOT, 'scripts', 'gpu_check.sh')
# What a GPU machine is expected to have (the GPU issue's list): glibc's
# libraries and the CUDA libraries of its driver, toolkit and PyTorch.
PROVIDED = re.compile(r'^(linux-vdso|ld-linux-x86-64|libc|libm|libdl|libpthread|librt|'
                      r'libresolv|libutil)\.so|^lib(cudart|cublas|cublasLt|curand|cudnn\w*|nccl|'
                      r'cuda)\.so')

needs_kit = pytest.mark.skipif(not os.path.exists(ARCHIVE),
                               reason='no kit; `make gpu-kit` (part of `make test`) builds it')


def load_check():
    spec = importlib.util.spec_from_file_location(
        'gpu_check', os.path.join(ROOT, 'scripts', 'gpu_check.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def kit(tmp_path_factory):
    folder = tmp_path_factory.mktemp('kit')
    with tarfile.open(ARCHIVE) as archive:
        archive.extractall(folder)
    return folder / 'gpu-kit'


def elf_files(kit):
    for sub in ('bin', 'lib', 'lib/cxx'):
        for name in sorted(os.listdir(kit / sub)):
            path = kit / sub / name
            if path.is_dir():
                continue
            with open(path, 'rb') as f:
                if f.read(4) == b'\x7fELF':
                    yield path


@needs_kit
def test_kit_is_small_enough():
    assert os.path.getsize(ARCHIVE) <= 48 * 2 ** 20


@needs_kit
def test_every_library_is_in_the_kit_or_provided(kit):
    """Found through the kit's own RUNPATHs and, for the C++ runtime, its
    lib/cxx (what gpu_check adds where the machine's runtime is too old)."""
    env = {k: v for k, v in os.environ.items() if k not in ('LD_LIBRARY_PATH', 'LD_PRELOAD')}
    env['LD_LIBRARY_PATH'] = str(kit / 'lib' / 'cxx')
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


@needs_kit
def test_the_cxx_runtime_is_off_the_search_path(kit):
    """Debian 12's libstdc++ needs glibc 2.36: in lib/, where the RUNPATHs
    point, it would shadow an older machine's own, which would do."""
    assert sorted(os.listdir(kit / 'lib' / 'cxx')) == ['libgcc_s.so.1', 'libstdc++.so.6']
    assert not set(os.listdir(kit / 'lib')) & {'libgcc_s.so.1', 'libstdc++.so.6'}


@needs_kit
def test_no_binary_looks_outside_the_kit(kit):
    for path in elf_files(kit):
        dynamic = subprocess.run(['readelf', '-d', str(path)], capture_output=True,
                                 text=True, check=True).stdout
        for kind, value in re.findall(r'\((RPATH|RUNPATH)\)\s+Library \w+: \[(.*)\]', dynamic):
            assert all(p.startswith('$ORIGIN') for p in value.split(':')), (path.name, value)


@needs_kit
def test_manifest_names_every_binary_and_what_it_needs(kit):
    manifest = json.loads((kit / 'manifest.json').read_text())
    assert sorted(manifest['binaries'] + manifest['cxx']) == sorted(
        os.path.relpath(p, kit) for p in elf_files(kit))
    needs = manifest['needs']
    for key, pattern in (('glibc', r'2\.\d+'), ('cxx_glibc', r'2\.\d+'),
                         ('GLIBCXX', r'3\.4\.\d+'), ('CXXABI', r'1\.3\.\d+'),
                         ('GCC', r'\d+(\.\d+)*')):
        assert re.fullmatch(pattern, needs[key]), (key, needs[key])
    # What this machine's objdump reads off the binaries, independently.
    versions = subprocess.run(['objdump', '-T'] + [str(kit / b) for b in manifest['binaries']],
                              capture_output=True, text=True).stdout
    newest = max(re.findall(r'GLIBC_(2\.\d+)', versions), key=lambda v: int(v.split('.')[1]))
    assert needs['glibc'] == newest


# The machine's glibc and C++ runtime -> what gpu_check decides.
NEEDS = {'glibc': '2.34', 'GLIBCXX': '3.4.30', 'CXXABI': '1.3.13', 'GCC': '4.2.0',
         'cxx_glibc': '2.36'}
NEW_CXX = {'GLIBCXX': '3.4.33', 'CXXABI': '1.3.15', 'GCC': '14.0.0'}
OLD_CXX = {'GLIBCXX': '3.4.28', 'CXXABI': '1.3.12', 'GCC': '10.0.0'}


@pytest.mark.parametrize('glibc, provided, force, chosen, message', [
    ('2.39', NEW_CXX, 'auto', 'machine', None),          # a newer image
    ('2.35', dict(NEW_CXX, GLIBCXX='3.4.30'), 'auto', 'machine', None),
    ('2.36', OLD_CXX, 'auto', 'kit', None),              # old runtime, glibc for the kit's
    ('2.35', OLD_CXX, 'auto', None, 'GLIBCXX_3.4.30, CXXABI_1.3.13 from the C++ runtime '
                                    "(this machine's has up to CXXABI_1.3.12, GCC_10.0.0, "
                                    'GLIBCXX_3.4.28), or glibc 2.36'),
    ('2.31', NEW_CXX, 'auto', None, 'the kit needs glibc 2.34 or newer (GLIBC_2.34 in its '
                                    'libraries); this machine has glibc 2.31'),
    ('2.35', {}, 'auto', None, "(this machine's has up to none)"),
    ('2.39', NEW_CXX, 'kit', 'kit', None),
])
def test_the_cxx_runtime_is_chosen_or_what_is_missing_named(glibc, provided, force, chosen,
                                                              message):
    got, line = load_check().choose_cxx(NEEDS, glibc, provided, force)
    assert got == chosen
    if message:
        assert message in line and '\n' not in line
    else:
        assert line is None


def test_ldd_output_becomes_one_line():
    unresolved = load_check().unresolved
    assert unresolved(['\tlibc.so.6 => /lib/libc.so.6 (0x1)\n']) is None
    assert unresolved([
        "bin/caffe: /lib/libstdc++.so.6: version `GLIBCXX_3.4.30' not found "
        "(required by /k/lib/libglog.so.1)\n"
        "undefined symbol: _ZN3fooEv\t(/k/lib/libx.so)\n"]) == (
        'missing versions GLIBCXX_3.4.30 (required by libglog.so.1); '
        'undefined symbols _ZN3fooEv')
    # The symbols a missing library would define are not listed.
    assert unresolved(['\tlibcaffe.so.1.0.0 => not found\n',
                       'undefined symbol: _ZN5caffe3NetC1Ev\t(bin/caffe)\n']) == (
        'missing libraries libcaffe.so.1.0.0')


def run_check(tmp_path, archive=ARCHIVE, *options, timeout=1600):
    out = tmp_path / 'out'
    result = subprocess.run(['bash', CHECK, '--cpu', '--kit', str(archive)] + list(options)
                            + [str(out)], capture_output=True, text=True, timeout=timeout)
    return result, out


def repack(kit, tmp_path, change):
    """A copy of the kit, changed by `change(folder)`, as an archive."""
    copy = tmp_path / 'changed'
    shutil.copytree(kit, copy / 'gpu-kit', symlinks=True)
    change(copy / 'gpu-kit')
    archive = tmp_path / 'changed.tar.xz'
    with tarfile.open(archive, 'w:xz', preset=0) as tar:
        tar.add(copy / 'gpu-kit', arcname='gpu-kit')
    return archive


@needs_kit
def test_cpu_run_of_every_step(tmp_path):
    result, out = run_check(tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((out / 'gpu.json').read_text())
    assert [s['status'] for s in report['steps']] == ['done'] * 3 + ['GPU only'] + \
        ['done'] * 6 + ['GPU only'], report['steps']
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
    # The whole net on the CPU against the CPU's own output.
    whole = report['whole_net']
    assert whole['passed'] and whole['count'] > 1000, whole
    assert [r['precision'] for r in whole['runs']] == ['fp32']
    assert whole['runs'][0]['relative_l2'] <= 1e-6
    # The cuDNN engine's choices are listed where there is one: not here.
    assert all(b['cudnn_algorithms'] == [] for b in report['benchmarks'])
    text = (out / 'gpu.md').read_text()
    assert text.startswith('# GPU check') and 'not reached' not in text
    assert len(os.listdir(out)) <= 8  # what a GPU machine can send back


# A test binary that has run two tests when the deadline comes.
SLOW_TESTS = """#!/bin/sh
echo '[ RUN      ] LeanBatchNormLayerTest/0.TestForward'
echo '[       OK ] LeanBatchNormLayerTest/0.TestForward (3 ms)'
echo '[ RUN      ] LeanBatchNormLayerTest/0.TestGradient'
echo '[  FAILED  ] LeanBatchNormLayerTest/0.TestGradient, where TypeParam = float (5 ms)'
exec sleep 600
"""


@needs_kit
def test_the_deadline_cuts_a_step_and_the_report_stays(tmp_path, kit):
    """The layer tests still run when the deadline comes: they are cut, the
    report keeps what their output said and the environment's findings, and
    every later step is skipped; the whole check ends by the deadline. With
    the kit's own C++ runtime, as on an image whose own is too old."""
    def slow_tests(folder):
        (folder / 'bin' / 'test_fcrn_layers').write_text(SLOW_TESTS)
    archive = repack(kit, tmp_path, slow_tests)
    deadline = 30
    started = time.time()
    result, out = run_check(tmp_path, archive, '--deadline', str(deadline), '--cxx', 'kit')
    assert time.time() - started < deadline + 3  # unpacking included
    assert result.returncode == 1
    report = json.loads((out / 'gpu.json').read_text())
    statuses = [s['status'] for s in report['steps']]
    assert statuses[:2] == ['done', 'cut'], report['steps']
    assert set(statuses[2:]) == {'skipped', 'GPU only'}, report['steps']
    assert report['environment']['cxx'] == 'kit'
    assert report['environment']['cuda_libraries']['cudart']
    tests = report['tests'][0]
    assert (tests['tests'], tests['failures'], tests['complete']) == (2, 1, False)
    assert tests['failed'] == ['LeanBatchNormLayerTest/0.TestGradient']
    text = (out / 'gpu.md').read_text()
    assert '| layer tests | **cut** (cut at the deadline) |' in text
    assert '| whole-net check | **skipped** (no time left) |' in text
    assert '| test_fcrn_layers | `*` | 2 (partial) | 1 | **no** |' in text


@needs_kit
def test_a_missing_library_stops_the_check_naming_it(tmp_path, kit):
    """libcaffe: this machine has every other library of the kit elsewhere."""
    missing = 'libcaffe.so.1.0.0'
    result, out = run_check(tmp_path, repack(kit, tmp_path, lambda k: os.remove(
        k / 'lib' / missing)))
    assert result.returncode == 1
    report = (out / 'gpu.md').read_text()
    assert '**Stopped:** the kit cannot run here: missing libraries %s\n' % missing in report
    assert 'tests' not in json.loads((out / 'gpu.json').read_text())


@needs_kit
def test_a_glibc_too_old_is_named_before_any_step(tmp_path, kit):
    def needs_newer_glibc(folder):
        manifest = json.loads((folder / 'manifest.json').read_text())
        manifest['needs']['glibc'] = '2.99'
        (folder / 'manifest.json').write_text(json.dumps(manifest))
    result, out = run_check(tmp_path, repack(kit, tmp_path, needs_newer_glibc))
    assert result.returncode == 1
    report = json.loads((out / 'gpu.json').read_text())
    assert report['stopped'].startswith('the kit needs glibc 2.99 or newer')
    assert [s['name'] for s in report['steps']] == ['environment']


@needs_kit
def test_usage_errors(tmp_path):
    result = subprocess.run(['bash', CHECK], capture_output=True, text=True)
    assert result.returncode == 2 and 'OUTDIR missing' in result.stderr
    result = subprocess.run(['bash', CHECK, '--kit', str(tmp_path / 'none.tar.xz'),
                             str(tmp_path / 'out')], capture_output=True, text=True)
    assert result.returncode == 1 and "no kit at" in result.stderr


def test_a_kit_that_cannot_be_unpacked_still_leaves_a_report(tmp_path):
    """The kit is unpacked by Python, not by xz, which the GPU machine's
    image need not have; a broken archive is named in gpu.md."""
    bad = tmp_path / 'bad.tar.xz'
    bad.write_bytes(b'\xfd7zXZ\x00' + b'\x00' * 64)
    result, out = run_check(tmp_path, bad)
    assert result.returncode == 1
    report = (out / 'gpu.md').read_text()
    assert report.startswith('# GPU check\n\nThe kit %s could not be unpacked here:' % bad)
    assert 'Error' in report.splitlines()[-1]


@needs_kit
def test_a_step_that_breaks_fails_alone_and_the_report_stays(tmp_path, kit):
    """A binary that cannot run (not executable, another machine's format)
    is a failed command, and an error inside a step (a test report of an
    unexpected form) fails that step only: the steps after it still run."""
    gpu_check = load_check()
    out = tmp_path / 'out'
    out.mkdir()
    check = gpu_check.Check(str(kit), str(out), True, time.time(), 60)
    check.kit_env = dict(os.environ)
    script = tmp_path / 'not_executable'
    script.write_text('#!/bin/sh\n')
    status, output, cut = check('tests.log', [str(script)], 10)
    assert (status, cut) == (126, False) and 'cannot run it here' in output
    assert gpu_check.run_step(check, 'layer tests', lambda c: json.loads('{')) == 'failed'
    assert gpu_check.run_step(check, 'FCRN-101 pair', lambda c: 'done') == 'done'
    assert check.report['steps'][0]['error'].startswith('JSONDecodeError: ')
    text = (out / 'gpu.md').read_text()
    assert '| layer tests | **failed** (JSONDecodeError: ' in text
    assert '| FCRN-101 pair | done |' in text
    assert 'Traceback' in (out / 'environment.log').read_text()


def test_pytorch_runs_measured_before_a_cut_are_kept():
    """torch_gpu.py prints a line per run as it ends: a process cut at the
    deadline, or one whose case ran out of memory, keeps the others."""
    gpu_check = load_check()
    header = {'torch': '2.15.0', 'gpu': 'H100'}
    lines = [json.dumps(header),
             json.dumps({'run': '505_fwd_tf32', 'median_ms': 10.0, 'peak_bytes': 5}),
             json.dumps({'case': '505_fb_tf32', 'error': 'OutOfMemoryError: CUDA out of memory'}),
             '{"run": "713_fwd_tf3']  # cut in the middle of a line

    class Cut:
        cpu, report = False, {}

        def __call__(self, log, argv, cap, kit=True):
            assert cap <= 180 and not kit
            return 124, '\n'.join(lines), True
    check = Cut()
    assert gpu_check.torch_benchmarks(check, ['505_tf32', '713_tf32']) == 'cut'
    torch = check.report['torch']
    assert torch['gpu'] == 'H100' and list(torch['runs']) == ['505_fwd_tf32']
    assert torch['failed'] == ['505_fb_tf32: OutOfMemoryError: CUDA out of memory',
                               '505_tf32 713_tf32: cut at the deadline (torch.log)']
