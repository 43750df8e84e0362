#!/usr/bin/env python3
"""Times a fresh clone to green, phase by phase, and writes benchmarks/build.md.

Clones this checkout's HEAD into a scratch folder and takes it through the
steps of .ci/run one make target at a time (Debian packages, the CPU Caffe,
the layers, the Python environment, the C++ and Python tests without nvcc;
then with nvcc the layers' CUDA check, the GPU kit's Caffe, the kit and its
checks), with the project's cache folder empty and pip's cache off, as on a
machine's first run. Run it on an idle machine: the figures are wall-clock
times (26 minutes on the 2-core Xeon, 42 on the Zen 1 machine). A failed phase stops the
run and names its log; no report is written then.

    python scripts/bench_clone.py --out benchmarks/build.md
"""
import sys

from fcrn import cli
from tools.bench import build


def main(argv=None):
    parser = cli.parser(__doc__)
    parser.add_argument('--out', required=True, help='Markdown file; a .json beside it')
    parser.add_argument('--keep', metavar='DIR',
                        help='a new folder for the clone, its cache and the phase logs, kept '
                             '(default: a scratch folder, removed)')
    cli.add_force(parser, 'a report')
    args = parser.parse_args(argv)
    return cli.run(lambda: build.measure_clone(args.out, args.force, keep=args.keep),
                   'bench_clone')


if __name__ == '__main__':
    sys.exit(main())
