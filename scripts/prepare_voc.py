#!/usr/bin/env python3
"""PASCAL VOC 2012 + SBD -> single-channel label PNGs and the split lists
train_aug.txt (10,582 images on the real data), train.txt (1,464) and
val.txt (1,449), "image label" per line, relative to --out.

    python scripts/prepare_voc.py --voc VOCdevkit --sbd benchmark_RELEASE --out voc_aug

Bad input (missing/unreadable file, size mismatch, label outside 0..20/255)
is listed file by file and nothing is written, unless --skip-bad. Re-running
on unchanged input does nothing.
"""
import argparse
import logging
import sys

from fcrn.data.common import run_preparation
from fcrn.data.voc import prepare_voc


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--voc", required=True, help="VOCdevkit/VOC2012 or a directory above it")
    ap.add_argument("--sbd", help="SBD benchmark_RELEASE/dataset or a directory above it; "
                                  "without it no train_aug list is made")
    ap.add_argument("--out", required=True, help="output directory (replaced as a whole)")
    ap.add_argument("--skip-bad", action="store_true", help="skip bad images and report the count")
    ap.add_argument("--workers", type=int, default=None, help="reader threads")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return run_preparation("prepare_voc", prepare_voc, args.voc, args.sbd, args.out, args.skip_bad,
                           args.workers)


if __name__ == "__main__":
    sys.exit(main())
