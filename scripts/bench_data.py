#!/usr/bin/env python3
"""Benchmark SegDataLayer: crops per second, and its share of an FCRN-50
training iteration (same net fed by an Input layer instead).

    python scripts/bench_data.py --out benchmarks/data.md

Synthetic data in a temporary directory: VOC-sized JPEGs (500x375, 321x321
crops) and Cityscapes-sized PNGs (2048x1024, 713x713 crops), written to LMDB
as for training. Images are smooth noise, so JPEG/PNG sizes and decode times
are near the real ones.
"""
import os
import sys

os.environ.setdefault("GLOG_minloglevel", "2")

from fcrn import cli  # noqa: E402
from tools.bench import data  # noqa: E402


def main(argv=None):
    ap = cli.parser(__doc__)
    ap.add_argument("--out", default=None, help="write the results table here (markdown)")
    ap.add_argument("--batches", type=cli.positive_int, default=60,
                    help="timed batches per crops/s figure")
    ap.add_argument("--iters", type=cli.nonnegative_int, default=3,
                    help="timed FCRN-50 iterations (0: skip)")
    ap.add_argument("--workers", type=cli.nonnegative_int, nargs="+", default=[0, 2],
                    help="the data layer's prefetching processes, one figure each")
    cli.add_force(ap, "a report")
    args = ap.parse_args(argv)
    return cli.run(lambda: data.measure(args.out, args.batches, args.iters, args.workers,
                                        args.force), "bench_data")


if __name__ == "__main__":
    sys.exit(main())
