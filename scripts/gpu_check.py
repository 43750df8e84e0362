"""The steps of scripts/gpu_check.sh, on an unpacked GPU kit.

Standard library only: it runs under whatever python3 a GPU machine has.
Each step writes its log into OUTDIR; gpu.json holds every figure and gpu.md
the table a person reads first. A step that cannot run says why in one line
and the others go on; the exit status is 1 if a test failed, the kit's
libraries are missing, or the training run disagrees with the CPU's.
"""
import argparse
import glob
import importlib.util
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time

TEST_FILTERS = {
    # Caffe's typed tests run over (CPU, float), (CPU, double), (GPU, float),
    # (GPU, double) in that order; the cuDNN suites (some typed over float and
    # double only) need a GPU.
    'gpu': '*/2.*:*/3.*:CuDNN*',
    'cpu': '*/0.*:*/1.*-CuDNN*',
}
# Targets of the GPU issue: (what, measured / baseline key pair, bound).
TIME_TARGET = 1.0
MEMORY_TARGET = 1.0
LEAN_TARGET = 0.6
BOOTSTRAP_TARGET = 1.2
QUARTER_TARGET = 0.5


class Run:
    """Runs the kit's binaries, logging each command and its output."""

    def __init__(self, kit, out, cpu):
        self.kit, self.out, self.cpu = kit, out, cpu
        lib = os.path.join(kit, 'lib')
        paths = [lib] + cuda_library_dirs() + [
            p for p in os.environ.get('LD_LIBRARY_PATH', '').split(':') if p]
        # Caffe's INFO lines carry the training losses.
        self.env = dict(os.environ, LD_LIBRARY_PATH=':'.join(paths),
                        LD_PRELOAD=os.path.join(lib, 'libfcrn_layers.so'), GLOG_minloglevel='0')

    def __call__(self, log_name, argv, timeout, preload=True):
        """(exit status, output); a timeout gives status 124. Without
        `preload`, the layer library is not preloaded."""
        started = time.time()
        env = self.env if preload else {k: v for k, v in self.env.items() if k != 'LD_PRELOAD'}
        try:
            result = subprocess.run(argv, cwd=self.kit, env=env, timeout=timeout,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True, errors='replace')
            status, output = result.returncode, result.stdout
        except FileNotFoundError:
            status, output = 127, '%s: not found on this machine' % argv[0]
        except subprocess.TimeoutExpired as error:
            status = 124
            output = (error.output or b'').decode(errors='replace') if isinstance(
                error.output, bytes) else (error.output or '')
            output += '\n[timed out after %d s]\n' % timeout
        with open(os.path.join(self.out, log_name), 'a') as log:
            log.write('$ %s   # exit %d, %.1f s\n%s\n' % (
                ' '.join(argv), status, time.time() - started, output))
        return status, output


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


def environment(run):
    """GPU, driver, CUDA, cuDNN and glibc, and the kit's unresolved libraries."""
    env = {'machine': platform.node(), 'cpu': cpu_name(), 'glibc': platform.libc_ver()[1],
           'python': platform.python_version()}
    status, output = run('environment.log', ['nvidia-smi', '--query-gpu=name,driver_version,'
                                             'memory.total', '--format=csv,noheader'], 30) \
        if not run.cpu else (1, '')
    if status == 0 and output.strip():
        name, driver, memory = [x.strip() for x in output.strip().splitlines()[0].split(',')]
        env.update(gpu=name, driver=driver, gpu_memory=memory)
    libs = {}
    for name in ('cudart', 'cublas', 'cudnn', 'nccl'):
        found = sorted(set(os.path.basename(p) for d in run.env['LD_LIBRARY_PATH'].split(':')
                           for p in glob.glob(os.path.join(d, 'lib%s.so.*' % name))))
        libs[name] = found[-1] if found else None
    env['cuda_libraries'] = libs
    with open(os.path.join(run.kit, 'manifest.json')) as f:
        manifest = json.load(f)
    env['glibc_needed'] = manifest['glibc']
    missing = set()
    for binary in manifest['binaries']:
        # Without the preloaded layer library, which fails to load if its
        # own dependencies are missing and then hides them from ldd.
        status, output = run('environment.log', ['ldd', binary], 30, preload=False)
        missing.update(re.findall(r'^\s*(\S+) => not found', output, re.M))
    env['missing_libraries'] = sorted(missing)
    return env


def cpu_name():
    try:
        with open('/proc/cpuinfo') as f:
            return re.search(r'model name\s*:\s*(.*)', f.read()).group(1)
    except (OSError, AttributeError):
        return platform.processor()


def version_tuple(text):
    return tuple(int(x) for x in re.findall(r'\d+', text))


def gtests(run, timeout):
    """Both test binaries, as gtest's JSON reports."""
    results = []
    mode = 'cpu' if run.cpu else 'gpu'
    for binary, test_filter in (('test_fcrn_layers', '*'), ('test_caffe_gpu', TEST_FILTERS[mode])):
        report = os.path.join(run.kit, binary + '.json')
        status, output = run('tests.log', [os.path.join('bin', binary),
                                           '--gtest_filter=' + test_filter,
                                           '--gtest_output=json:' + report], timeout)
        summary = dict(binary=binary, filter=test_filter, status=status, tests=0,
                       failures=0, failed=[])
        if os.path.exists(report):
            with open(report) as f:
                data = json.load(f)
            summary['tests'] = data.get('tests', 0) - data.get('disabled', 0)
            summary['failures'] = data.get('failures', 0)
            summary['failed'] = ['%s.%s' % (suite['name'], test['name'])
                                 for suite in data.get('testsuites', [])
                                 for test in suite.get('testsuite', []) if test.get('failures')]
        skipped = re.search(r'GPU tests skipped \(\d+ suites\).*', output)
        if skipped:
            summary['gpu_skipped'] = skipped.group(0)
        summary['passed'] = status == 0 and summary['failures'] == 0 and summary['tests'] > 0
        results.append(summary)
    return results


def benchmarks(run, plan, deadline):
    """fcrn_time over the plan; entries past the deadline are skipped."""
    results = []
    for entry in plan:
        if time.time() > deadline:
            results.append(dict(entry, skipped='time budget spent'))
            continue
        argv = [os.path.join('bin', 'fcrn_time'), '-model', entry['model'],
                '-iterations', str(entry.get('iterations', 5 if not run.cpu else 1)),
                '-warmup', str(entry.get('warmup', 2 if not run.cpu else 1)),
                '-phase', entry.get('phase', 'TRAIN'), '-tf32=%s' % str(entry.get('tf32', True)).lower()]
        if entry.get('engine'):
            argv += ['-engine', entry['engine']]
        for flag in ('forward_only', 'share_memory'):
            if entry.get(flag):
                argv.append('-' + flag)
        if not run.cpu:
            argv += ['-gpu', '0']
        status, output = run('bench.log', argv, 300)
        line = next((l for l in output.splitlines() if l.startswith('{')), None)
        if status != 0 or not line:
            results.append(dict(entry, error='exit %d' % status))
            continue
        results.append(dict(entry, **json.loads(line)))
    return results


def torch_benchmarks(run, sizes, repo):
    if run.cpu:
        return {'skipped': 'the PyTorch comparison runs on the GPU only'}
    argv = [sys.executable, os.path.join(repo, 'tools', 'bench', 'torch_gpu.py'), '--sizes'] + [
        str(s) for s in sizes]
    status, output = run('torch.log', argv, 300)
    line = next((l for l in reversed(output.splitlines()) if l.startswith('{')), None)
    if status != 0 or not line:
        return {'skipped': 'torch_gpu.py failed (exit %d; torch.log)' % status}
    return json.loads(line)


def training(run, timeout):
    """The kit's training run against the CPU's losses (reference/)."""
    with open(os.path.join(run.kit, 'reference', 'cpu_losses.json')) as f:
        reference = json.load(f)
    argv = [os.path.join('bin', 'caffe'), 'train', '-solver', 'train/solver.prototxt']
    if not run.cpu:
        argv += ['-gpu', '0', '-tf32=false']
    status, output = run('train.log', argv, timeout)
    # fcrn.train.parse_log's pattern; this runner imports nothing of the
    # project's, whose dependencies a GPU machine may lack.
    found = {int(i): float(v) for i, v in re.findall(
        r'Iteration (\d+)(?: \([^)]*\))?, loss = ([-+0-9.eEinfa]+)', output)}
    expected = reference['losses']
    got = [found.get(i) for i in range(len(expected))]
    result = dict(status=status, iterations=len([g for g in got if g is not None]),
                  cpu=expected[:reference['early_iterations']],
                  device=got[:reference['early_iterations']])
    if None in got:
        result.update(passed=False, reason='%d of %d losses logged (exit %d)'
                      % (result['iterations'], len(expected), status))
        return result
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
    return result


def find(results, name):
    return next((r for r in results if r.get('name') == name and 'median_ms' in r), None)


def targets(bench, torch, sizes):
    """Each target of the GPU issue: measured, bound, met (None: not measured)."""
    rows = []

    def ratio(what, a, b, key, bound):
        value = a[key] / b[key] if a and b and b.get(key) else None
        rows.append(dict(target=what, value=value, bound=bound,
                         met=None if value is None else value <= bound))

    size = sizes[0]
    caffe = find(bench, 'r101_s8_lean_%d_fb_cudnn_tf32' % size)
    shared = find(bench, 'r101_s8_lean_%d_fb_cudnn_tf32_shared' % size)
    theirs = torch.get('runs', {}).get('%d_fb_tf32' % size) if isinstance(torch, dict) else None
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


def markdown(report):
    env = report['environment']
    lines = ['# GPU check', '',
             'Device: %s (driver %s, %s); CPU %s; glibc %s (kit needs %s); CUDA libraries: %s.'
             % (env.get('gpu', 'none (CPU run)'), env.get('driver', '-'), env.get('gpu_memory', '-'),
                env['cpu'], env['glibc'], env['glibc_needed'],
                ', '.join('%s' % v for v in env['cuda_libraries'].values() if v) or 'none found'),
             '', 'Produced by `scripts/gpu_check.sh%s` in %.0f s.' % (
                 ' --cpu' if report['cpu'] else '', report['seconds']), '']
    if report.get('stopped'):
        lines += ['**Stopped:** %s' % report['stopped'], '']
    lines += ['## Targets', '', '| target | measured | bound | met |', '|---|---:|---:|---|']
    for row in report.get('targets', []):
        lines.append('| %s | %s | %s | %s |' % (
            row['target'], '-' if row['value'] is None else '%.2fx' % row['value'],
            '%.1fx' % row['bound'], {True: 'yes', False: '**no**', None: 'not measured'}[row['met']]))
    lines += ['', '## Tests', '', '| binary | filter | tests | failures | passed |', '|---|---|---:|---:|---|']
    for t in report.get('tests', []):
        lines.append('| %s | `%s` | %d | %d | %s |' % (t['binary'], t['filter'], t['tests'],
                                                   t['failures'], 'yes' if t['passed'] else '**no**'))
        if t.get('gpu_skipped'):
            lines.append('| | %s | | | |' % t['gpu_skipped'])
    lines += ['', '## Benchmarks (Caffe, fcrn_time)', '',
              '| run | pass | engine | TF32 | shared memory | median ms | peak MiB |',
              '|---|---|---|---|---|---:|---:|']
    for b in report.get('benchmarks', []):
        if 'median_ms' in b:
            lines.append('| %s | %s | %s | %s | %s | %.2f | %.0f |' % (
                b['name'], b['pass'], b['engine'], 'yes' if b['tf32'] else 'no',
                'yes' if b['share_memory'] else 'no', b['median_ms'], b['peak_bytes'] / 2 ** 20))
        else:
            lines.append('| %s | | | | | %s | |' % (b['name'], b.get('skipped') or b.get('error')))
    torch = report.get('torch', {})
    lines += ['', '## PyTorch, same net, same GPU', '']
    if 'runs' in torch:
        lines += ['torch %s, cuDNN %s, cudnn.benchmark on, frozen BN (eval).' % (
            torch.get('torch'), torch.get('cudnn')), '',
                  '| run | median ms | peak reserved MiB | peak allocated MiB |', '|---|---:|---:|---:|']
        for name, r in sorted(torch['runs'].items()):
            lines.append('| %s | %.2f | %.0f | %.0f |' % (name, r['median_ms'], r['peak_bytes'] / 2 ** 20,
                                                         r['peak_allocated'] / 2 ** 20))
    else:
        lines.append(torch.get('skipped', 'not run'))
    train = report.get('training', {})
    lines += ['', '## Training run (FCRN-50, batch statistics, bootstrapping, HDF5 crops)', '']
    if 'passed' in train:
        lines.append('%s: %s' % ('passed' if train['passed'] else '**failed**',
                                 train.get('reason') or
                                 'iteration 0 within %.0e of the CPU (%.1e), iterations 0-%d within %.0e '
                                 '(%.1e), mean loss of the first and last %d iterations %.3f -> %.3f'
                                 % (train['first_tolerance'], train['first_difference'],
                                    len(train['cpu']) - 1, train['early_tolerance'],
                                    train['early_max_difference'], train['window'],
                                    train['mean_loss_first'], train['mean_loss_last'])))
    return '\n'.join(lines) + '\n'


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--kit', required=True, help='unpacked gpu-kit folder')
    parser.add_argument('--out', required=True, help='folder for gpu.md, gpu.json and logs')
    parser.add_argument('--cpu', action='store_true', help='run on the CPU (small sizes)')
    parser.add_argument('--budget', type=float, default=420,
                        help='seconds after which no further benchmark starts')
    args = parser.parse_args()
    started = time.time()
    os.makedirs(args.out, exist_ok=True)
    for name in ('environment.log', 'tests.log', 'bench.log', 'torch.log', 'train.log'):
        open(os.path.join(args.out, name), 'w').close()
    run = Run(os.path.abspath(args.kit), os.path.abspath(args.out), args.cpu)
    with open(os.path.join(run.kit, 'plan.json')) as f:
        plan = json.load(f)
    report = dict(cpu=args.cpu, environment=environment(run))
    env = report['environment']
    failed = False
    if env['missing_libraries']:
        report['stopped'] = ('the kit needs libraries this machine lacks: %s'
                             % ', '.join(env['missing_libraries']))
    elif version_tuple(env['glibc']) < version_tuple(env['glibc_needed']):
        report['stopped'] = ('the kit needs glibc %s; this machine has %s'
                             % (env['glibc_needed'], env['glibc']))
    if report.get('stopped'):
        failed = True
    else:
        report['tests'] = gtests(run, timeout=240)
        sizes = plan['sizes']['cpu' if args.cpu else 'gpu']
        report['training'] = training(run, timeout=180)
        report['benchmarks'] = benchmarks(run, plan['cpu' if args.cpu else 'gpu'],
                                          started + args.budget)
        report['torch'] = torch_benchmarks(run, sizes, os.path.dirname(os.path.dirname(
            os.path.abspath(__file__))))
        report['targets'] = targets(report['benchmarks'], report['torch'], sizes) \
            if not args.cpu else []
        failed = not all(t['passed'] for t in report['tests']) or not report['training']['passed']
    report['seconds'] = time.time() - started
    with open(os.path.join(args.out, 'gpu.json'), 'w') as f:
        json.dump(report, f, indent=1)
    text = markdown(report)
    with open(os.path.join(args.out, 'gpu.md'), 'w') as f:
        f.write(text)
    print(text)
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
