#!/usr/bin/env python3
"""Cityscapes (leftImg8bit + gtFine) -> trainId label PNGs (19 classes, 255
ignore) and the lists train.txt (2,975 on the real data), val.txt (500) and,
image-only, test.txt (1,525), "image label" per line, relative to --out.

    python scripts/prepare_cityscapes.py --root cityscapes --out cityscapes_fcrn

The labelId -> trainId table comes from cityscapesscripts when installed,
else from data/cityscapes.json (a copy of it). Bad input is listed file by
file and nothing is written, unless --skip-bad. Re-running on unchanged
input does nothing.
"""
import argparse
import logging
import sys

from fcrn.data.common import run_preparation
from fcrn.data.cityscapes import prepare_cityscapes


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", required=True, help="directory holding leftImg8bit/ and gtFine/")
    ap.add_argument("--out", required=True, help="output directory (replaced as a whole)")
    ap.add_argument("--skip-bad", action="store_true", help="skip bad images and report the count")
    ap.add_argument("--workers", type=int, default=None, help="reader threads")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return run_preparation("prepare_cityscapes", prepare_cityscapes, args.root, args.out, args.skip_bad,
                           args.workers)


if __name__ == "__main__":
    sys.exit(main())
