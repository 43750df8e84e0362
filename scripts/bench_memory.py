#!/usr/bin/env python3
"""Peak resident memory and time of one FCRN training iteration (CPU).

Cases, each measured in its own process (ResNet-`depth`, one SIZE x SIZE crop):
  upstream  1/8 net, stock BatchNorm + Scale, convolutions through upstream
            Caffe's per-layer im2col buffers (FCRN_NO_DNNL and
            FCRN_PRIVATE_IM2COL, see cpp/patches/0003-* and 0013-*)
  caffe  1/8 net, stock BatchNorm + Scale
  lean   1/8 net, LeanBatchNorm
  true4  1/4 net (res3 stride removed, dilations doubled), LeanBatchNorm
  sim4   the 1/4 net simulated by four shifted passes of the 1/8 net, LeanBatchNorm
One iteration is one forward-backward, or the four of one image for sim4.
Weights are random (memory and time do not depend on them). Then the training
step as a user runs it: `caffe train` on the generated solver of each
--step-cases case (data layer, TEST net), with and without memory sharing.

  scripts/bench_memory.py --out benchmarks/memory.md
"""
import sys

from fcrn import cli
from tools.bench import memory


def main(argv=None):
    parser = cli.parser(__doc__)
    parser.add_argument('--depth', type=int, default=101, choices=(50, 101, 152))
    parser.add_argument('--size', type=cli.positive_int, default=321)
    parser.add_argument('--cases', nargs='+', default=list(memory.CASES), choices=memory.CASES)
    parser.add_argument('--iterations', type=cli.positive_int, default=1)
    parser.add_argument('--step-cases', nargs='*', default=list(memory.STEP_CASES),
                        choices=memory.STEP_CASES, help='training steps through caffe train')
    parser.add_argument('--step-size', type=cli.positive_int, default=505,
                        help='crop side of the training steps')
    parser.add_argument('--out', help='Markdown report (and .json beside it)')
    cli.add_force(parser, 'a report')
    args = parser.parse_args(argv)
    return cli.run(lambda: memory.run(args.out, args.depth, args.size, args.cases,
                                      args.iterations, args.force, args.step_cases,
                                      args.step_size), 'bench_memory')


if __name__ == '__main__':
    sys.exit(main())
