#!/usr/bin/env python3
"""Cityscapes (leftImg8bit + gtFine) -> trainId label PNGs (19 classes, 255
ignore) and the lists train.txt (2,975 on the real data), val.txt (500) and,
image-only, test.txt (1,525), "image label" per line, relative to --out.

    python scripts/prepare_cityscapes.py --cityscapes cityscapes --out cityscapes_fcrn

The labelId -> trainId table is fcrn/datasets/cityscapes.json, a copy of
cityscapesscripts' (a test keeps them equal). Bad input is listed file by
file and nothing is written, unless --skip-bad. Re-running on unchanged
input does nothing. --out is replaced as a whole when it is an earlier
output of this script (or with --force); it may never hold or lie inside
the input tree.
"""
import sys

from fcrn import cli
from fcrn.data.cityscapes import prepare_cityscapes
from fcrn.data.common import add_output_options, summary


def main(argv=None):
    ap = cli.parser(__doc__)
    ap.add_argument("--cityscapes", "--root", dest="cityscapes", required=True,
                    help="folder holding leftImg8bit/ and gtFine/ (--root: its earlier name)")
    add_output_options(ap)
    args = ap.parse_args(argv)
    return cli.run(lambda: print(summary(prepare_cityscapes(
        args.cityscapes, args.out, args.skip_bad, args.jobs, args.force))), "prepare_cityscapes")


if __name__ == "__main__":
    sys.exit(main())
