"""Build times. `measure` (scripts/bench_build.py): scripts/build_caffe.sh
from scratch for each Caffe flavour. `measure_clone` (scripts/bench_clone.py):
a fresh clone to green, phase by phase, as CI goes."""
import glob
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import tempfile
import time

from fcrn import fileio
from tools import ROOT, bench
from fcrn.errors import InputError

BUILD_CAFFE = os.path.join(ROOT, 'scripts', 'build_caffe.sh')
FLAVOURS = {'cpu': ('CPU (`make`)', []),
            'cuda': ('CUDA, cuDNN, NCCL, sm_90 (`make CUDA=1`)', ['--cuda']),
            'kit': ('GPU kit, sm_90 (`make gpu-kit`)', ['--kit'])}

log = logging.getLogger('bench_build')
TITLE = '# Caffe build times'


def prefix(flags, cache=None):
    env = dict(os.environ, FCRN_CACHE_DIR=cache) if cache else None
    return subprocess.run(['bash', BUILD_CAFFE, '--print-prefix'] + flags, check=True,
                          capture_output=True, text=True, env=env).stdout.strip()


def run_build(flags, jobs, cache):
    """(seconds, load averages at the start and the end) of one build."""
    load, started = os.getloadavg(), time.time()
    subprocess.run(['bash', BUILD_CAFFE, '-j', str(jobs)] + flags, check=True,
                   env=dict(os.environ, FCRN_CACHE_DIR=cache),
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.time() - started, [load[0], os.getloadavg()[0]]


def time_build(flags, jobs, sources):
    """One flavour in a fresh cache folder (the Debian source package copied
    in, so nothing is downloaded): built from nothing, then, its prefix
    removed, built again with the compile cache that the first build filled
    (a rebuild after a change that reaches no compiled file)."""
    with tempfile.TemporaryDirectory() as scratch:
        os.makedirs(os.path.join(scratch, 'debian-src'))
        for path in sources:
            shutil.copy(path, os.path.join(scratch, 'debian-src'))
        seconds, load = run_build(flags, jobs, scratch)
        shutil.rmtree(prefix(flags, scratch))
        again, load_again = run_build(flags, jobs, scratch)
    return dict(seconds=seconds, load=load, rebuild_seconds=again, rebuild_load=load_again)


def measure(out, flavours=None, jobs=None, force=False):
    """Time each of `flavours` (default: all of FLAVOURS) with `jobs` compile
    jobs (default: the CPUs); the report goes to `out`, its JSON beside it."""
    jobs = jobs or os.cpu_count()
    md, js = fileio.report_targets(out, TITLE, force)
    cache = os.path.dirname(prefix([]))
    sources = glob.glob(os.path.join(cache, 'debian-src', 'caffe_*'))
    if not sources:
        raise InputError('no Debian source package in %s/debian-src; run `make` once' % cache)
    results = []
    for key in flavours or FLAVOURS:
        name, flags = FLAVOURS[key]
        log.info('building %s', name)
        result = dict(build=name, flags=flags, **time_build(flags, jobs, sources))
        results.append(result)
        log.info('%s: %.0f s, again with the compile cache %.0f s', name, result['seconds'],
                 result['rebuild_seconds'])
    machine = '%s, %d jobs' % (bench.machine(), jobs)
    lines = [TITLE, '',
             'Machine: %s. Produced by `scripts/bench_build.py`: `scripts/build_caffe.sh` '
             'from the unpacked Debian source to an installed prefix, wall clock, in a fresh '
             'cache folder; then the same build again, its prefix removed, with the compile '
             'cache (ccache) the first one filled. The load average (1 min) at the start and '
             'the end of each says how busy the machine was.' % machine,
             '', '| build | from nothing, minutes | load | again with ccache, minutes | load |',
             '|---|---:|---|---:|---|']
    lines += ['| %s | %.1f | %.1f-%.1f | %.1f | %.1f-%.1f |' % (
        r['build'], r['seconds'] / 60, r['load'][0], r['load'][1], r['rebuild_seconds'] / 60,
        r['rebuild_load'][0], r['rebuild_load'][1]) for r in results]
    fileio.atomic_write(md, '\n'.join(lines) + '\n')
    fileio.atomic_write(js, json.dumps(dict(machine=machine, python=platform.python_version(),
                                            results=results), indent=1) + '\n')


CLONE_TITLE = '# From a fresh clone to green'
WITHOUT_CUDA = ['.ci/without-cuda']
# .ci/run's steps, one make target at a time so that each phase is timed on
# its own: `make test` without nvcc, then the GPU kit and its checks with it.
CLONE_PHASES = (
    ('Debian packages (`make deps`)', WITHOUT_CUDA + ['make', 'deps']),
    ('CPU Caffe from the Debian source (`make caffe`)', WITHOUT_CUDA + ['make', 'caffe']),
    ('FCRN layers, C++ tests (`make layers`)', WITHOUT_CUDA + ['make', 'layers']),
    ('Python environment (`make venv`)', WITHOUT_CUDA + ['make', 'venv']),
    ('C++ tests (`make test-cpp`)', WITHOUT_CUDA + ['make', 'test-cpp']),
    ('Python tests (`make test-python`)', WITHOUT_CUDA + ['make', 'test-python']),
    ('nvcc: CUDA compile check of the layers (`make layers`)', ['make', 'layers']),
    ('nvcc: the GPU kit\'s Caffe (`scripts/build_caffe.sh --kit`)',
     ['scripts/build_caffe.sh', '--kit']),
    ('nvcc: the GPU kit (`make gpu-kit`)', ['make', 'gpu-kit']),
    ('nvcc: the kit\'s checks (`make test-python TESTS=tests/test_gpu_kit.py`)',
     ['make', 'test-python', 'TESTS=tests/test_gpu_kit.py']),
)
# The last line of a test run that says what ran: pytest's and ctest's summaries.
SUMMARY = re.compile(r'^(=* ?\d+ (passed|failed).*|\d+% tests passed.*)$', re.M)


def run_phase(command, cwd, env, log_path):
    """(seconds, load averages at the start and the end, test summaries) of
    one phase; its output goes to `log_path`. A failure raises InputError
    naming the command and the log."""
    load, started = os.getloadavg(), time.time()
    with open(log_path, 'w') as log_file:
        code = subprocess.run(command, cwd=cwd, env=env, stdout=log_file,
                              stderr=subprocess.STDOUT).returncode
    seconds = time.time() - started
    with open(log_path, errors='replace') as f:
        output = f.read()
    summaries = [m.group(0).strip('= ') for m in SUMMARY.finditer(output)] or \
        ([] if output else ['printed nothing'])
    if code:
        raise InputError('`%s` failed (exit %d) after %.0f s; its output: %s'
                         % (' '.join(command), code, seconds, log_path))
    return seconds, [load[0], os.getloadavg()[0]], summaries


def clone_env(cache, repo):
    """The environment of a bare machine's first run: the project's cache
    folder (Caffe prefixes, the Debian source, ccache) empty, pip's cache off,
    and nothing of `repo`'s build (scripts/env.sh's venv and PATH) in it."""
    inside = os.path.realpath(repo) + os.sep
    env = {k: v for k, v in os.environ.items()
           if not k.startswith('FCRN_') and k not in ('CCACHE_DIR', 'VIRTUAL_ENV', 'PYTHONPATH')}
    env['PATH'] = os.pathsep.join(d for d in env.get('PATH', '').split(os.pathsep)
                                  if not (os.path.realpath(d) + os.sep).startswith(inside))
    env.update(FCRN_CACHE_DIR=cache, PIP_NO_CACHE_DIR='1')
    return env


def clone_report(machine, commit, results):
    total = sum(r['seconds'] for r in results)
    lines = [CLONE_TITLE, '',
             'Machine: %s. Produced by `scripts/bench_clone.py` at commit %s: a fresh clone, '
             'with the project\'s cache folder empty (no Caffe prefix, no Debian source, no '
             'compile cache) and pip\'s cache off, taken through the steps of `.ci/run` one '
             'make target at a time; wall clock, with the load average (1 min) at the start '
             'and the end of each phase. `make deps` installs only the Debian packages that '
             'are missing and prints nothing when none is: then it is only their check.'
             % (machine, commit), '',
             '| phase | minutes | share | load | what ran |', '|---|---:|---:|---|---|']
    lines += ['| %s | %.1f | %.0f%% | %.1f-%.1f | %s |' % (
        r['phase'], r['seconds'] / 60, 100 * r['seconds'] / total, r['load'][0], r['load'][1],
        '; '.join(r['summaries'])) for r in results]
    lines += ['| **total** | **%.1f** | | | |' % (total / 60)]
    return '\n'.join(lines) + '\n'


def measure_clone(out, force=False, phases=CLONE_PHASES, repo=ROOT, keep=None):
    """Clone `repo` (its HEAD) into a scratch folder and run `phases` there in
    turn, timing each; the report goes to `out`, its JSON beside it. `keep`:
    a folder for the clone, the cache and the logs, kept afterwards."""
    md, js = fileio.report_targets(out, CLONE_TITLE, force)
    if keep and os.path.lexists(keep):
        raise InputError('%s exists; --keep names a new folder' % keep)
    commit = bench.commit(repo, changes=False)  # a clone takes HEAD alone
    scratch = keep or tempfile.mkdtemp(prefix='fcrn-clone-')
    work, cache, logs = (os.path.join(scratch, name) for name in ('fcrn', 'cache', 'logs'))
    os.makedirs(logs)
    subprocess.run(['git', 'clone', '-q', repo, work], check=True)
    env, results = clone_env(cache, repo), []
    for i, (phase, command) in enumerate(phases):
        log.info('%s: %s', phase, ' '.join(command))
        # A failure leaves the scratch folder for its log.
        seconds, load, summaries = run_phase(command, work, env,
                                             os.path.join(logs, '%02d.log' % i))
        results.append(dict(phase=phase, command=command, seconds=seconds, load=load,
                            summaries=summaries))
        log.info('%s: %.0f s %s', phase, seconds, '; '.join(summaries))
    if not keep:
        shutil.rmtree(scratch, ignore_errors=True)
    machine = bench.machine()
    fileio.atomic_write(md, clone_report(machine, commit, results))
    fileio.atomic_write(js, json.dumps(dict(machine=machine, commit=commit, results=results),
                                       indent=1) + '\n')
    return results
