#!/usr/bin/env python3
"""The FCRN in Caffe against the same network in PyTorch, on the CPU.

R50 and R101 at 1/8 (deploy nets of fcrn.net.netgen; torchvision's ResNet
made the same architecture), forward and forward + backward: time (median
of alternated runs, the whole run repeated with fresh processes, each
target judged repeat by repeat) and peak resident memory, for Caffe as
generated (blob memory shared), without sharing, and with one time lever undone or changed
(im2col and OpenBLAS instead of oneDNN, dilated convolutions without phases,
the element-wise layers on one thread, OpenBLAS's pthreads build), against
PyTorch in NCHW and channels_last; and SGEMM of each BLAS build installed.
PyTorch comes from PyPI into a virtual environment of its own, made on first
use (see requirements-peers.txt; a few GB).

  scripts/bench_peers.py --out benchmarks/peers.md
  scripts/bench_peers.py --cases 0 --runs 1 --warmup 0 --repeats 1 --size 97   # quick check
  scripts/bench_peers.py --report benchmarks/peers.json   # rewrite peers.md from it
"""
import logging
import os
import sys

from fcrn import cli
from fcrn.net.options import MAX_CROP
from tools.bench import peers

log = logging.getLogger('bench_peers')


def main(argv=None):
    parser = cli.parser(__doc__)
    parser.add_argument('--cases', type=int, nargs='+', choices=range(len(peers.CASES)),
                        default=list(range(len(peers.CASES))), metavar='N',
                        help='indices into: %s' % '; '.join(
                            '%d = %s' % (i, c.name) for i, c in enumerate(peers.CASES)))
    parser.add_argument('--size', type=cli.ranged(int, 1, MAX_CROP),
                        help='input size for every case (a quick check)')
    parser.add_argument('--variants', nargs='+', help='variant names (default: all)')
    parser.add_argument('--warmup', type=cli.nonnegative_int, default=1)
    parser.add_argument('--runs', type=cli.positive_int, default=3,
                        help='timed passes per variant and repeat (default: 3)')
    parser.add_argument('--repeats', type=cli.positive_int, default=3,
                        help='times the whole run is made, with fresh processes (default: 3)')
    parser.add_argument('--threads', type=cli.positive_int, default=os.cpu_count(),
                        help='threads of the SGEMM comparison (default: all cores)')
    parser.add_argument('--no-gemm', action='store_true',
                        help='skip the SGEMM comparison of the installed BLAS builds')
    parser.add_argument('--torch-venv', default=peers.default_torch_venv(),
                        help='virtual environment for PyTorch (made if missing)')
    parser.add_argument('--out', help='Markdown report (and .json beside it)')
    parser.add_argument('--report', metavar='JSON',
                        help='measure nothing: rewrite the Markdown report beside this JSON '
                             'of an earlier run (after a change to the report)')
    cli.add_force(parser, 'a report')
    args = parser.parse_args(argv)
    if args.report:
        return cli.run(lambda: peers.rewrite_report(args.report, args.force), log.name)
    return cli.run(lambda: peers.benchmark(
        args.out, args.cases, args.size, args.variants, args.warmup, args.runs, args.threads,
        not args.no_gemm, args.torch_venv, args.force, args.repeats), log.name)


if __name__ == '__main__':
    sys.exit(main())
