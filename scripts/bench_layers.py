#!/usr/bin/env python3
"""Benchmarks of the C++ layers against the stock Caffe layers they replace.

1. BootstrappedSoftmaxWithLoss (min_kept 512, threshold 0) against
   SoftmaxWithLoss: forward + backward time on VOC-like and Cityscapes-like
   score maps.
2. LeanBatchNorm against BatchNorm + Scale, in place, on one blob: the memory
   each allocates beyond its input (data and diff), measured as the growth of
   the peak resident set of a fresh process over a net without the layer, and
   the forward + backward time, frozen (use_global_stats) and with batch
   statistics.

Usage: python scripts/bench_layers.py --out benchmarks/layers.md
"""
import sys

from fcrn import cli
from tools.bench import layers


def main(argv=None):
    parser = cli.parser(__doc__)
    parser.add_argument("--out", default="benchmarks/layers.md", help="Markdown report")
    parser.add_argument("--repeats", type=cli.positive_int, default=20,
                        help="timed iterations")
    cli.add_force(parser, "a report")
    args = parser.parse_args(argv)
    return cli.run(lambda: layers.run(args.out, args.repeats, args.force), "bench_layers")


if __name__ == "__main__":
    sys.exit(main())
