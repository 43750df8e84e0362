#!/usr/bin/env python3
"""Regenerate prototxt/ (every variant of the paper's Tables 1-4) and its index.

  python scripts/regen_prototxt.py               # this checkout (`make prototxt`)
  python scripts/regen_prototxt.py --out /tmp/x  # elsewhere, to compare

The folders are this tool's own output: they are rewritten in place.
"""
import logging
import os
import sys

from tqdm import tqdm

from fcrn import cli
from fcrn.net import zoo

CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv=None):
    parser = cli.parser(__doc__)
    parser.add_argument('--out', '--root', dest='out', default=CHECKOUT,
                        help='folder to write prototxt/ into (default: this checkout)')
    args = parser.parse_args(argv)

    def job():
        rows = zoo.regenerate(args.out, progress=lambda rows: tqdm(rows, desc='variants'))
        logging.info('wrote %d variants and prototxt/README.md under %s',
                     len(rows), os.path.abspath(args.out))
    return cli.run(job, 'regen_prototxt')


if __name__ == '__main__':
    sys.exit(main())
