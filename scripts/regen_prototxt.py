#!/usr/bin/env python3
"""Regenerate prototxt/ (every variant of the paper's Tables 1-4) and its index."""
import argparse
import logging
import os
import sys

from tqdm import tqdm

from fcrn import ROOT
from fcrn.net import zoo


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--root', default=ROOT,
                        help='repository root to write prototxt/ into (default: this checkout)')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(message)s')
    rows = zoo.regenerate(args.root, progress=lambda rows: tqdm(rows, desc='variants'))
    logging.info('wrote %d variants and prototxt/README.md under %s',
                 len(rows), os.path.abspath(args.root))
    return 0


if __name__ == '__main__':
    sys.exit(main())
