"""The FCRN in Caffe and in PyTorch on the CPU, side by side (scripts/bench_peers.py).

Each (case, mode, variant) runs in a worker process of its own
(fcrn/bench/peer_worker.py): Caffe variants under the project's interpreter,
PyTorch ones under a virtual environment of their own that `torch_python`
makes on demand from requirements-peers.txt (PyTorch never enters the pycaffe
environment). The workers of one case and mode live side by side and the
parent asks them for one pass each in turn, run after run, so that the
machine's changing load hits every variant alike. Peak memory is each
worker's peak resident set, whole (interpreter and libraries included) and
above its baseline after the imports.
"""
import dataclasses
import hashlib
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
from typing import List

from fcrn import ROOT

log = logging.getLogger(__name__)

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'peer_worker.py')
REQUIREMENTS = os.path.join(ROOT, 'requirements-peers.txt')
MODES = ('forward', 'backward')


@dataclasses.dataclass(frozen=True)
class Case:
    """One network and input size (the deploy net of fcrn.net.netgen)."""
    depth: int
    kernel: int
    dilation: int
    size: int

    @property
    def name(self):
        return 'R%d 1/8 (k%d d%d), %dx%d' % (self.depth, self.kernel, self.dilation,
                                             self.size, self.size)


CASES = (Case(50, 3, 12, 321), Case(50, 3, 12, 505),
         Case(101, 5, 12, 321), Case(101, 5, 12, 505))


@dataclasses.dataclass(frozen=True)
class Variant:
    """A way to run one framework: the lever it measures is its only change."""
    name: str
    framework: str
    flags: tuple = ()
    env: tuple = ()          # (name, value) pairs set for the worker
    note: str = ''


def variants(threads):
    """The variants measured, Caffe's baseline first."""
    return (
        Variant('caffe', 'caffe', note='as built'),
        Variant('caffe-shared', 'caffe', ('--share-memory',),
                note='share_memory: data (forward) or diffs (backward) share memory'),
        # OpenMP regions (im2col/col2im) on one thread, BLAS still on all:
        # the parallel-im2col lever, off. OPENBLAS_NUM_THREADS rules the
        # pthreads OpenBLAS; an OpenMP BLAS would follow OMP_NUM_THREADS.
        Variant('caffe-serial-im2col', 'caffe',
                env=(('OMP_NUM_THREADS', '1'), ('OPENBLAS_NUM_THREADS', str(threads))),
                note='im2col/col2im on one thread'),
        Variant('torch', 'torch', note='NCHW (contiguous)'),
        Variant('torch-cl', 'torch', ('--channels-last',), note='channels_last'),
    )


def requirements_key(path=REQUIREMENTS):
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()[:12]


def default_torch_venv():
    cache = os.environ.get('FCRN_CACHE_DIR') or os.path.join(
        os.environ.get('XDG_CACHE_HOME') or os.path.expanduser('~/.cache'), 'fcrn')
    return os.path.join(cache, 'peers-venv')


def torch_python(venv, requirements=REQUIREMENTS):
    """The interpreter of a virtual environment with PyTorch and torchvision
    as pinned in `requirements`, made (or remade, when they change) with pip
    as the machine configures it. Its marker file holds the requirements'
    hash, written last: an interrupted install is redone."""
    python = os.path.join(venv, 'bin', 'python')
    marker = os.path.join(venv, '.complete')
    key = requirements_key(requirements)
    if os.path.isfile(marker) and open(marker).read().strip() == key:
        return python
    log.info('making the PyTorch environment %s from %s (a few GB)', venv, requirements)
    subprocess.run(['/usr/bin/python3', '-m', 'venv', '--clear', venv], check=True)
    subprocess.run([python, '-m', 'pip', 'install', '-q', '--disable-pip-version-check',
                    '-r', requirements], check=True)
    with open(marker, 'w') as f:
        f.write(key + '\n')
    return python


class Worker:
    """A running peer_worker.py, answering one JSON line per request."""

    def __init__(self, python, variant, case, mode, tmp):
        command = [python, WORKER, variant.framework, '--depth', str(case.depth),
                   '--kernel', str(case.kernel), '--dilation', str(case.dilation),
                   '--size', str(case.size), '--mode', mode, '--tmp', tmp] + list(variant.flags)
        env = dict(os.environ, GLOG_minloglevel='2', **dict(variant.env))
        self.variant = variant
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True, env=env, cwd=ROOT)
        self.ready = self._read()

    def _read(self):
        line = self.process.stdout.readline()
        if not line:
            code = self.process.wait()
            raise RuntimeError('%s worker exited with status %s before answering (its '
                               'error is above)' % (self.variant.name, code))
        return json.loads(line)

    def ask(self, request):
        self.process.stdin.write(request + '\n')
        self.process.stdin.flush()
        return self._read()

    def close(self):
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


def measure(case, mode, chosen, pythons, warmup, runs, tmp):
    """{variant name: result} for one case and mode, the variants alternated."""
    workers = []
    try:
        for variant in chosen:
            log.info('%s, %s: starting %s', case.name, mode, variant.name)
            workers.append(Worker(pythons[variant.framework], variant, case, mode, tmp))
        seconds = {w.variant.name: [] for w in workers}
        for index in range(warmup + runs):
            for worker in workers:
                answer = worker.ask('run')
                if index >= warmup:
                    seconds[worker.variant.name].append(answer['seconds'])
        results = {}
        for worker in workers:
            end = worker.ask('finish')
            name = worker.variant.name
            results[name] = dict(
                variant=name, framework=worker.variant.framework, note=worker.variant.note,
                seconds=seconds[name], median=statistics.median(seconds[name]),
                peak_rss=end['peak_rss'], baseline_rss=worker.ready['baseline_rss'],
                output_shape=end['output_shape'], settings=worker.ready['settings'])
            log.info('%s, %s, %s: median %.3f s, peak %.2f GB', case.name, mode, name,
                     results[name]['median'], end['peak_rss'] / 1e9)
    finally:
        for worker in workers:
            worker.close()
    shapes = {tuple(r['output_shape']) for r in results.values()}
    if len(shapes) != 1:
        raise RuntimeError('%s, %s: the variants disagree on the output shape: %s' % (
            case.name, mode, {n: r['output_shape'] for n, r in results.items()}))
    return results


def cpu_name():
    with open('/proc/cpuinfo') as f:
        for line in f:
            if line.startswith('model name'):
                return line.split(':', 1)[1].strip()
    return platform.processor() or 'unknown CPU'


def run(cases: List[Case], chosen, torch_python_path, warmup=2, runs=7, tmp='/tmp'):
    """Measure every case in both modes; returns the record written as JSON."""
    pythons = dict(caffe=sys.executable, torch=torch_python_path)
    load_before = os.getloadavg()
    records = []
    for case in cases:
        for mode in MODES:
            results = measure(case, mode, chosen, pythons, warmup, runs, tmp)
            records.append(dict(case=dataclasses.asdict(case), name=case.name, mode=mode,
                                results=results))
    return dict(machine=dict(cpu=cpu_name(), cores=os.cpu_count(),
                             load_before=load_before, load_after=os.getloadavg()),
                warmup=warmup, runs=runs, records=records)


def best_torch(results):
    """PyTorch's fastest variant (its best setting) in one case and mode."""
    torch = [r for r in results.values() if r['framework'] == 'torch']
    return min(torch, key=lambda r: r['median']) if torch else None


def _gb(value):
    return '%.2f' % (value / 1e9)


def report(record, caffe_variant='caffe-shared'):
    """Markdown: one table per mode, ratios against PyTorch's best, the targets."""
    machine = record['machine']
    lines = ['# FCRN on the CPU: Caffe and PyTorch side by side', '',
             'Machine: %s, %d cores (load average %.1f before, %.1f after). Produced by '
             '`scripts/bench_peers.py`: each variant in a process of its own, the processes '
             'asked for one pass each in turn; %d warm-up passes, then the median of %d. '
             'Memory: peak resident set of the whole process, and above the process\'s '
             'own after its imports (the net alone).' % (
                 machine['cpu'], machine['cores'], machine['load_before'][0],
                 machine['load_after'][0], record['warmup'], record['runs']), '']
    first = record['records'][0]['results']
    lines.append('Settings:')
    for name, result in first.items():
        lines.append('- `%s` (%s): %s' % (name, result['note'], json.dumps(
            result['settings'], sort_keys=True)))
    lines.append('')
    titles = dict(forward='Forward (TEST net / inference mode)',
                  backward='Forward + backward (all parameter and input gradients)')
    for mode in MODES:
        lines += ['## ' + titles[mode], '',
                  '| Case | Variant | median s | vs PyTorch best | peak GB | net GB '
                  '| peak vs PyTorch best | net vs PyTorch best |',
                  '|---|---|---:|---:|---:|---:|---:|---:|']
        for entry in record['records']:
            if entry['mode'] != mode:
                continue
            reference = best_torch(entry['results'])
            for name, r in entry['results'].items():
                net = r['peak_rss'] - r['baseline_rss']
                if reference:
                    ref_net = reference['peak_rss'] - reference['baseline_rss']
                    ratios = ['%.2f' % (r['median'] / reference['median']),
                              '%.2f' % (r['peak_rss'] / reference['peak_rss']),
                              '%.2f' % (net / ref_net)]
                else:
                    ratios = ['-'] * 3
                lines.append('| %s | %s | %.3f | %s | %s | %s | %s | %s |' % (
                    entry['name'], name, r['median'], ratios[0], _gb(r['peak_rss']),
                    _gb(net), ratios[1], ratios[2]))
        lines.append('')
    lines += targets(record, caffe_variant)
    return '\n'.join(lines) + '\n'


def targets(record, caffe_variant):
    """The issue's targets, met or not, for one Caffe variant (the plain
    build where that one was not measured)."""
    lines = ['## Targets (Caffe at most 1.0x PyTorch\'s best)', '',
             '| Case | Mode | Caffe variant | time | peak memory (whole) | net memory |',
             '|---|---|---|---|---|---|']
    for entry in record['records']:
        reference = best_torch(entry['results'])
        caffe = [r for r in entry['results'].values() if r['framework'] == 'caffe']
        if not reference or not caffe:
            continue
        named = {r['variant']: r for r in caffe}
        mine = named.get(caffe_variant) or named.get('caffe') or caffe[0]

        def verdict(ratio):
            return '%.2fx %s' % (ratio, 'met' if ratio <= 1.0 else 'NOT met')
        lines.append('| %s | %s | %s | %s | %s | %s |' % (
            entry['name'], entry['mode'], mine['variant'],
            verdict(mine['median'] / reference['median']),
            verdict(mine['peak_rss'] / reference['peak_rss']),
            verdict((mine['peak_rss'] - mine['baseline_rss']) /
                    (reference['peak_rss'] - reference['baseline_rss']))))
    return lines + ['']
