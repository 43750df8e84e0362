#!/usr/bin/env python3
"""Train and evaluate a small FCRN end to end on a synthetic dataset (`make demo`).

    python scripts/demo.py --out work/demo            # about 10 minutes on 2 CPU cores
    python scripts/demo.py --out work/demo --compare  # also without bootstrapping
    python scripts/demo.py --out /tmp/q --quick       # tiny: checks the plumbing

Makes a synthetic PASCAL VOC tree, prepares it with scripts/prepare_voc.py,
generates an FCRN-50 with bootstrapping with scripts/make_net.py, trains it
with `caffe train -solver` from random weights, segments and scores the
held-out images with scripts/infer.py and scripts/evaluate.py, plots the
training log and writes OUT/summary.md. A rerun skips finished steps and
resumes an interrupted training from its last snapshot.
"""
import argparse
import dataclasses
import logging
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))

from fcrn.demo import pipeline  # noqa: E402


def main(argv=None):
    defaults = pipeline.Config()
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--out', required=True, help='run folder (created; reused by a rerun)')
    ap.add_argument('--quick', action='store_true',
                    help='tiny dataset and %d iterations: a plumbing check, not a result'
                    % pipeline.QUICK['max_iter'])
    ap.add_argument('--compare', action='store_true',
                    help='also train the same net without bootstrapping (doubles the time)')
    ap.add_argument('--max-iter', type=int, help='training iterations (default %d)'
                    % defaults.max_iter)
    ap.add_argument('--train-images', type=int,
                    help='synthetic training images (default %d)' % defaults.train_images)
    ap.add_argument('--val-images', type=int,
                    help='synthetic held-out images (default %d)' % defaults.val_images)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(levelname)s %(message)s',
                        datefmt='%H:%M:%S')
    overrides = dict(pipeline.QUICK) if args.quick else {}
    for field in ('max_iter', 'train_images', 'val_images'):
        if getattr(args, field) is not None:
            overrides[field] = getattr(args, field)
    if args.compare:
        overrides['compare'] = True
    config = dataclasses.replace(defaults, **overrides)
    if config.snapshot > config.max_iter:
        config = dataclasses.replace(config, snapshot=config.max_iter)
    os.makedirs(args.out, exist_ok=True)
    start = time.time()
    run = pipeline.Run(os.path.abspath(args.out), config)
    try:
        run.all()
    except Exception as error:  # a tool failed: say which step, keep the traceback in debug
        logging.getLogger('demo').error('%s', error)
        logging.getLogger('demo').debug('details', exc_info=True)
        return 1
    logging.getLogger('demo').info('finished in %.0f s (%d steps run, %d reused); see %s',
                                   time.time() - start, len(run.steps.ran),
                                   len(run.steps.skipped),
                                   os.path.join(args.out, 'summary.md'))
    return 0


if __name__ == '__main__':
    sys.exit(main())
