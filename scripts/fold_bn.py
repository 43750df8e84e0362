#!/usr/bin/env python3
"""Export a deploy net with its batch normalisation folded into the convolutions.

  python scripts/fold_bn.py --net prototxt/.../deploy.prototxt --weights fcrn.caffemodel \\
      --out-net deploy_folded.prototxt --out-weights fcrn_folded.caffemodel

Every LeanBatchNorm, and every BatchNorm with its Scale, after a convolution is
folded into that convolution's weights and bias; any other BN becomes one stock
Scale layer. The result uses only stock Caffe layers (it loads in OpenCV's DNN
module too). Before the files are put in place, both nets run on the same random
input and must agree within --tol (relative to the largest output value).

Exit status: 0 written, 1 the folded net disagrees, 2 the net or its weights
cannot be folded (the message names the layers).
"""
import argparse
import logging
import sys

log = logging.getLogger("fold_bn")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--net", required=True, help="deploy prototxt (TEST phase)")
    p.add_argument("--weights", required=True, help="trained caffemodel")
    p.add_argument("--out-net", required=True, help="folded deploy prototxt to write")
    p.add_argument("--out-weights", required=True, help="folded caffemodel to write")
    p.add_argument("--verify-size", type=int, nargs=2, metavar=("H", "W"),
                   help="input size of the check (default: the deploy input size)")
    p.add_argument("--no-verify", action="store_true", help="skip the equality check")
    p.add_argument("--tol", type=float, default=1e-4, help="relative tolerance of the check")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    import fcrn  # noqa: F401  (registers LeanBatchNorm before any caffe.Net)
    from fcrn import fold

    shape = None
    if args.no_verify:
        shape = False
    elif args.verify_size:
        shape = (1, 3) + tuple(args.verify_size)
    try:
        folds, err = fold.export(args.net, args.weights, args.out_net, args.out_weights,
                                 verify_shape=shape, tol=args.tol)
    except fold.FoldError as e:
        log.error("%s", e)
        return 1 if "differs from the original" in str(e) else 2
    into_conv = sum(f["conv"] is not None for f in folds)
    log.info("folded %d BN layer(s) into convolutions, %d into stock Scale layers",
             into_conv, len(folds) - into_conv)
    if err is not None:
        log.info("check: folded and original outputs agree to %.2g relative", err)
    log.info("wrote %s and %s", args.out_net, args.out_weights)
    return 0


if __name__ == "__main__":
    sys.exit(main())
