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
    machine = '%s, %d cores, %d jobs' % (cpu_name(), os.cpu_count(), jobs)
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
