#!/usr/bin/env python3
"""Export a deploy net and its weights to ONNX, with batch normalisation folded.

  python scripts/export_onnx.py --net prototxt/voc/r101_s8_k5_d12/deploy.prototxt \\
      --weights fcrn.caffemodel --out fcrn.onnx --argmax

The BN layers are folded into the convolutions as scripts/fold_bn.py folds them,
and the folded net is written with stock ONNX operators (opset 13). The input's
batch, height and width are dynamic unless --size fixes height and width. The
output is the blob "score" (else the net's outputs; --output picks blobs), plus
"label", the argmax over classes, with --argmax. Before the file is written,
onnxruntime runs it on a random input and its outputs must equal pycaffe's on the
original net within --tol (relative to the largest output value).

Exit status: 0 written, 1 bad input (missing or unreadable file, a layer that
cannot be exported, weights that do not fit, outputs that disagree), 2 usage
(including an existing --out without --force).
"""
import argparse
import logging
import os
import sys

log = logging.getLogger("export_onnx")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--net", required=True, help="deploy prototxt (TEST phase)")
    p.add_argument("--weights", required=True, help="trained caffemodel")
    p.add_argument("--out", required=True, help="ONNX model to write")
    p.add_argument("--output", action="append", metavar="BLOB",
                   help="blob to output (repeatable; default: score, else the net's outputs)")
    p.add_argument("--argmax", action="store_true",
                   help="add the output 'label': argmax over channels of the first output")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"),
                   help="fixed input height and width (default: dynamic)")
    p.add_argument("--verify-size", type=int, nargs=2, metavar=("H", "W"),
                   help="input size of the check (default: --size, else the deploy size)")
    p.add_argument("--no-verify", action="store_true", help="skip the check against pycaffe")
    p.add_argument("--tol", type=float, default=1e-4, help="relative tolerance of the check")
    p.add_argument("--force", action="store_true", help="overwrite an existing --out")
    args = p.parse_args(argv)
    for name in ("size", "verify_size"):
        if getattr(args, name) and min(getattr(args, name)) < 1:
            p.error("--%s must be positive" % name.replace("_", "-"))
    if args.size and args.verify_size and args.size != args.verify_size:
        p.error("--verify-size differs from the fixed --size")
    if os.path.exists(args.out) and not args.force:
        p.error("%s exists; use --force to overwrite" % args.out)
    return args


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("GLOG_minloglevel", "2")
    import fcrn  # noqa: F401  (registers LeanBatchNorm before any caffe.Net)
    from fcrn import onnx_export

    try:
        result = onnx_export.export(args.net, args.weights, args.out, outputs=args.output,
                                    argmax=args.argmax, size=args.size,
                                    verify=not args.no_verify, verify_size=args.verify_size,
                                    tol=args.tol)
    except onnx_export.ExportError as e:
        log.error("%s", e)
        return 1
    into_conv = sum(f["conv"] is not None for f in result.folds)
    log.info("folded %d BN layer(s) into convolutions, %d into Scale; %d ONNX nodes",
             into_conv, len(result.folds) - into_conv, result.nodes)
    if result.relative_error is not None:
        log.info("check: onnxruntime and pycaffe agree to %.2g relative", result.relative_error)
    log.info("wrote %s (inputs %s, outputs %s)", args.out, ", ".join(result.inputs),
             ", ".join(result.outputs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
