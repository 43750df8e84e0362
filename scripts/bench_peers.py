#!/usr/bin/env python3
"""The FCRN in Caffe against the same network in PyTorch, on the CPU.

R50 and R101 at 1/8 (deploy nets of fcrn.net.netgen; torchvision's ResNet
made the same architecture), forward and forward + backward: time (median
of alternated runs) and peak resident memory, for Caffe as built, with
share_memory, and with one time lever undone or changed (im2col and
OpenBLAS instead of oneDNN, the element-wise layers on one thread,
OpenBLAS's OpenMP build), against PyTorch in NCHW and channels_last; and
SGEMM of each BLAS build installed. PyTorch comes from PyPI into a virtual environment of
its own, made on first use (see requirements-peers.txt; a few GB).

  scripts/bench_peers.py --out benchmarks/peers.md
  scripts/bench_peers.py --cases 0 --runs 1 --warmup 0 --size 97   # quick check
"""
import dataclasses
import json
import logging
import os
import sys
import tempfile

from fcrn import cli, fileio
from tools.bench import peers
from fcrn.errors import UsageError

log = logging.getLogger('bench_peers')


def main(argv=None):
    parser = cli.parser(__doc__)
    parser.add_argument('--cases', type=int, nargs='+', choices=range(len(peers.CASES)),
                        default=list(range(len(peers.CASES))), metavar='N',
                        help='indices into: %s' % '; '.join(
                            '%d = %s' % (i, c.name) for i, c in enumerate(peers.CASES)))
    parser.add_argument('--size', type=int, help='input size for every case (a quick check)')
    parser.add_argument('--variants', nargs='+', help='variant names (default: all)')
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--runs', type=int, default=7)
    parser.add_argument('--threads', type=int, default=os.cpu_count(),
                        help='threads of the SGEMM comparison (default: all cores)')
    parser.add_argument('--no-gemm', action='store_true',
                        help='skip the SGEMM comparison of the installed BLAS builds')
    parser.add_argument('--torch-venv', default=peers.default_torch_venv(),
                        help='virtual environment for PyTorch (made if missing)')
    parser.add_argument('--out', help='Markdown report (and .json beside it)')
    cli.add_force(parser, 'a report')
    args = parser.parse_args(argv)
    return cli.run(lambda: bench(args), log.name)


def bench(args):
    if args.out:
        fileio.report_targets(args.out, peers.TITLE, args.force)
    groups = peers.variant_groups()
    names = sorted({v.name for group in groups for v in group})
    unknown = sorted(set(args.variants or []) - set(names))
    if unknown:
        raise UsageError('--variants: unknown %s; choose from %s' % (', '.join(unknown),
                                                                   ', '.join(names)))
    groups = [[v for v in group if not args.variants or v.name in args.variants]
              for group in groups]
    groups = [group for group in groups if group]
    if args.runs < 1 or args.warmup < 0:
        raise UsageError('--runs must be at least 1 and --warmup at least 0')
    cases = [peers.CASES[i] for i in args.cases]
    if args.size:
        cases = [dataclasses.replace(c, size=args.size) for c in cases]
    torch_python = peers.torch_python(args.torch_venv) \
        if any(v.framework == 'torch' for group in groups for v in group) else None
    with tempfile.TemporaryDirectory() as tmp:
        record = peers.run(cases, groups, torch_python, args.warmup, args.runs, tmp,
                           threads=args.threads, gemm=not args.no_gemm)
    text = peers.report(record)
    print(text)
    if args.out:
        fileio.atomic_write(os.path.splitext(args.out)[0] + '.json',
                            json.dumps(record, indent=1))
        fileio.atomic_write(args.out, text)
    return 0


if __name__ == '__main__':
    sys.exit(main())
