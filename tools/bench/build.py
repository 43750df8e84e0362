"""Caffe's build times (scripts/bench_build.py): scripts/build_caffe.sh from
scratch for each flavour, written to a report by `measure`."""
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
from tools import ROOT
from fcrn.errors import InputError

BUILD_CAFFE = os.path.join(ROOT, 'scripts', 'build_caffe.sh')
FLAVOURS = {'cpu': ('CPU (`make`)', []),
            'cuda': ('CUDA, cuDNN, NCCL, sm_90 (`make CUDA=1`)', ['--cuda']),
            'kit': ('GPU kit, sm_90 (`make gpu-kit`)', ['--kit'])}

log = logging.getLogger('bench_build')
TITLE = '# Caffe build times'


def cpu_name():
    with open('/proc/cpuinfo') as f:
        return re.search(r'model name\s*:\s*(.*)', f.read()).group(1)


def prefix(flags, cache=None):
    env = dict(os.environ, FCRN_CACHE_DIR=cache) if cache else None
    return subprocess.run(['bash', BUILD_CAFFE, '--print-prefix'] + flags, check=True,
                          capture_output=True, text=True, env=env).stdout.strip()


def run_build(flags, jobs, cache):
    started = time.time()
    subprocess.run(['bash', BUILD_CAFFE, '-j', str(jobs)] + flags, check=True,
                   env=dict(os.environ, FCRN_CACHE_DIR=cache),
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.time() - started


def time_build(flags, jobs, cache, sources):
    """Seconds of one build from scratch, and whether it was kept in `cache`."""
    if not os.path.exists(prefix(flags, cache)):
        return run_build(flags, jobs, cache), True
    with tempfile.TemporaryDirectory() as scratch:
        os.makedirs(os.path.join(scratch, 'debian-src'))
        for path in sources:
            shutil.copy(path, os.path.join(scratch, 'debian-src'))
        return run_build(flags, jobs, scratch), False


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
        seconds, kept = time_build(flags, jobs, cache, sources)
        results.append(dict(build=name, flags=flags, seconds=seconds, kept=kept))
        log.info('%s: %.0f s%s', name, seconds, ' (kept in %s)' % cache if kept else '')
    machine = '%s, %d cores, %d jobs' % (cpu_name(), os.cpu_count(), jobs)
    lines = [TITLE, '',
             'Machine: %s. Produced by `scripts/bench_build.py`: `scripts/build_caffe.sh` '
             'from the unpacked Debian source to an installed prefix, wall clock, nothing '
             'reused.' % machine,
             '', '| build | minutes |', '|---|---:|']
    lines += ['| %s | %.1f |' % (r['build'], r['seconds'] / 60) for r in results]
    fileio.atomic_write(md, '\n'.join(lines) + '\n')
    fileio.atomic_write(js, json.dumps(dict(machine=machine, python=platform.python_version(),
                                            results=results), indent=1) + '\n')

