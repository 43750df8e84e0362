"""The FCRN in Caffe and in PyTorch on the CPU, side by side (scripts/bench_peers.py).

Each (case, mode, variant) runs in a worker process of its own
(tools/bench/peer_worker.py): Caffe variants under the project's interpreter,
PyTorch ones under a virtual environment of their own that `torch_python`
makes on demand from requirements-peers.txt (PyTorch never enters the pycaffe
environment). The workers of one case and mode live side by side and the
parent asks them for one pass each in turn, run after run, so that the
machine's changing load hits every variant alike; the whole run is made
again (`--repeats`) with fresh workers in another order, and each target
is judged repeat by repeat. Peak memory is each worker's peak resident
set, whole (interpreter and libraries included) and above its baseline
after the imports.
"""
import dataclasses
import hashlib
import json
import logging
import os
import statistics
import subprocess
import sys
import sysconfig
import time
from typing import List

from fcrn import fileio
from fcrn.errors import InputError, UsageError
from tools import ROOT, bench
from tools.bench.peer_worker import ELEMENTWISE, PROFILE_PASSES, SCORE_SPREAD

log = logging.getLogger(__name__)

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'peer_worker.py')
REQUIREMENTS = os.path.join(ROOT, 'requirements-peers.txt')
MODES = ('forward', 'backward')
SETTLE_SECONDS = 0.3


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


def blas_dir(build):
    """Debian's folder of one BLAS build: 'openblas-pthread', 'blis-openmp', ..."""
    multiarch = sysconfig.get_config_var('MULTIARCH') or 'x86_64-linux-gnu'
    return '/usr/lib/%s/%s' % (multiarch, build)


# OpenBLAS picks its kernels for the CPU unless OPENBLAS_CORETYPE names them;
# some machines pin them (with OPENBLAS_L2_SIZE) in the environment. Workers
# run without the pin unless their variant sets it, and report the kernels.
OPENBLAS_PINS = ('OPENBLAS_CORETYPE', 'OPENBLAS_L2_SIZE')
UNSHARED = ('--no-share-memory',)


def unpinned(env):
    """A copy of `env` without the OpenBLAS kernel pin (OPENBLAS_PINS)."""
    return {name: value for name, value in env.items() if name not in OPENBLAS_PINS}

# The Caffe variant held against the targets, and profiled: the generated
# net as it is, which shares blob memory (share_memory: true).
REFERENCE = 'caffe'


def variant_groups():
    """Groups of variants, each group's workers alternated run by run.

    The first group compares Caffe with PyTorch; the second holds one lever
    each against caffe (all share memory, so that eight Caffe processes fit
    in memory together at 505x505)."""
    return (
        (Variant(REFERENCE, 'caffe', note='the generated net: share_memory: true, data '
                 '(forward) or diffs (backward) share memory'),
         Variant('caffe-unshared', 'caffe', UNSHARED,
                 note='share_memory: false, every blob its own memory'),
         Variant('torch', 'torch', note='NCHW (contiguous)'),
         Variant('torch-cl', 'torch', ('--channels-last',), note='channels_last')),
        (Variant(REFERENCE, 'caffe', note='the reference of this group'),
         Variant('caffe-im2col', 'caffe', env=(('FCRN_NO_DNNL', '1'),),
                 note='im2col/kn2row and OpenBLAS instead of oneDNN (patch 0013 off)'),
         Variant('caffe-dilated-as-is', 'caffe', env=(('FCRN_DNNL_DILATED', 'as-is'),),
                 note='dilated convolutions as they are: im2col where oneDNN has '
                 'no direct kernel (patches 0015 and 0017 off)'),
         Variant('caffe-dilated-phases', 'caffe', env=(('FCRN_DNNL_DILATED', 'phases'),),
                 note='dilated forward passes in phases, not on a padded copy '
                 '(patch 0017 off)'),
         Variant('caffe-serial-elementwise', 'caffe',
                 env=(('FCRN_SERIAL_ELEMENTWISE', '1'),),
                 note="element-wise layers on one thread (patch 0014's OpenMP off)"),
         Variant('caffe-unfused-relu', 'caffe', env=(('FCRN_UNFUSED_RELU', '1'),),
                 note='every ReLU a pass of its own, not applied by the layer before '
                 'it (patch 0019 off)'),
         Variant('caffe-1x1-blas', 'caffe', env=(('FCRN_DNNL_1X1', 'blas'),),
                 note="1x1 convolutions' forward passes on OpenBLAS, not in oneDNN "
                 "(patch 0020's choice off; on a CPU without AVX-512 the same as "
                 'caffe)'),
         Variant('caffe-1x1-dnnl', 'caffe', env=(('FCRN_DNNL_1X1', 'dnnl'),),
                 note="1x1 convolutions' forward passes in oneDNN on any CPU (patch 0020's "
                 'choice on AVX-512, where it is the same as caffe)'),
         # The same soname, libopenblas.so.0, found first in that folder.
         Variant('caffe-openblas-pthread', 'caffe',
                 env=(('LD_LIBRARY_PATH', blas_dir('openblas-pthread')),),
                 note="OpenBLAS's pthreads build (Debian's default) instead of the "
                 "OpenMP one the project's environment chooses: 1x1 convolutions in "
                 "oneDNN, backward passes too (patch 0016 off)")),
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


# SGEMM shapes (rows, inner, columns) of the benchmark's nets: a large square
# one (the machine's measured peak), R101's res5 3x3 convolution at 505x505
# (64x64 output), and the k5 classifier there as im2col (21 rows) and as
# kn2row (25 * 21 rows) compute it.
GEMM_SHAPES = ((2048, 2048, 2048), (512, 4608, 4096), (21, 51200, 4096), (525, 2048, 4096))

_GEMM_CHILD = """
import ctypes, json, sys, time
import numpy as np
library = ctypes.CDLL(sys.argv[1], mode=ctypes.RTLD_LOCAL)
sgemm = library.cblas_sgemm
sgemm.argtypes = [ctypes.c_int] * 6 + [ctypes.c_float, ctypes.c_void_p, ctypes.c_int,
                  ctypes.c_void_p, ctypes.c_int, ctypes.c_float, ctypes.c_void_p, ctypes.c_int]
rates = []
for m, k, n in json.loads(sys.argv[2]):
    rng = np.random.RandomState(0)
    a, b = rng.rand(m, k).astype(np.float32), rng.rand(k, n).astype(np.float32)
    c = np.empty((m, n), np.float32)
    best = float('inf')
    for _ in range(4):  # the first one warms up
        start = time.perf_counter()
        sgemm(101, 111, 111, m, n, k, 1.0, a.ctypes.data, k, b.ctypes.data, n, 0.0,
              c.ctypes.data, n)
        best = min(best, time.perf_counter() - start)
    assert np.allclose(c[:3, :3], a[:3] @ b[:, :3], rtol=1e-3), 'wrong product'
    rates.append(2.0 * m * k * n / best / 1e9)
print(json.dumps(rates))
"""


def gemm_libraries():
    """(name, library path, whether the environment's kernel pin stays) of
    the BLAS builds installed."""
    pin = os.environ.get('OPENBLAS_CORETYPE')
    found = []
    for flavour in ('pthread', 'openmp'):
        path = os.path.join(blas_dir('openblas-' + flavour), 'libopenblas.so.0')
        found.append(('OpenBLAS %s%s' % (flavour, ', OPENBLAS_CORETYPE=%s' % pin if pin
                                         else ''), path, True))
        found.append(('OpenBLAS %s, own kernel choice' % flavour, path, False))
    found.append(('BLIS openmp', os.path.join(blas_dir('blis-openmp'), 'libblis.so.4'), True))
    return [entry for entry in found if os.path.isfile(entry[1])]


def gemm_rates(threads, shapes=GEMM_SHAPES):
    """{library name: [GFLOP/s per shape]}, each library in a process of its own."""
    rates = {}
    for name, path, pinned in gemm_libraries():
        env = dict(os.environ, OMP_NUM_THREADS=str(threads),
                   OPENBLAS_NUM_THREADS=str(threads), BLIS_NUM_THREADS=str(threads))
        if not pinned:
            env = unpinned(env)
        log.info('SGEMM with %s', name)
        rates[name] = sgemm_rates(path, shapes, env)
    return rates


def sgemm_rates(library, shapes=GEMM_SHAPES, env=None):
    """GFLOP/s of `library`'s cblas_sgemm for each (rows, inner, columns)
    shape, best of 3 after a warm-up, in a process of its own under `env`."""
    result = subprocess.run([sys.executable, '-c', _GEMM_CHILD, library, json.dumps(shapes)],
                            capture_output=True, text=True, env=env, check=True)
    return json.loads(result.stdout)


class Worker:
    """A running peer_worker.py, answering one JSON line per request."""

    def __init__(self, python, variant, case, mode):
        command = [python, WORKER, variant.framework, '--depth', str(case.depth),
                   '--kernel', str(case.kernel), '--dilation', str(case.dilation),
                   '--size', str(case.size), '--mode', mode] + list(variant.flags)
        env = unpinned(dict(os.environ, GLOG_minloglevel='2'))
        for name, value in variant.env:
            # a library folder goes first, before those the user set
            env[name] = value + (':' + env[name] if name == 'LD_LIBRARY_PATH' and
                                 env.get(name) else '')
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


def measure(case, mode, chosen, pythons, warmup, runs, profiled=()):
    """{variant name: result} for one case and mode, the variants of one
    group alternated; the Caffe variants named in `profiled` are then
    profiled layer by layer (result 'profile')."""
    workers = []
    try:
        for variant in chosen:
            log.info('%s, %s: starting %s', case.name, mode, variant.name)
            workers.append(Worker(pythons[variant.framework], variant, case, mode))
        seconds = {w.variant.name: [] for w in workers}
        for index in range(warmup + runs):
            for worker in workers:
                # BLAS and OpenMP threads spin a while after their last work:
                # let the previous worker's settle before timing the next.
                time.sleep(SETTLE_SECONDS)
                answer = worker.ask('run')
                if index >= warmup:
                    seconds[worker.variant.name].append(answer['seconds'])
        results = {}
        for position, worker in enumerate(workers):
            profile = worker.ask('profile') if worker.variant.name in profiled else {}
            end = worker.ask('finish')
            name = worker.variant.name
            results[name] = dict(
                variant=name, framework=worker.variant.framework, note=worker.variant.note,
                position=position, seconds=seconds[name],
                median=statistics.median(seconds[name]),
                peak_rss=end['peak_rss'], baseline_rss=worker.ready['baseline_rss'],
                output_shape=end['output_shape'], settings=worker.ready['settings'],
                profile=profile.get('profile'), profile_layers=profile.get('profile_layers'))
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


def schedule(group, repeat):
    """The order of `group`'s workers in repeat `repeat`: as given, then
    reversed, then both again started one place on, and so on, so that a
    variant neither always runs first nor always right after the same other
    one (whose threads or freed memory might slow the pass after it);
    rotation alone keeps every variant's predecessor."""
    order = list(group) if repeat % 2 == 0 else list(reversed(group))
    steps = repeat // 2 % max(len(order), 1)
    return order[steps:] + order[:steps]


def combine(measured, order):
    """One result per variant (in `order`) from its repeats' results (each
    a `measure` result): its median is the median of the repeats' medians,
    its memory that of the repeat with the highest peak; 'repeats' keeps
    each repeat's passes, memory and place in the order, 'seconds' all
    passes."""
    combined = {}
    for name in order:
        runs = [results[name] for results in measured]
        worst = max(runs, key=lambda r: r['peak_rss'])
        combined[name] = dict(
            runs[0], seconds=[s for r in runs for s in r['seconds']],
            median=statistics.median(r['median'] for r in runs),
            peak_rss=worst['peak_rss'], baseline_rss=worst['baseline_rss'],
            repeats=[{key: r[key] for key in ('position', 'seconds', 'median', 'peak_rss',
                                              'baseline_rss')} for r in runs])
    return combined


def run(cases: List[Case], groups, torch_python_path, warmup=1, runs=3, threads=None,
        gemm=True, repeats=3):
    """Measure every case in both modes, group by group (and SGEMM of each
    BLAS), the whole run `repeats` times over with fresh workers, each
    group's order changed per repeat (`schedule`); returns the record
    written as JSON. The reference is profiled in the first repeat."""
    pythons = dict(caffe=sys.executable, torch=torch_python_path)
    threads = threads or os.cpu_count()
    load_before = os.getloadavg()
    gemm_record = dict(shapes=GEMM_SHAPES, rates=gemm_rates(threads)) if gemm else None
    keys = [(case, mode, group) for case in cases for mode in MODES
            for group in range(len(groups))]
    measured = {key: [] for key in keys}
    for repeat in range(repeats):
        log.info('repeat %d of %d', repeat + 1, repeats)
        for case, mode, group in keys:
            order = schedule(groups[group], repeat)
            measured[case, mode, group].append(measure(
                case, mode, order, pythons, warmup, runs,
                profiled=(REFERENCE,) if group == 0 and repeat == 0 else ()))
    records = [dict(case=dataclasses.asdict(case), name=case.name, mode=mode, group=group,
                    results=combine(measured[case, mode, group],
                                    [v.name for v in groups[group]]))
               for case, mode, group in keys]
    return dict(machine=dict(cpu=bench.cpu(), cores=os.cpu_count(),
                             load_before=load_before, load_after=os.getloadavg()),
                commit=bench.commit(), score_spread=SCORE_SPREAD, warmup=warmup, runs=runs,
                repeats=repeats, threads=threads, gemm=gemm_record, records=records)


def repeats_of(result):
    """A result's repeats: its median and memory, repeat by repeat (one in
    a record made before the benchmark repeated its runs)."""
    return result.get('repeats') or [dict(median=result['median'], peak_rss=result['peak_rss'],
                                          baseline_rss=result['baseline_rss'])]


def paired_ratios(results, mine):
    """[(time, peak, net) ratio] of the result `mine` against PyTorch's best
    of the same repeat (as torch_reference), one per repeat."""
    ratios = []
    for index, own in enumerate(repeats_of(mine)):
        reference = torch_reference({name: dict(r, **repeats_of(r)[index])
                                     for name, r in results.items()})
        ratios.append((own['median'] / reference['seconds'],
                       own['peak_rss'] / reference['peak'],
                       (own['peak_rss'] - own['baseline_rss']) / reference['net']))
    return ratios


def torch_reference(results):
    """PyTorch's best in one case and mode, each figure from whichever of its
    variants does best there: seconds (the fastest median), peak and net (the
    leanest), or None without a PyTorch variant."""
    torch = [r for r in results.values() if r['framework'] == 'torch']
    if not torch:
        return None
    return dict(seconds=min(r['median'] for r in torch),
                peak=min(r['peak_rss'] for r in torch),
                net=min(r['peak_rss'] - r['baseline_rss'] for r in torch))


# How a record's passes were made, where it says nothing: the version before
# the input was scaled and Caffe's input learnt.
EARLIER_METHOD = ('Inputs 50 times a unit normal, which saturates the softmax (the backward '
                  'passes carried zeros); Caffe\'s forward + backward under force_backward, '
                  'which also computes the gradients of the frozen normalisation\'s parameters '
                  '(PyTorch\'s computes none): made by an earlier version of the benchmark.')


def method(record):
    """The sentence that says what the passes compute."""
    if 'score_spread' not in record:
        return EARLIER_METHOD
    return ('Inputs: a unit normal scaled so that the scores spread %g (their standard '
            'deviation over the classes, the mean over the pixels: the softmax neither '
            'uniform nor saturated). Forward + backward computes the gradients of the input '
            'and of every parameter but the frozen normalisation\'s, in both frameworks '
            '(Caffe\'s input is a learnt Parameter layer, not force_backward).'
            % record['score_spread'])


def _count(n, one, many):
    return '%d %s' % (n, one if n == 1 else many)


def _gb(value):
    return '%.2f' % (value / 1e9)


TITLE = '# FCRN on the CPU: Caffe and PyTorch side by side'


def report(record, caffe_variant=REFERENCE):
    """Markdown: one table per mode, ratios against caffe of the same
    group and against PyTorch's best, the targets, the SGEMM table."""
    machine = record['machine']
    lines = [TITLE, '',
             'Machine: %s, %d cores (load average %.1f before, %.1f after)%s. Produced by '
             '`scripts/bench_peers.py`: each variant in a process of its own; the processes '
             'of a group are asked for one pass each in turn, %s, then the median of '
             '%d%s. Group 1 compares Caffe with PyTorch; group 2 measures one time lever per '
             'row against caffe (the generated net). Memory: peak resident set of the whole '
             'process, and above the process\'s own after its imports ("net": the net '
             'alone). Against PyTorch: its fastest variant\'s time, its leanest variant\'s '
             'memory.' % (machine['cpu'], machine['cores'], machine['load_before'][0],
                          machine['load_after'][0],
                          ', code at %s' % record['commit'] if record.get('commit') else '',
                          _count(record['warmup'], 'warm-up pass', 'warm-up passes'),
                          record['runs'], repeated(record)), '',
             method(record), '',
             'Settings (threads, BLAS library and kernels):']
    seen = set()
    for entry in record['records']:
        for name, result in entry['results'].items():
            if (entry['group'], name) not in seen:
                seen.add((entry['group'], name))
                lines.append('- group %d, `%s` (%s): %s' % (
                    entry['group'] + 1, name, result['note'],
                    json.dumps(result['settings'], sort_keys=True)))
    lines.append('')
    titles = dict(forward='Forward (TEST net / inference mode)',
                  backward='Forward + backward (TRAIN net)')
    spread = record.get('repeats', 1) > 1   # a column of the repeats' range
    for mode in MODES:
        header = ['Case', 'Group', 'Variant', 'median s'] + ['range s'] * spread + [
            'vs caffe', 'vs PyTorch fastest', 'peak GB', 'net GB', 'peak vs PyTorch leanest',
            'net vs PyTorch leanest']
        lines += ['## ' + titles[mode], '', '| %s |' % ' | '.join(header),
                  '|---|---|---|' + '---:|' * (len(header) - 3)]
        for entry in record['records']:
            if entry['mode'] != mode:
                continue
            reference = torch_reference(entry['results'])
            anchor = entry['results'].get(REFERENCE)
            for name, r in entry['results'].items():
                net = r['peak_rss'] - r['baseline_rss']
                medians = [repeat['median'] for repeat in repeats_of(r)]
                cells = [entry['name'], str(entry['group'] + 1), name, '%.3f' % r['median']]
                cells += ['%.3f-%.3f' % (min(medians), max(medians))] * spread
                cells += ['%.2f' % (r['median'] / anchor['median']) if anchor else '-']
                if reference:
                    cells += ['%.2f' % (r['median'] / reference['seconds']), _gb(r['peak_rss']),
                              _gb(net), '%.2f' % (r['peak_rss'] / reference['peak']),
                              '%.2f' % (net / reference['net'])]
                else:
                    cells += ['-', _gb(r['peak_rss']), _gb(net), '-', '-']
                lines.append('| %s |' % ' | '.join(cells))
        lines.append('')
    lines += targets(record, caffe_variant)
    lines += profile_table(record)
    if record.get('gemm'):
        lines += gemm_table(record['gemm'], record['threads'])
    return '\n'.join(lines) + '\n'


def repeated(record):
    """The clause of the report's method that says how runs were repeated."""
    repeats = record.get('repeats', 1)
    if repeats == 1:
        return ''
    return ('; the whole run %d times over, with fresh processes and each group\'s order '
            'reversed every other repeat ("median s": the median of the repeats\' medians, '
            '"range s": the lowest and highest of them; each target is judged repeat by '
            'repeat against PyTorch in the same repeat, and met only when it holds in every '
            'one)' % repeats)


def verdict(ratios, target=None):
    """'0.91x met' for one ratio; for several (one per repeat) their median,
    range and whether the target held in all, none or some of them."""
    text = '%.2fx' % statistics.median(ratios)
    if len(ratios) > 1:
        text += ' (%.2f-%.2f)' % (min(ratios), max(ratios))
    if target is None:
        return text
    held = sum(ratio <= target for ratio in ratios)
    if held == len(ratios):
        return text + ' met'
    if held == 0:
        return text + ' NOT met'
    return text + ' met in %d of %d' % (held, len(ratios))


# The memory targets of the whole process's peak against PyTorch's leanest, per
# mode (issue 22); time is held to 1.0x in both.
PEAK_TARGETS = dict(forward=0.5, backward=0.75)


def targets(record, caffe_variant):
    """The targets, met or not, for one Caffe variant (the generated net
    where that one was not measured): time at most 1.0x PyTorch's fastest,
    the peak at most PEAK_TARGETS of its mode of PyTorch's leanest."""
    lines = ['## Targets', '',
             'Time at most 1.0x PyTorch\'s fastest; peak memory of the whole process at most '
             '%s of PyTorch\'s leanest.' % ', '.join('%.2fx in %s' % (v, k)
                                                   for k, v in PEAK_TARGETS.items()), '',
             '| Case | Mode | Caffe variant | time | peak memory (whole) | net memory |',
             '|---|---|---|---|---|---|']
    held = []
    for entry in record['records']:
        reference = torch_reference(entry['results'])
        caffe = [r for r in entry['results'].values() if r['framework'] == 'caffe']
        if not reference or not caffe:
            continue
        named = {r['variant']: r for r in caffe}
        mine = named.get(caffe_variant) or named.get(REFERENCE) or caffe[0]
        times, peaks, nets = zip(*paired_ratios(entry['results'], mine))
        lines.append('| %s | %s | %s | %s | %s | %s |' % (
            entry['name'], entry['mode'], mine['variant'], verdict(times, 1.0),
            verdict(peaks, PEAK_TARGETS[entry['mode']]), verdict(nets)))
        held += [max(times) <= 1.0, max(peaks) <= PEAK_TARGETS[entry['mode']]]
    if held:
        lines += ['', 'Met%s: %d of %d targets.' % (
            ' in every repeat' if record.get('repeats', 1) > 1 else '', sum(held), len(held))]
    return lines + ['']


# Columns of the profile table, in this order where present.
KINDS = ('3x3 convolutions', '1x1 convolutions', 'classifier', 'stem', 'element-wise', 'other')


def profile_table(record):
    """Markdown: where the profiled Caffe variant's time goes, per layer kind."""
    profiled = [(entry, r) for entry in record['records']
                for r in entry['results'].values() if r.get('profile')]
    if not profiled:
        return []
    found = {kind for _, r in profiled for kind in r['profile']}
    kinds = [k for k in KINDS if k in found] + sorted(found.difference(KINDS))
    lines = ['## Where Caffe\'s time goes', '',
             'Group 1\'s `%s`, after its timed passes: each layer timed alone through '
             'pycaffe (`Net._forward(i, i)`, `_backward(i, i)`), median of %d passes per '
             'layer; shares of the sum of the layers. Element-wise: %s.'
             % (REFERENCE, PROFILE_PASSES, ', '.join(ELEMENTWISE)), '',
             '| Case | Mode | sum of layers s | whole pass s | ' + ' | '.join(kinds) + ' |',
             '|---|---|---:|---:|' + '---:|' * len(kinds)]
    for entry, r in profiled:
        total = sum(r['profile'].values())
        lines.append('| %s | %s | %.3f | %.3f | %s |' % (
            entry['name'], entry['mode'], total, r['median'],
            ' | '.join('%.1f%%' % (100 * r['profile'].get(k, 0) / total) for k in kinds)))
    return lines + ['']


def gemm_table(gemm, threads):
    shapes = ['%dx%dx%d' % tuple(shape) for shape in gemm['shapes']]
    lines = ['## SGEMM of each BLAS installed (GFLOP/s, %d threads, best of 3)' % threads, '',
             'Shapes are rows x inner x columns: a large square one (the machine\'s '
             'measured peak), R101\'s res5 3x3 convolution at 505x505, its k5 '
             'classifier as im2col and as kn2row compute it.', '',
             '| BLAS | ' + ' | '.join(shapes) + ' |', '|---|' + '---:|' * len(shapes)]
    for name, rates in gemm['rates'].items():
        lines.append('| %s | %s |' % (name, ' | '.join('%.0f' % r for r in rates)))
    return lines + ['']


def select_groups(groups, variants=None):
    """`groups` cut to the `variants` named (default all), without a group
    that would only run again what an earlier one runs (the reference alone)."""
    names = sorted({v.name for group in groups for v in group})
    unknown = sorted(set(variants or []) - set(names))
    if unknown:
        raise UsageError('--variants: unknown %s; choose from %s' % (', '.join(unknown),
                                                                   ', '.join(names)))
    chosen, seen = [], set()
    for group in groups:
        group = [v for v in group if not variants or v.name in variants]
        if {v.name for v in group} - seen:
            chosen.append(group)
            seen.update(v.name for v in group)
    return chosen


def benchmark(out=None, cases=None, size=None, variants=None, warmup=1, runs=3, threads=None,
              gemm=True, torch_venv=None, force=False, repeats=3):
    """The whole benchmark: `cases` (indices into CASES, default all), each
    at `size` if given, with the `variants` named (default all), `warmup`
    and `runs` passes each, the whole run `repeats` times; with `gemm`,
    SGEMM of the installed BLAS builds on `threads`. Prints the report and,
    with `out`, writes it there and its JSON beside it."""
    if out:
        fileio.report_targets(out, TITLE, force)
    groups = select_groups(variant_groups(), variants)
    if runs < 1 or warmup < 0 or repeats < 1:
        raise UsageError('--runs and --repeats must be at least 1 and --warmup at least 0')
    cases = [CASES[i] for i in (range(len(CASES)) if cases is None else cases)]
    if size:
        cases = [dataclasses.replace(c, size=size) for c in cases]
    python = torch_python(torch_venv or default_torch_venv()) \
        if any(v.framework == 'torch' for group in groups for v in group) else None
    record = run(cases, groups, python, warmup, runs, threads=threads, gemm=gemm,
                 repeats=repeats)
    text = report(record)
    print(text)
    if out:
        fileio.atomic_write(os.path.splitext(out)[0] + '.json', json.dumps(record, indent=1))
        fileio.atomic_write(out, text)


def rewrite_report(record_path, force=False):
    """Rewrite the Markdown report beside `record_path` (an earlier run's
    JSON) from it, as `benchmark` writes it (after a change to the report)."""
    out = os.path.splitext(record_path)[0] + '.md'
    fileio.report_targets(out, TITLE, force, extra=())
    try:
        with open(record_path) as f:
            record = json.load(f)
    except (OSError, ValueError) as e:
        raise InputError('%s: cannot read it as JSON (%s)' % (record_path, e))
    if not isinstance(record, dict) or 'records' not in record:
        raise InputError('%s: not a record of scripts/bench_peers.py (no "records")'
                         % record_path)
    fileio.atomic_write(out, report(record))
    log.info('wrote %s', out)
