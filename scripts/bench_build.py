"""Times scripts/build_caffe.sh from scratch for each Caffe the project builds
(CPU, CUDA with cuDNN and NCCL, the GPU kit's) and writes benchmarks/build.md.

Each build goes into a fresh cache folder (the Debian source package is
copied from the real cache, so nothing is downloaded) that is removed
afterwards. Run it on an idle machine: the figures are wall-clock times.

    python scripts/bench_build.py --out benchmarks/build.md
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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD_CAFFE = os.path.join(ROOT, 'scripts', 'build_caffe.sh')
FLAVOURS = (('CPU (`make`)', []), ('CUDA, cuDNN, NCCL, sm_90 (`make CUDA=1`)', ['--cuda']),
            ('GPU kit, sm_90 (`make gpu-kit`)', ['--kit']))

log = logging.getLogger('bench_build')
TITLE = '# Caffe build times'


def cpu_name():
    with open('/proc/cpuinfo') as f:
        return re.search(r'model name\s*:\s*(.*)', f.read()).group(1)


def time_build(flags, jobs, sources):
    with tempfile.TemporaryDirectory() as cache:
        os.makedirs(os.path.join(cache, 'debian-src'))
        for path in sources:
            shutil.copy(path, os.path.join(cache, 'debian-src'))
        started = time.time()
        subprocess.run(['bash', BUILD_CAFFE, '-j', str(jobs)] + flags, check=True,
                       env=dict(os.environ, FCRN_CACHE_DIR=cache),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return time.time() - started


def main(argv=None):
    parser = cli.parser(__doc__)
    parser.add_argument('--out', required=True, help='Markdown file; a .json beside it')
    parser.add_argument('--jobs', type=cli.positive_int, default=os.cpu_count(),
                        help='parallel compile jobs (default: the CPUs)')
    cli.add_force(parser, 'a report')
    args = parser.parse_args(argv)
    return cli.run(lambda: measure(args), log.name)


def measure(args):
    md, js = fileio.report_targets(args.out, TITLE, args.force)
    cache = os.path.dirname(subprocess.run(['bash', BUILD_CAFFE, '--print-prefix'], check=True,
                                           capture_output=True, text=True).stdout.strip())
    sources = glob.glob(os.path.join(cache, 'debian-src', 'caffe_*'))
    if not sources:
        raise InputError('no Debian source package in %s/debian-src; run `make` once' % cache)
    results = []
    for name, flags in FLAVOURS:
        log.info('building %s', name)
        results.append(dict(build=name, flags=flags, seconds=time_build(flags, args.jobs, sources)))
        log.info('%s: %.0f s', name, results[-1]['seconds'])
    machine = '%s, %d cores, %d jobs' % (cpu_name(), os.cpu_count(), args.jobs)
    lines = [TITLE, '',
             'Machine: %s. Produced by `scripts/bench_build.py`: `scripts/build_caffe.sh` from '
             'the unpacked Debian source to an installed prefix, wall clock, fresh cache.' % machine,
             '', '| build | minutes |', '|---|---:|']
    lines += ['| %s | %.1f |' % (r['build'], r['seconds'] / 60) for r in results]
    fileio.atomic_write(md, '\n'.join(lines) + '\n')
    fileio.atomic_write(js, json.dumps(dict(machine=machine, python=platform.python_version(),
                                            results=results), indent=1) + '\n')


if __name__ == '__main__':
    sys.exit(main())
