#!/usr/bin/env python3
"""Export a deploy net with its batch normalisation folded into the convolutions.

  python scripts/fold_bn.py --net prototxt/.../deploy.prototxt --weights fcrn.caffemodel \\
      --out-net deploy_folded.prototxt --out-weights fcrn_folded.caffemodel

Every LeanBatchNorm, and every BatchNorm with its Scale, after a convolution is
folded into that convolution's weights and bias; any other BN becomes one stock
Scale layer. The result uses only stock Caffe layers (it loads in OpenCV's DNN
module too), so a net with any other layer of this project, or a Python layer
(the _sim4 nets' shift), is refused. Before the files are put in place, both
nets run on the same random input and must agree within --tol (relative to the
largest output value). Existing outputs are replaced only with --force, the
inputs never.

Exit status: 0 written; 1 the net (a layer with no stock counterpart), its
weights or the check failed (the message names the layers); 2 usage (an
output exists, or is an input, or both outputs are one file).
"""
import logging
import sys

from fcrn import cli, fold
from fcrn.net.options import MAX_CROP

log = logging.getLogger("fold_bn")


def parse_args(argv=None):
    p = cli.parser(__doc__)
    side = cli.ranged(int, 1, MAX_CROP)  # beyond, Caffe aborts on the blob sizes
    p.add_argument("--net", required=True, help="deploy prototxt (TEST phase)")
    p.add_argument("--weights", required=True, help="trained caffemodel")
    p.add_argument("--out-net", required=True, help="folded deploy prototxt to write")
    p.add_argument("--out-weights", required=True, help="folded caffemodel to write")
    p.add_argument("--verify-size", type=side, nargs=2, metavar=("H", "W"),
                   help="input size of the check (default: the deploy input size)")
    p.add_argument("--no-verify", action="store_true", help="skip the equality check")
    p.add_argument("--tol", type=cli.positive_float, default=1e-4,
                   help="relative tolerance of the check")
    cli.add_force(p, "existing output files", knows_its_own=False)
    cli.add_verbose(p)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)

    def job():
        shape = False if args.no_verify else \
            (1, 3) + tuple(args.verify_size) if args.verify_size else None
        folds, err = fold.export(args.net, args.weights, args.out_net, args.out_weights,
                                 verify_shape=shape, tol=args.tol, force=args.force)
        into_conv = sum(f["conv"] is not None for f in folds)
        log.info("folded %d BN layer(s) into convolutions, %d into stock Scale layers",
                 into_conv, len(folds) - into_conv)
        if err is not None:
            log.info("check: folded and original outputs agree to %.2g relative", err)
        log.info("wrote %s and %s", args.out_net, args.out_weights)
    return cli.run(job, log.name, args.verbose)


if __name__ == "__main__":
    sys.exit(main())
