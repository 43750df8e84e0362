#!/usr/bin/env python3
"""Write train/test/deploy/solver.prototxt of one FCRN variant and print its FoV.

Example (Table 4, best VOC row):
  scripts/make_net.py --dataset voc --depth 101 --resolution 1/8 --kernel 5 \
      --dilation 12 --bootstrap 512 --out nets/r101
"""
import logging
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))

from fcrn.net import cli, netgen  # noqa: E402


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(message)s')
    parser = cli.build_parser(prog='make_net.py')
    args, variant, settings = cli.parse(argv, parser)
    command = cli.command(cli.to_argv(variant, settings), args.out)
    try:
        netgen.write(args.out, variant, settings, force=args.force, command=command)
    except FileExistsError as error:
        parser.error(str(error))
    logging.info('wrote %s (%s)', args.out, variant.tag)
    print('FoV: %d' % variant.fov)
    return 0


if __name__ == '__main__':
    sys.exit(main())
