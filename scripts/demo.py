#!/usr/bin/env python3
"""Train and evaluate a small FCRN end to end on a synthetic dataset (`make demo`).

    python scripts/demo.py --out work/demo            # about 6 minutes on 2 CPU cores
    python scripts/demo.py --out /tmp/q --quick       # tiny: checks the plumbing

Makes a synthetic PASCAL VOC tree, prepares it as scripts/prepare_voc.py does,
generates an FCRN-50 with bootstrapping as scripts/make_net.py does, trains it
from random weights with `caffe train -solver` as scripts/train.py does,
segments and scores the held-out images as scripts/infer.py and
scripts/evaluate.py do, plots the training log and writes OUT/summary.md. A
rerun skips finished steps and resumes an interrupted training from its last
snapshot.
"""
import dataclasses
import logging
import os
import sys
import time

os.environ.setdefault("GLOG_minloglevel", "2")  # pycaffe's INFO lines would bury the progress

from fcrn import cli, demo  # noqa: E402

log = logging.getLogger("demo")
# The bootstrapping benchmark's result (make bench-bootstrap), which the summary quotes.
BENCHMARK = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                         'benchmarks', 'bootstrap.json')


def main(argv=None):
    defaults = demo.Config()
    ap = cli.parser(__doc__)
    ap.add_argument('--out', required=True, help='run folder (created; reused by a rerun)')
    ap.add_argument('--quick', action='store_true',
                    help='tiny dataset and %d iterations: a plumbing check, not a result'
                    % demo.QUICK['max_iter'])
    ap.add_argument('--max-iter', type=cli.positive_int,
                    help='training iterations (default %d)' % defaults.max_iter)
    ap.add_argument('--train-images', type=cli.positive_int,
                    help='synthetic training images (default %d)' % defaults.train_images)
    ap.add_argument('--val-images', type=cli.positive_int,
                    help='synthetic held-out images (default %d)' % defaults.val_images)
    args = ap.parse_args(argv)
    overrides = dict(demo.QUICK) if args.quick else {}
    for field in ('max_iter', 'train_images', 'val_images'):
        if getattr(args, field) is not None:
            overrides[field] = getattr(args, field)
    config = dataclasses.replace(defaults, **overrides)
    if config.snapshot > config.max_iter:
        config = dataclasses.replace(config, snapshot=config.max_iter)

    def job():
        start = time.time()
        run = demo.run(os.path.abspath(args.out), config, BENCHMARK)
        log.info('finished in %.0f s (%d steps run, %d reused); see %s', time.time() - start,
                 len(run.steps.ran), len(run.steps.skipped), os.path.join(args.out, 'summary.md'))
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(levelname)s %(message)s',
                        datefmt='%H:%M:%S')
    return cli.run(job, log.name)


if __name__ == '__main__':
    sys.exit(main())
