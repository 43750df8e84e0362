#!/usr/bin/env python3
"""Export a deploy net and its weights to ONNX, with batch normalisation folded.

  python scripts/export_onnx.py --net prototxt/voc/r101_s8_k5_d12/deploy.prototxt \\
      --weights fcrn.caffemodel --out fcrn.onnx --argmax

  # fixed input size (some runtimes and TensorRT profiles want one)
  python scripts/export_onnx.py --net deploy.prototxt --weights fcrn.caffemodel \\
      --out fcrn_512.onnx --size 512 512

The BN layers are folded into the convolutions as scripts/fold_bn.py folds them,
and the folded net is written with stock ONNX operators (opset 13). The input's
batch, height and width are dynamic unless --size fixes height and width. The
output is the blob "score" (else the net's outputs; --output picks blobs), plus
"label", the argmax over classes, with --argmax. Before the file is written,
onnxruntime runs it on a random input and its outputs must equal pycaffe's on the
original net within --tol (relative to the largest output value). An existing
--out is replaced only with --force, an input never.

Exit status: 0 written, 1 bad input (missing or unreadable file, a layer that
cannot be exported, weights that do not fit, outputs that disagree), 2 usage.
"""
import logging
import sys

from fcrn import cli
from fcrn.net.options import MAX_CROP

log = logging.getLogger("export_onnx")


def parse_args(argv=None):
    p = cli.parser(__doc__)
    side = cli.ranged(int, 1, MAX_CROP)  # beyond, Caffe aborts on the blob sizes
    p.add_argument("--net", required=True, help="deploy prototxt (TEST phase)")
    p.add_argument("--weights", required=True, help="trained caffemodel")
    p.add_argument("--out", required=True, help="ONNX model to write")
    p.add_argument("--output", action="append", metavar="BLOB",
                   help="blob to output (repeatable; default: score, else the net's outputs)")
    p.add_argument("--argmax", action="store_true",
                   help="add the output 'label': argmax over channels of the first output")
    p.add_argument("--size", type=side, nargs=2, metavar=("H", "W"),
                   help="fixed input height and width (default: dynamic)")
    p.add_argument("--verify-size", type=side, nargs=2, metavar=("H", "W"),
                   help="input size of the check (default: --size, else the deploy size)")
    p.add_argument("--no-verify", action="store_true", help="skip the check against pycaffe")
    p.add_argument("--tol", type=cli.positive_float, default=1e-4,
                   help="relative tolerance of the check")
    cli.add_force(p, "an existing output file", knows_its_own=False)
    cli.add_verbose(p)
    args = p.parse_args(argv)
    if args.size and args.verify_size and args.size != args.verify_size:
        p.error("--verify-size differs from the fixed --size")
    return args


def main(argv=None):
    args = parse_args(argv)

    def job():
        from fcrn import onnx_export  # imports onnx: only when a model is written
        result = onnx_export.export(args.net, args.weights, args.out, outputs=args.output,
                                    argmax=args.argmax, size=args.size,
                                    verify=not args.no_verify, verify_size=args.verify_size,
                                    tol=args.tol, force=args.force)
        into_conv = sum(f["conv"] is not None for f in result.folds)
        log.info("folded %d BN layer(s) into convolutions, %d into Scale; %d ONNX nodes",
                 into_conv, len(result.folds) - into_conv, result.nodes)
        if result.relative_error is not None:
            log.info("check: onnxruntime and pycaffe agree to %.2g relative",
                     result.relative_error)
        log.info("wrote %s (inputs %s, outputs %s)", args.out, ", ".join(result.inputs),
                 ", ".join(result.outputs))
    return cli.run(job, log.name, args.verbose)


if __name__ == "__main__":
    sys.exit(main())
