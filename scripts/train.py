#!/usr/bin/env python3
"""Train a net with `caffe train`, resuming from the last snapshot.

  # a paper variant from ImageNet weights (see convert_weights.py)
  python scripts/train.py --solver prototxt/voc/r101_s8_k5_d12_bs512/solver.prototxt \\
      --weights init/r101.caffemodel --gpu 0
  # interrupted? the same command resumes from the last snapshot

Run from the folder the solver's paths are relative to (the repository root
for the committed solvers). Beside the snapshots (or --log-prefix) it writes
PREFIX.log (Caffe's output, appended across resumes), PREFIX.csv and
PREFIX.json (iteration, loss, learning rate, test outputs) and PREFIX.png
(loss and learning rate). A loss that becomes NaN or infinite stops
training with the iteration named; exit status 1 then, as for any failure.
A damaged latest snapshot (cut short by a kill or a full disk) is named and
the one before it is resumed from. A second training with the same snapshot
prefix is refused while one runs (PREFIX.lock names its process).
"""
import logging
import sys

from fcrn import cli, train

log = logging.getLogger("train")


def parse_args(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("--solver", "-solver", required=True, help="solver prototxt")
    p.add_argument("--weights", "-weights",
                   help="initial weights (caffemodel); ignored when resuming")
    p.add_argument("--gpu", "-gpu", type=cli.nonnegative_int, metavar="N",
                   help="train on GPU N (CUDA build; the solver's mode otherwise)")
    p.add_argument("--log-prefix", help="where the log, CSV, JSON and plot go "
                   "(default: the solver's snapshot_prefix)")
    p.add_argument("--restart", action="store_true",
                   help="start from --weights (or the fillers) even if snapshots exist")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)

    def job():
        result = train.train(args.solver, args.weights, args.gpu, args.log_prefix,
                             progress=not args.quiet, resume=not args.restart)
        loss = ("last loss %.4g at iteration %d" % result.log.train_loss[-1][::-1]
                if result.log.train_loss else "no loss logged")
        log.info("finished at iteration %d (%s): %s; log, CSV, JSON and plot: %s.*",
                 result.iteration, loss, result.weights, result.files["log"][:-len(".log")])
    return cli.run(job, log.name)


if __name__ == "__main__":
    sys.exit(main())
