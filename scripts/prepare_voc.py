#!/usr/bin/env python3
"""PASCAL VOC 2012 + SBD -> single-channel label PNGs and the split lists
train_aug.txt (10,582 images on the real data), train.txt (1,464) and
val.txt (1,449), "image label" per line, relative to --out.

    python scripts/prepare_voc.py --voc VOCdevkit --sbd benchmark_RELEASE --out voc_aug

Bad input (missing/unreadable file, size mismatch, label outside 0..20/255,
an id in both train and val) is listed file by file and nothing is written,
unless --skip-bad. Re-running on unchanged input does nothing. --out is
replaced as a whole when it is an earlier output of this script (or with
--force); it may never hold or lie inside an input tree.
"""
import sys

from fcrn import cli
from fcrn.data.common import add_output_options, summary
from fcrn.data.voc import prepare_voc


def main(argv=None):
    ap = cli.parser(__doc__)
    ap.add_argument("--voc", required=True, help="VOCdevkit/VOC2012 or a directory above it")
    ap.add_argument("--sbd", help="SBD benchmark_RELEASE/dataset or a directory above it; "
                                  "without it no train_aug list is made")
    add_output_options(ap)
    args = ap.parse_args(argv)
    return cli.run(lambda: print(summary(prepare_voc(
        args.voc, args.sbd, args.out, args.skip_bad, args.jobs, args.force))), "prepare_voc")


if __name__ == "__main__":
    sys.exit(main())
