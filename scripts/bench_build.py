#!/usr/bin/env python3
"""Times scripts/build_caffe.sh from scratch for each Caffe the project builds
(CPU, CUDA with cuDNN and NCCL, the GPU kit's) and writes benchmarks/build-caffe.md.

Every build starts from the unpacked Debian source with nothing reused, in a
fresh cache folder (the Debian source package copied from the real cache, so
nothing is downloaded) that is removed afterwards; then the same build runs
again, its prefix removed, with the compile cache (ccache) the first one
filled. Run it on an idle machine: the figures are wall-clock times.

    python scripts/bench_build.py --out benchmarks/build-caffe.md
    python scripts/bench_build.py --out /tmp/build.md --flavour cuda
"""
import os
import sys

from fcrn import cli
from tools.bench import build


def main(argv=None):
    parser = cli.parser(__doc__)
    parser.add_argument('--out', required=True, help='Markdown file; a .json beside it')
    parser.add_argument('--flavour', action='append', choices=sorted(build.FLAVOURS),
                        help='a build to time (repeatable; default: all three)')
    parser.add_argument('--jobs', type=cli.positive_int, default=os.cpu_count(),
                        help='parallel compile jobs (default: the CPUs)')
    cli.add_force(parser, 'a report')
    args = parser.parse_args(argv)
    return cli.run(lambda: build.measure(args.out, args.flavour, args.jobs, args.force),
                   'bench_build')


if __name__ == '__main__':
    sys.exit(main())
