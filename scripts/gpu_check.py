"""The steps of scripts/gpu_check.sh, on an unpacked GPU kit.

Standard library only: it runs under whatever python3 a GPU machine has.
One deadline covers the whole check (--deadline seconds from --started, when
gpu_check.sh began unpacking): each command's timeout is cut from what is
left, a step that would start with less than a few seconds left is skipped,
and gpu.json and gpu.md are rewritten after every command, so that a kill at
any moment leaves every figure measured so far. Steps run most valuable
first (STEPS). Before anything else, the environment step picks the C++
runtime (the machine's libstdc++ where it is new enough, else the kit's) and
stops with one line naming what the kit needs and the machine lacks. Only
Caffe's processes see the kit's libraries; nvidia-smi and PyTorch run in the
machine's own environment. Each step writes its log into OUTDIR. The exit
status is 1 if the kit cannot run here, a test failed, the training run or
the exact-FP32 whole-net check disagrees with the CPU, or a step was cut or
skipped for lack of time.
"""
import argparse
import concurrent.futures
import glob
import importlib.util
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
import traceback

TEST_FILTERS = {
    # Typed tests run over (CPU, float), (CPU, double), (GPU, float), (GPU,
    # double) in that order; the suites typed over GPUs only (cuDNN, the
    # bootstrapped loss against the CPU) run on a GPU.
    'gpu': '*/2.*:*/3.*:*GPU*:CuDNN*',
    'cpu': '*/0.*:*/1.*-CuDNN*',
}
# Targets of the GPU issue: (what, measured / baseline key pair, bound).
TIME_TARGET = 1.0
MEMORY_TARGET = 1.0
LEAN_TARGET = 0.6
BOOTSTRAP_TARGET = 1.2
QUARTER_TARGET = 0.5
# Default deadlines, unpacking included: a GPU machine's command may run 10
# minutes; the CPU's plumbing run has no such limit.
DEADLINE = {'gpu': 480, 'cpu': 1500}
# The report is written this long before the deadline; a command that would
# get less than MIN_SECONDS is not started.
RESERVE_SECONDS = 5
MIN_SECONDS = 3
# Libraries the kit carries for machines whose C++ runtime is older than the
# one it was built with, and where their versions are read.
CXX_LIBRARIES = ('libstdc++.so.6', 'libgcc_s.so.1')
MEMORY_METHOD = ('device memory in use (cudaMemGetInfo: total - free) after the timed '
                 'iterations, less the same reading once the CUDA context was made and before '
                 'the net or model was: Caffe by fcrn_time, PyTorch by tools/bench/torch_gpu.py, '
                 'whose cache is emptied after the warm-up (cudnn.benchmark\'s trial '
                 'workspaces); both include the cuDNN and cuBLAS handles and workspaces')


class OutOfTime(Exception):
    """Too little time is left to start a command."""


def version_tuple(text):
    return tuple(int(x) for x in re.findall(r'\d+', text))


class Check:
    """The kit, the report and the clock; runs the kit's commands."""

    def __init__(self, kit, out, cpu, started, deadline):
        self.kit, self.out, self.cpu = kit, out, cpu
        self.started, self.end = started, started + deadline
        self.report = dict(cpu=cpu, steps=[])
        self.machine_env = dict(os.environ)
        self.kit_env = None  # set by the environment step
        with open(os.path.join(kit, 'plan.json')) as f:
            self.plan = json.load(f)
        with open(os.path.join(kit, 'manifest.json')) as f:
            self.manifest = json.load(f)
        self.mode = 'cpu' if cpu else 'gpu'
        self.commands = 0  # started so far
        self.log_lock = threading.Lock()

    def left(self):
        return self.end - RESERVE_SECONDS - time.time()

    def __call__(self, log_name, argv, cap, kit=True, preload=True):
        """(exit status, output, cut): runs `argv` in the kit folder for at most
        `cap` seconds (on a GPU) or what is left before the deadline; a
        timeout gives status 124, and `cut` says the deadline was the limit. With `kit`,
        the kit's libraries (and, with `preload`, its layer library) come
        first; without, the machine's own environment."""
        # The CPU's plumbing run is slow, and bound by the deadline only.
        left = self.left()
        timeout = left if self.cpu else min(cap, left)
        by_deadline = self.cpu or left < cap
        if timeout < MIN_SECONDS:
            raise OutOfTime()
        self.commands += 1
        env = self.machine_env
        if kit:
            env = self.kit_env if preload else {
                k: v for k, v in self.kit_env.items() if k != 'LD_PRELOAD'}
        started = time.time()
        cut = False
        try:
            process = subprocess.Popen(argv, cwd=self.kit, env=env, stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        except FileNotFoundError:
            status, output = 127, '%s: not found on this machine' % argv[0]
        except OSError as e:  # not executable, a noexec mount, another machine's format
            status, output = 126, '%s: cannot run it here: %s' % (argv[0], e)
        else:
            try:
                output, _ = process.communicate(timeout=timeout)
                status = process.returncode
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)  # with gtest's death-test children
                output, _ = process.communicate()
                status, cut = 124, by_deadline
                output += (b'\n[%s after %d s]\n' % (
                    b'cut at the deadline' if cut else b'timed out', timeout))
            output = output.decode(errors='replace')
        with self.log_lock, open(os.path.join(self.out, log_name), 'a') as log:
            log.write('$ %s   # exit %d, %.1f s\n%s\n' % (
                ' '.join(argv), status, time.time() - started, output))
        return status, output, cut

    def save(self):
        """Rewrites gpu.json and gpu.md, each replaced whole."""
        self.report['seconds'] = time.time() - self.started
        self.report['targets'] = targets(self.report, self.plan['sizes'][self.mode][0])
        for name, text in (('gpu.json', json.dumps(self.report, indent=1)),
                           ('gpu.md', markdown(self.report, self.plan, self.mode))):
            path = os.path.join(self.out, name)
            with open(path + '.partial', 'w') as f:
                f.write(text)
            os.replace(path + '.partial', path)


# --- the environment: before anything else ------------------------------------

def cuda_library_dirs():
    """Where a GPU machine keeps CUDA's libraries: PyTorch's nvidia-* packages
    (cuDNN, cuBLAS, NCCL, ...) and the toolkit."""
    dirs = []
    spec = importlib.util.find_spec('nvidia')
    for root in (spec.submodule_search_locations if spec else []) or []:
        dirs += sorted(glob.glob(os.path.join(root, '*', 'lib')))
    for path in ('/usr/local/cuda/lib64', '/usr/local/cuda/targets/x86_64-linux/lib'):
        if os.path.isdir(path):
            dirs.append(path)
    return dirs


def machine_library(soname):
    """The machine's own `soname`, as its dynamic loader finds it without the
    kit: ldconfig's cache, else the usual folders."""
    try:
        cache = subprocess.run(['ldconfig', '-p'], capture_output=True, text=True,
                               timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        cache = ''
    for line in cache.splitlines():
        match = re.match(r'\s*%s \((.*)\) => (\S+)' % re.escape(soname), line)
        if match and 'x86-64' in match.group(1):
            return match.group(2)
    for folder in ('/lib/x86_64-linux-gnu', '/usr/lib/x86_64-linux-gnu', '/lib64', '/usr/lib64'):
        if os.path.exists(os.path.join(folder, soname)):
            return os.path.join(folder, soname)
    return None


def defined_versions(path):
    """{'GLIBCXX': '3.4.30', 'CXXABI': ..., 'GCC': ...}: the newest symbol
    version of each family named in the library at `path`."""
    with open(path, 'rb') as f:
        data = f.read()
    newest = {}
    for family, version in re.findall(rb'\b(GLIBCXX|CXXABI|GCC)_(\d+(?:\.\d+)*)\b', data):
        family, version = family.decode(), version.decode()
        if version_tuple(version) > version_tuple(newest.get(family, '0')):
            newest[family] = version
    return newest


def choose_cxx(needs, glibc, provided, force='auto'):
    """('machine' or 'kit', None) or (None, the line naming what is missing).

    `needs` is the manifest's: the newest GLIBC the kit asks for outside
    lib/cxx, the GLIBCXX, CXXABI and GCC versions it asks the C++ runtime for,
    and the GLIBC that the carried runtime (lib/cxx) asks for. `provided`: the
    newest versions the machine's libstdc++ and libgcc_s define."""
    if version_tuple(glibc) < version_tuple(needs['glibc']):
        return None, ('the kit needs glibc %s or newer (GLIBC_%s in its libraries); this '
                      'machine has glibc %s' % (needs['glibc'], needs['glibc'], glibc))
    short = ['%s_%s' % (family, needs[family]) for family in ('GLIBCXX', 'CXXABI', 'GCC')
             if version_tuple(provided.get(family, '0')) < version_tuple(needs[family])]
    if force == 'machine' or (force == 'auto' and not short):
        return 'machine', None
    if force == 'kit' or version_tuple(glibc) >= version_tuple(needs['cxx_glibc']):
        return 'kit', None
    return None, ('the kit needs %s from the C++ runtime (this machine\'s has up to %s), or '
                  'glibc %s for the one it carries (this machine has glibc %s)'
                  % (', '.join(short),
                     ', '.join('%s_%s' % item for item in sorted(provided.items())) or 'none',
                     needs['cxx_glibc'], glibc))


def unresolved(outputs):
    """The line naming what `ldd -r` says is missing, or None: libraries,
    symbol versions, and symbols (unless a library is missing, whose symbols
    they would be)."""
    text = '\n'.join(outputs)
    libraries = sorted(set(re.findall(r'^\s*(\S+) => not found', text, re.M)))
    versions = sorted(set('%s (required by %s)' % (v, os.path.basename(b)) for v, b in re.findall(
        r"version [`'](\S+)' not found \(required by (\S+)\)", text)))
    symbols = sorted(set(re.findall(r'undefined symbol: (\S+)', text)))
    parts = []
    for what, found in (('missing libraries', libraries), ('missing versions', versions),
                        ('undefined symbols', [] if libraries else symbols)):
        if found:
            parts.append('%s %s' % (what, ', '.join(found[:5] + (
                ['and %d more' % (len(found) - 5)] if len(found) > 5 else []))))
    return '; '.join(parts) or None


def environment(check, force_cxx):
    """GPU, driver, glibc, the C++ runtime chosen, CUDA libraries, and what the
    kit's binaries cannot resolve here (ldd -r); sets check.kit_env. Stops
    the check ('failed', with report['stopped']) if the kit cannot run."""
    stopped = kit_environment(check, force_cxx)
    if stopped:
        check.report['stopped'] = stopped
        return 'failed'
    return 'done'


def kit_environment(check, force_cxx):
    """None, or the line naming what the kit needs and the machine lacks."""
    env = {'machine': platform.node(), 'cpu': cpu_name(), 'glibc': glibc_version(),
           'python': platform.python_version()}
    check.report['environment'] = env
    if not check.cpu:
        status, output, _ = check('environment.log', [
            'nvidia-smi', '--query-gpu=name,driver_version,memory.total',
            '--format=csv,noheader'], 30, kit=False)
        if status == 0 and output.strip():
            name, driver, memory = [x.strip() for x in output.strip().splitlines()[0].split(',')]
            env.update(gpu=name, driver=driver, gpu_memory=memory)
    needs = check.manifest['needs']
    env['kit_needs'] = needs
    provided, paths = {}, {}
    for soname in CXX_LIBRARIES:
        paths[soname] = machine_library(soname)
        if paths[soname]:
            provided.update(defined_versions(paths[soname]))
    env['machine_cxx'] = dict(paths=paths, versions=provided)
    env['cxx'], stopped = choose_cxx(needs, env['glibc'], provided, force_cxx)
    if stopped:
        return stopped
    lib = os.path.join(check.kit, 'lib')
    paths = [lib] + ([os.path.join(lib, 'cxx')] if env['cxx'] == 'kit' else []) + \
        cuda_library_dirs() + [p for p in os.environ.get('LD_LIBRARY_PATH', '').split(':') if p]
    # Caffe's INFO lines carry the training losses.
    check.kit_env = dict(os.environ, LD_LIBRARY_PATH=':'.join(paths),
                         LD_PRELOAD=os.path.join(lib, 'libfcrn_layers.so'), GLOG_minloglevel='0')
    libs = {}
    for name in ('cudart', 'cublas', 'cudnn', 'nccl'):
        found = sorted(set(os.path.basename(p) for d in paths
                           for p in glob.glob(os.path.join(d, 'lib%s.so.*' % name))))
        libs[name] = found[-1] if found else None
    env['cuda_libraries'] = libs
    # Every symbol of the whole closure of each binary, without the preloaded
    # layer library (which would hide its own missing dependencies).
    binaries = check.manifest['binaries'] + (check.manifest['cxx'] if env['cxx'] == 'kit' else [])
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda b: check('environment.log', ['ldd', '-r', b], 120,
                                                preload=False), binaries))
    if any(cut for _, _, cut in results):
        raise OutOfTime()
    env['unresolved'] = unresolved([output for _, output, _ in results])
    return env['unresolved'] and 'the kit cannot run here: %s' % env['unresolved']


def glibc_version():
    """This process's glibc, as the loader reports it ('2.36')."""
    try:
        return os.confstr('CS_GNU_LIBC_VERSION').split()[-1]
    except (ValueError, OSError, AttributeError, IndexError):
        return platform.libc_ver()[1]


def cpu_name():
    try:
        with open('/proc/cpuinfo') as f:
            return re.search(r'model name\s*:\s*(.*)', f.read()).group(1)
    except (OSError, AttributeError):
        return platform.processor()


# --- the steps ----------------------------------------------------------------

def gtest(check, binary, test_filter, cap):
    """One test binary: its JSON report, or, if it was stopped, what its
    output says of the tests that ran."""
    report = os.path.join(check.kit, binary + '.json')
    status, output, cut = check('tests.log', [os.path.join('bin', binary),
                                              '--gtest_filter=' + test_filter,
                                              '--gtest_output=json:' + report], cap)
    summary = dict(binary=binary, filter=test_filter, tests=0, failures=0, failed=[],
                   status=status, complete=os.path.exists(report))
    check.report.setdefault('tests', []).append(summary)
    if summary['complete']:
        with open(report) as f:
            data = json.load(f)
        summary['tests'] = data.get('tests', 0) - data.get('disabled', 0)
        summary['failures'] = data.get('failures', 0)
        summary['failed'] = ['%s.%s' % (suite['name'], test['name'])
                             for suite in data.get('testsuites', [])
                             for test in suite.get('testsuite', []) if test.get('failures')]
    else:
        passed = set(re.findall(r'^\[       OK \] (\S+) \(\d+ ms\)$', output, re.M))
        failed = set(re.findall(r'^\[  FAILED  \] (\S+?),?(?: where .*)? \(\d+ ms\)$',
                                output, re.M))
        summary.update(tests=len(passed | failed), failures=len(failed), failed=sorted(failed))
    skipped = re.search(r'GPU tests skipped \(\d+ suites\).*', output)
    if skipped:
        summary['gpu_skipped'] = skipped.group(0)
    summary['passed'] = status == 0 and summary['failures'] == 0 and summary['tests'] > 0
    return 'cut' if cut else ('done' if summary['passed'] else 'failed')


def fcrn_time(check, entry, cap=120):
    """One benchmark of the plan, its result in the report."""
    results = check.report.setdefault('benchmarks', [])
    argv = [os.path.join('bin', 'fcrn_time'), '-model', entry['model'],
            '-iterations', str(entry.get('iterations', 5 if not check.cpu else 1)),
            '-warmup', str(entry.get('warmup', 2 if not check.cpu else 1)),
            '-phase', entry.get('phase', 'TRAIN'),
            '-tf32=%s' % str(entry.get('tf32', True)).lower()]
    if entry.get('engine'):
        argv += ['-engine', entry['engine']]
    for flag in ('forward_only', 'share_memory'):
        if entry.get(flag):
            argv.append('-' + flag)
    if not check.cpu:
        argv += ['-gpu', '0']
    status, output, cut = check('bench.log', argv, cap)
    line = next((l for l in output.splitlines() if l.startswith('{')), None)
    if status != 0 or not line:
        results.append(dict(entry, error='cut at the deadline' if cut else 'exit %d' % status))
        return 'cut' if cut else 'failed'
    results.append(dict(entry, **json.loads(line)))
    return 'done'


def benchmarks(check, select):
    """The plan's benchmarks that `select` takes and no step ran yet."""
    done = set(b['name'] for b in check.report.get('benchmarks', []))
    statuses = []
    for entry in check.plan[check.mode]:
        if entry['name'] not in done and select(entry):
            statuses.append(fcrn_time(check, entry))
            check.save()
    return worst(statuses)


def worst(statuses):
    for status in ('cut', 'failed'):
        if status in statuses:
            return status
    return 'done'


def torch_benchmarks(check, cases):
    torch = check.report.setdefault('torch', {})
    if check.cpu:
        torch['skipped'] = 'the PyTorch comparison runs on the GPU only'
        return 'GPU only'
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    argv = [sys.executable, os.path.join(repo, 'tools', 'bench', 'torch_gpu.py'), '--cases'] + cases
    status, output, cut = check('torch.log', argv, 180, kit=False)
    # One JSON line first (versions), then one per run as it ends: a cut or
    # failed process keeps the runs it finished.
    for line in output.splitlines():
        try:
            result = json.loads(line) if line.startswith('{') else None
        except ValueError:  # cut in the middle of a line
            continue
        if result and 'run' in result:
            torch.setdefault('runs', {})[result.pop('run')] = result
        elif result and 'error' in result:
            torch.setdefault('failed', []).append('%(case)s: %(error)s' % result)
        elif result:
            torch.update(result)
    runs = torch.get('runs', {})

    def measured(case):  # SIZE_PRECISION: torch_gpu.py's runs SIZE_fwd_ and SIZE_fb_PRECISION
        size, _, precision = case.partition('_')
        return all('%s_%s_%s' % (size, way, precision) in runs for way in ('fwd', 'fb'))
    missing = [c for c in cases if not measured(c)]
    if status != 0 or missing:
        torch.setdefault('failed', []).append('%s: %s (torch.log)' % (
            ' '.join(missing or cases), 'cut at the deadline' if cut else 'exit %d' % status))
        return 'cut' if cut else 'failed'
    return 'done'


def whole_net(check):
    """FCRN-101 for seeded weights and input against the CPU's output."""
    plan = check.plan['whole_net'][check.mode]
    argv = [os.path.join('bin', 'fcrn_output'), '-model', plan['model'], '-blob', plan['blob'],
            '-seed', str(plan['seed']), '-reference', plan['reference'],
            '-precisions', ','.join(plan['precisions'])]
    if not check.cpu:
        argv += ['-gpu', '0']
    status, output, cut = check('bench.log', argv, 180)
    result = dict(plan)
    check.report['whole_net'] = result
    line = next((l for l in output.splitlines() if l.startswith('{')), None)
    if status != 0 or not line:
        result['error'] = 'cut at the deadline' if cut else 'exit %d (bench.log)' % status
        return 'cut' if cut else 'failed'
    output = json.loads(line)
    result.update(runs=output['runs'], count=output['count'])
    for run in result['runs']:
        error = run.get('relative_l2')
        run['bound'] = plan['bounds'][run['precision']]
        run['within'] = error is not None and error <= run['bound'] and run['non_finite'] == 0
    exact = [r for r in result['runs'] if r['precision'] == 'fp32']
    result['passed'] = bool(exact) and all(r['within'] for r in exact)
    return 'done' if result['passed'] else 'failed'


def training(check, cap=180):
    """The kit's training run against the CPU's losses (reference/)."""
    with open(os.path.join(check.kit, 'reference', 'cpu_losses.json')) as f:
        reference = json.load(f)
    argv = [os.path.join('bin', 'caffe'), 'train', '-solver', 'train/solver.prototxt']
    if not check.cpu:
        argv += ['-gpu', '0', '-tf32=false']
    status, output, cut = check('train.log', argv, cap)
    result = dict(passed=False)
    check.report['training'] = result
    # fcrn.train.parse_log's pattern; this runner imports nothing of the
    # project's, whose dependencies a GPU machine may lack.
    found = {int(i): float(v) for i, v in re.findall(
        r'Iteration (\d+)(?: \([^)]*\))?, loss = ([-+0-9.eEinfa]+)', output)}
    expected = reference['losses']
    got = [found.get(i) for i in range(len(expected))]
    result.update(status=status, iterations=len([g for g in got if g is not None]),
                  cpu=expected[:reference['early_iterations']],
                  device=got[:reference['early_iterations']])
    if None in got:
        result.update(reason='%d of %d losses logged (%s)' % (
            result['iterations'], len(expected),
            'cut at the deadline' if cut else 'exit %d' % status))
        return 'cut' if cut else 'failed'
    relative = [abs(g - e) / max(abs(e), 1e-12) for g, e in zip(got, expected)]
    early = relative[:reference['early_iterations']]
    window = max(len(got) // 10, 1)
    first, last = statistics.mean(got[:window]), statistics.mean(got[-window:])
    result.update(first_difference=relative[0], early_max_difference=max(early),
                  first_tolerance=reference['first_tolerance'],
                  early_tolerance=reference['early_tolerance'],
                  mean_loss_first=first, mean_loss_last=last, window=window,
                  fall_ratio=reference['fall_ratio'])
    reasons = []
    if relative[0] > reference['first_tolerance']:
        reasons.append('iteration 0 differs by %.2g' % relative[0])
    if max(early) > reference['early_tolerance']:
        reasons.append('iterations 0-%d differ by up to %.2g' % (len(early) - 1, max(early)))
    if not last < reference['fall_ratio'] * first:
        reasons.append('the loss did not fall below %g of its start (%.3f to %.3f)'
                       % (reference['fall_ratio'], first, last))
    result.update(passed=not reasons and status == 0, reason='; '.join(reasons))
    return 'done' if result['passed'] else 'failed'


def main_size(check):
    return check.plan['sizes'][check.mode][0]


def pair_names(size):
    """The FCRN-101 runs compared with PyTorch's (the time and memory targets)."""
    return {'r101_s8_lean_%d_fb_cudnn_tf32' % size, 'r101_s8_lean_%d_fb_cudnn_tf32_shared' % size}


def target_names(size):
    """The other runs the targets need, and the exact-FP32 cuDNN run."""
    return {'r101_s8_bnscale_%d_fb_cudnn_tf32' % size, 'r101_s4_lean_%d_fb_cudnn_tf32' % size,
            'r101_s8_lean_%d_fb_cudnn_fp32' % size}


def torch_cases(check, first):
    sizes = check.plan['sizes'][check.mode]
    cases = ['%d_%s' % (size, precision) for size in sizes for precision in ('tf32', 'fp32')]
    return cases[:1] if first else cases[1:]


# Most valuable first: the layers' GPU tests; the FCRN-101 pair and PyTorch's
# same case; the whole-net check and the training run (correctness of the
# whole path); the loss layers; the runs the other targets need; Caffe's own
# GPU tests; everything else.
STEPS = [
    ('layer tests', lambda c: gtest(c, 'test_fcrn_layers',
                                    '*' if c.cpu else TEST_FILTERS['gpu'], 150)),
    ('FCRN-101 pair', lambda c: benchmarks(c, lambda e: e['name'] in pair_names(main_size(c)))),
    ('PyTorch, same case', lambda c: torch_benchmarks(c, torch_cases(c, True))),
    ('whole-net check', whole_net),
    ('training', training),
    ('loss layers', lambda c: benchmarks(c, lambda e: e['name'].startswith('loss_'))),
    ('target runs', lambda c: benchmarks(c, lambda e: e['name'] in target_names(main_size(c)))),
    ('Caffe tests', lambda c: gtest(c, 'test_caffe_gpu', TEST_FILTERS[c.mode], 300)),
    ('other benchmarks', lambda c: benchmarks(c, lambda e: True)),
    ('PyTorch, other cases', lambda c: torch_benchmarks(c, torch_cases(c, False))),
]


def run_step(check, name, function):
    """Runs one step; whatever goes wrong in it (a kill at the deadline, an
    output of an unexpected form, a bug here) fails that step only, so that
    the steps after it still run and the report stays whole."""
    step = dict(name=name, status='running')
    check.report['steps'].append(step)
    check.save()
    started, commands = time.time(), check.commands
    try:
        step['status'] = function(check)
    except OutOfTime:
        # Cut if it had run a command, else skipped.
        step['status'] = 'cut' if check.commands > commands else 'skipped'
    except Exception as e:  # noqa: BLE001 -- one step's failure must not end the check
        step['status'] = 'failed'
        step['error'] = '%s: %s' % (type(e).__name__, e)
        with open(os.path.join(check.out, 'environment.log'), 'a') as log:
            log.write('step %r failed:\n%s\n' % (name, traceback.format_exc()))
    step['seconds'] = time.time() - started
    check.save()
    return step['status']


# --- the report -----------------------------------------------------------------

def find(results, name):
    return next((r for r in results if r.get('name') == name and 'median_ms' in r), None)


def targets(report, size):
    """Each target of the GPU issue: measured, bound, met (None: not measured)."""
    if report['cpu']:
        return []
    bench = report.get('benchmarks', [])
    torch = report.get('torch', {})
    rows = []

    def ratio(what, a, b, key, bound):
        value = a[key] / b[key] if a and b and b.get(key) else None
        rows.append(dict(target=what, value=value, bound=bound,
                         met=None if value is None else value <= bound))

    caffe = find(bench, 'r101_s8_lean_%d_fb_cudnn_tf32' % size)
    shared = find(bench, 'r101_s8_lean_%d_fb_cudnn_tf32_shared' % size)
    theirs = torch.get('runs', {}).get('%d_fb_tf32' % size)
    for ours, how in ((caffe, ''), (shared, ', memory sharing')):
        ratio('FCRN-101 %d F+B time, Caffe (Lean, cuDNN, TF32%s) / PyTorch TF32' % (size, how),
              ours, theirs, 'median_ms', TIME_TARGET)
        ratio('FCRN-101 %d F+B peak memory, Caffe%s / PyTorch' % (size, how), ours, theirs,
              'peak_bytes', MEMORY_TARGET)
    ratio('LeanBatchNorm / BatchNorm+Scale net, F+B peak memory at %d' % size, caffe,
          find(bench, 'r101_s8_bnscale_%d_fb_cudnn_tf32' % size), 'peak_bytes', LEAN_TARGET)
    ratio('One pass of the 1/8 net / true 1/4 net, F+B peak memory at %d' % size, caffe,
          find(bench, 'r101_s4_lean_%d_fb_cudnn_tf32' % size), 'peak_bytes', QUARTER_TARGET)
    for entry in bench:
        name = entry.get('name', '')
        if name.startswith('loss_BootstrappedSoftmaxWithLoss_'):
            shape = name.rsplit('_', 1)[1]
            ratio('BootstrappedSoftmaxWithLoss / SoftmaxWithLoss F+B, %s' % shape,
                  find(bench, name), find(bench, 'loss_SoftmaxWithLoss_' + shape),
                  'median_ms', BOOTSTRAP_TARGET)
    return rows


def fallbacks(algorithms):
    return sum('fallback' in a for a in algorithms)


def markdown(report, plan, mode):
    env = report.get('environment', {})
    needs = env.get('kit_needs', {})
    lines = ['# GPU check', '',
             'Device: %s (driver %s, %s); CPU %s; glibc %s (the kit needs %s); C++ runtime: '
             '%s; CUDA libraries: %s.'
             % (env.get('gpu', 'none (CPU run)'), env.get('driver', '-'), env.get('gpu_memory', '-'),
                env.get('cpu', '-'), env.get('glibc', '-'), needs.get('glibc', '-'),
                {'machine': "the machine's", 'kit': "the kit's (lib/cxx)"}.get(
                    env.get('cxx'), 'none usable'),
                ', '.join('%s' % v for v in env.get('cuda_libraries', {}).values() if v)
                or 'none found'),
             '', 'Produced by `scripts/gpu_check.sh%s` in %.0f s (deadline %.0f s, unpacking '
             'included).' % (' --cpu' if report['cpu'] else '', report.get('seconds', 0),
                             report.get('deadline', 0)), '']
    if report.get('stopped'):
        lines += ['**Stopped:** %s' % report['stopped'], '']
    lines += ['## Steps (most valuable first)', '', '| step | status | seconds |', '|---|---|---:|']
    ran = {s['name']: s for s in report.get('steps', [])}
    for name in ['environment'] + [n for n, _ in STEPS]:
        step = ran.get(name)
        status = step['status'] if step else 'not reached'
        if status in ('cut', 'skipped'):
            status = '**%s** (%s)' % (status, 'cut at the deadline' if status == 'cut'
                                      else 'no time left')
        elif status == 'failed':
            status = '**failed**' + (' (%s; environment.log)' % step['error']
                                     if step.get('error') else '')
        lines.append('| %s | %s | %s |' % (name, status, '%.0f' % step['seconds']
                                            if step and 'seconds' in step else ''))
    lines += ['', '## Targets', '', '| target | measured | bound | met |', '|---|---:|---:|---|']
    for row in report.get('targets', []):
        lines.append('| %s | %s | %s | %s |' % (
            row['target'], '-' if row['value'] is None else '%.2fx' % row['value'],
            '%.1fx' % row['bound'], {True: 'yes', False: '**no**', None: 'not measured'}[row['met']]))
    if not report.get('targets'):
        lines.append('(GPU only)')
    check = report.get('whole_net')
    lines += ['', '## Whole net: FCRN-101 at %s, seeded weights and input, against the CPU'
              % (check['size'] if check else '-'), '']
    if check and 'runs' in check:
        lines += ['Output `%s` (%d values), seed %d; the reference is the kit\'s own binary on '
                  'the CPU in exact FP32.' % (check['blob'], check.get('count', 0) or 0, check['seed']),
                  '', '| precision | ms (one forward) | ‖out − ref‖ / ‖ref‖ | max abs error / '
                  'max abs ref | non-finite | bound | within |', '|---|---:|---:|---:|---:|---:|---|']
        for run in check['runs']:
            relative_max = (run['max_abs_error'] / run['max_abs_reference']
                            if run.get('max_abs_error') is not None and run.get('max_abs_reference')
                            else None)
            lines.append('| %s | %s | %s | %s | %d | %.0e | %s |' % (
                run['precision'], '%.1f' % run['ms'] if run.get('ms') is not None else '-',
                '%.2e' % run['relative_l2'] if run.get('relative_l2') is not None else '-',
                '%.2e' % relative_max if relative_max is not None else '-',
                run['non_finite'], run['bound'], 'yes' if run['within'] else '**no**'))
    else:
        lines.append(check.get('error', 'not run') if check else 'not run')
    lines += ['', '## Tests', '', '| binary | filter | tests | failures | passed |',
              '|---|---|---:|---:|---|']
    for t in report.get('tests', []):
        lines.append('| %s | `%s` | %d%s | %d | %s |' % (
            t['binary'], t['filter'], t['tests'], '' if t.get('complete') else ' (partial)',
            t['failures'], 'yes' if t.get('passed') else '**no**'))
        if t.get('gpu_skipped'):
            lines.append('| | %s | | | |' % t['gpu_skipped'])
        for name in t['failed'][:20]:
            lines.append('| | failed: `%s` | | | |' % name)
    lines += ['', '## Benchmarks (Caffe, fcrn_time)', '',
              '| run | pass | engine | TF32 | shared memory | median ms | peak MiB | cuDNN '
              'configurations (fallbacks) |', '|---|---|---|---|---|---:|---:|---:|']
    results = {b['name']: b for b in report.get('benchmarks', [])}
    for entry in plan[mode]:
        b = results.get(entry['name'])
        if b and 'median_ms' in b:
            algorithms = b.get('cudnn_algorithms', [])
            lines.append('| %s | %s | %s | %s | %s | %.2f | %.0f | %s |' % (
                b['name'], b['pass'], b['engine'], 'yes' if b['tf32'] else 'no',
                'yes' if b['share_memory'] else 'no', b['median_ms'], b['peak_bytes'] / 2 ** 20,
                '%d (%d)' % (len(algorithms), fallbacks(algorithms)) if algorithms else '-'))
        else:
            lines.append('| %s | | | | | %s | | |' % (entry['name'],
                                                       b['error'] if b else 'not run'))
    exact = results.get('r101_s8_lean_%d_fb_cudnn_fp32' % plan['sizes'][mode][0])
    if exact and exact.get('cudnn_algorithms'):
        lines += ['', '### cuDNN algorithms of %s (exact FP32)' % exact['name'], '']
        lines += ['- %s' % a for a in exact['cudnn_algorithms']]
    lines += ['', 'Memory: %s.' % MEMORY_METHOD]
    torch = report.get('torch', {})
    lines += ['', '## PyTorch, same net, same GPU', '']
    if 'runs' in torch:
        lines += ['torch %s, cuDNN %s, cudnn.benchmark on, frozen BN (eval).' % (
            torch.get('torch'), torch.get('cudnn')), '',
                  '| run | median ms | peak MiB (as Caffe\'s) | allocator peak reserved MiB | '
                  'allocator peak allocated MiB |', '|---|---:|---:|---:|---:|']
        for name, r in sorted(torch['runs'].items()):
            lines.append('| %s | %.2f | %.0f | %.0f | %.0f |' % (
                name, r['median_ms'], r['peak_bytes'] / 2 ** 20, r['peak_reserved'] / 2 ** 20,
                r['peak_allocated'] / 2 ** 20))
        lines.append('')
    notes = [line for line in [torch.get('skipped')] + torch.get('failed', []) if line]
    lines += notes or ([] if 'runs' in torch else ['not run'])
    train = report.get('training', {})
    lines += ['', '## Training run (FCRN-50, batch statistics, bootstrapping, HDF5 crops)', '']
    if 'first_difference' in train:
        lines.append('%s: %s' % ('passed' if train['passed'] else '**failed**',
                                 train.get('reason') or
                                 'iteration 0 within %.0e of the CPU (%.1e), iterations 0-%d within %.0e '
                                 '(%.1e), mean loss of the first and last %d iterations %.3f -> %.3f'
                                 % (train['first_tolerance'], train['first_difference'],
                                    len(train['cpu']) - 1, train['early_tolerance'],
                                    train['early_max_difference'], train['window'],
                                    train['mean_loss_first'], train['mean_loss_last'])))
    else:
        lines.append(('**failed**: %s' % train['reason']) if train else 'not run')
    return '\n'.join(lines) + '\n'


def _seconds(text):
    """argparse type of --deadline: a positive number (0 is no deadline)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError('%r is not a number of seconds' % text)
    if not 0 < value < float('inf'):
        raise argparse.ArgumentTypeError('must be > 0, not %s' % text)
    return value


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--kit', required=True, help='unpacked gpu-kit folder')
    parser.add_argument('--out', required=True, help='folder for gpu.md, gpu.json and logs')
    parser.add_argument('--cpu', action='store_true', help='run on the CPU (small sizes)')
    parser.add_argument('--deadline', type=_seconds,
                        help='seconds from --started by which the report is final (default '
                             '%d on a GPU, %d with --cpu)' % (DEADLINE['gpu'], DEADLINE['cpu']))
    parser.add_argument('--started', type=float,
                        help='when the check began (seconds since the epoch; default now)')
    parser.add_argument('--cxx', choices=('auto', 'machine', 'kit'), default='auto',
                        help="the C++ runtime: the machine's where new enough (auto), or this one")
    args = parser.parse_args()
    if not os.path.isfile(os.path.join(args.kit, 'plan.json')):
        parser.error('--kit %s: not an unpacked gpu-kit (no plan.json)' % args.kit)
    started = args.started or time.time()
    deadline = args.deadline or DEADLINE['cpu' if args.cpu else 'gpu']
    os.makedirs(args.out, exist_ok=True)
    for name in ('environment.log', 'tests.log', 'bench.log', 'torch.log', 'train.log'):
        open(os.path.join(args.out, name), 'w').close()
    check = Check(os.path.abspath(args.kit), os.path.abspath(args.out), args.cpu, started,
                  deadline)
    check.report['deadline'] = deadline
    statuses = [run_step(check, 'environment', lambda c: environment(c, args.cxx))]
    if statuses[0] == 'done':
        for name, function in STEPS:
            statuses.append(run_step(check, name, function))
    check.save()
    with open(os.path.join(args.out, 'gpu.md')) as f:
        print(f.read())
    return 1 if set(statuses) & {'failed', 'cut', 'skipped'} else 0


if __name__ == '__main__':
    sys.exit(main())
