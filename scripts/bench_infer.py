#!/usr/bin/env python3
"""Inference benchmarks: whole pipeline against the bare forward, folded against
unfolded BN, pycaffe against OpenCV DNN and onnxruntime, FLOPs and achieved GFLOP/s.

  python scripts/bench_infer.py --net prototxt/voc/r50_s8_k5_d12/deploy.prototxt \\
      --size 321 321 --images 8 --out benchmarks/infer.md

Without --weights the net gets random He-initialised weights and random BN
statistics (speed does not depend on the values; folding is checked on them).
The forward times of pycaffe (unfolded and folded), OpenCV DNN (the folded
Caffe net) and onnxruntime (the ONNX model that scripts/export_onnx.py writes,
CPU provider, one intra-op thread per CPU this process may use, as OpenBLAS
uses) are each the best of --repeat forwards of the same input after a warm-up.
The machine's peak is measured, not estimated: SGEMM on 2048x2048 matrices
through the BLAS library Caffe loaded, with the same threads and OpenBLAS's
own kernel choice (the convolutions run in oneDNN, whatever kernels the
environment pins OpenBLAS to).
"""
import os
import sys

from fcrn import cli
from tools.bench import infer


def parse_args(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("--net", required=True, help="deploy prototxt")
    p.add_argument("--weights", help="caffemodel (default: random weights)")
    p.add_argument("--size", type=cli.positive_int, nargs=2, default=[321, 321],
                   metavar=("H", "W"))
    p.add_argument("--images", type=cli.positive_int, default=8, help="images per measurement")
    p.add_argument("--repeat", type=cli.positive_int, default=2, help="best of this many runs")
    p.add_argument("--gpu", type=cli.nonnegative_int, help="GPU id (CUDA build)")
    p.add_argument("--out", default="benchmarks/infer.md", help="Markdown report (+ .json)")
    p.add_argument("--note", help="a line about the conditions, added to the report")
    cli.add_force(p, "a report")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("GLOG_minloglevel", "2")
    return cli.run(lambda: infer.run(args.out, args.force, prototxt=args.net,
                                     weights=args.weights, size=args.size,
                                     images=args.images, repeat=args.repeat, gpu=args.gpu,
                                     note=args.note), "bench_infer")


if __name__ == "__main__":
    sys.exit(main())
