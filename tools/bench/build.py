"""Times scripts/build_caffe.sh from scratch for each Caffe the project builds
(CPU, CUDA with cuDNN and NCCL, the GPU kit's) and writes benchmarks/build.md.

Every build starts from the unpacked Debian source with nothing reused. A
build whose prefix the real cache lacks goes there, so that the timed build
is the one a later `make` uses; one the cache already has is redone in a
fresh cache folder (the Debian source package copied from the real cache, so
nothing is downloaded) that is removed afterwards. Run it on an idle
machine: the figures are wall-clock times.

    python scripts/bench_build.py --out benchmarks/build.md
    python scripts/bench_build.py --out /tmp/build.md --flavour cuda
"""
import glob
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time

from fcrn import cli, fileio
from fcrn.errors import InputError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
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


def main(argv=None):
    parser = cli.parser(__doc__)
    parser.add_argument('--out', required=True, help='Markdown file; a .json beside it')
    parser.add_argument('--flavour', action='append', choices=sorted(FLAVOURS),
                        help='a build to time (repeatable; default: all three)')
    parser.add_argument('--jobs', type=cli.positive_int, default=os.cpu_count(),
                        help='parallel compile jobs (default: the CPUs)')
    cli.add_force(parser, 'a report')
    args = parser.parse_args(argv)
    return cli.run(lambda: measure(args), log.name)


def measure(args):
    md, js = fileio.report_targets(args.out, TITLE, args.force)
    cache = os.path.dirname(prefix([]))
    sources = glob.glob(os.path.join(cache, 'debian-src', 'caffe_*'))
    if not sources:
        raise InputError('no Debian source package in %s/debian-src; run `make` once' % cache)
    results = []
    for key in args.flavour or FLAVOURS:
        name, flags = FLAVOURS[key]
        log.info('building %s', name)
        seconds, kept = time_build(flags, args.jobs, cache, sources)
        results.append(dict(build=name, flags=flags, seconds=seconds, kept=kept))
        log.info('%s: %.0f s%s', name, seconds, ' (kept in %s)' % cache if kept else '')
    machine = '%s, %d cores, %d jobs' % (cpu_name(), os.cpu_count(), args.jobs)
    lines = [TITLE, '',
             'Machine: %s. Produced by `scripts/bench_build.py`: `scripts/build_caffe.sh` '
             'from the unpacked Debian source to an installed prefix, wall clock, nothing '
             'reused.' % machine,
             '', '| build | minutes |', '|---|---:|']
    lines += ['| %s | %.1f |' % (r['build'], r['seconds'] / 60) for r in results]
    fileio.atomic_write(md, '\n'.join(lines) + '\n')
    fileio.atomic_write(js, json.dumps(dict(machine=machine, python=platform.python_version(),
                                            results=results), indent=1) + '\n')


if __name__ == '__main__':
    sys.exit(main())
