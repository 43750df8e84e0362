#!/usr/bin/env python3
"""A miniature of the paper's Table 4: online bootstrapping (K hardest
pixels, t = 0 and t = 0.7) against plain softmax, FCRN-50 from random
weights on the demo's synthetic dataset, several seeds (`make bench-bootstrap`).

    python scripts/bench_bootstrap.py                  # about 95 min on 2 idle cores
    python scripts/bench_bootstrap.py --quick --work /tmp/b --out /tmp/b/report
                                                       # the plumbing, in seconds

Writes OUT.md and OUT.json (default benchmarks/bootstrap): class
frequencies, held-out pixel accuracy, mean accuracy, mean IoU and the IoU of
the frequent and of the rare classes as mean and standard deviation over the
seeds, per-class IoU, and each loss's same-seed differences against plain
softmax with whether they exceed the seed-to-seed spread. The trainings live
in WORK (default work/bench_bootstrap): rerun after an interruption, the
command reuses finished trainings and resumes a half-finished one from its
last snapshot.
"""
import dataclasses
import logging
import os
import sys

os.environ.setdefault("GLOG_minloglevel", "2")  # pycaffe's INFO lines would bury the progress

from fcrn import cli, demo  # noqa: E402
from tools.bench import bootstrap as bootstrap_bench  # noqa: E402

log = logging.getLogger("bench_bootstrap")


def main(argv=None):
    ap = cli.parser(__doc__)
    ap.add_argument('--work', default='work/bench_bootstrap',
                    help='run folder (created; reused by a rerun)')
    ap.add_argument('--out', default=os.path.join('benchmarks', 'bootstrap'),
                    help='report path without extension (.md and .json are written)')
    ap.add_argument('--seeds', type=cli.positive_int, default=3,
                    help='trainings per loss, seeds 1..N (default 3)')
    ap.add_argument('--quick', action='store_true',
                    help='tiny dataset, %d iterations, %d seeds: a plumbing check, not a result'
                    % (bootstrap_bench.QUICK['max_iter'], bootstrap_bench.QUICK_SEEDS))
    cli.add_force(ap, 'a report that is not this benchmark\'s')
    args = ap.parse_args(argv)
    config = demo.Config()
    seeds = range(1, args.seeds + 1)
    if args.quick:
        config = dataclasses.replace(config, **bootstrap_bench.QUICK)
        seeds = range(1, bootstrap_bench.QUICK_SEEDS + 1)

    def job():
        bootstrap_bench.run(args.work, config, list(seeds), args.out, args.force)
        log.info('wrote %s.md and %s.json', args.out, args.out)
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(levelname)s %(message)s',
                        datefmt='%H:%M:%S')
    return cli.run(job, log.name)


if __name__ == '__main__':
    sys.exit(main())
