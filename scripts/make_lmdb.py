#!/usr/bin/env python3
"""Write an "image label" list into an LMDB for SegDataLayer: one
self-contained record per image (the original encoded image and label PNG,
format in fcrn/data/sources.py), in one pass. The LMDB is complete or
absent; re-running on an unchanged list and files does nothing. A folder
that is not an FCRN LMDB is replaced only with --force, an input never.

    python scripts/make_lmdb.py --list voc_aug/train_aug.txt --out voc_aug_train.lmdb
"""
import sys

from fcrn import cli
from fcrn.data.sources import write_lmdb


def main(argv=None):
    ap = cli.parser(__doc__)
    ap.add_argument("--list", required=True, help="list file of 'image label' lines")
    ap.add_argument("--root", help="directory the list's paths are relative to "
                                   "(default: the list's directory)")
    ap.add_argument("--out", required=True, help="LMDB directory to write")
    ap.add_argument("--num-classes", type=cli.ranged(int, 1, 255),
                    help="labels must be < this or 255 (default: from manifest.json beside "
                    "the list)")
    ap.add_argument("--skip-bad", action="store_true", help="skip bad images and report the count")
    cli.add_jobs(ap, "threads reading images")
    cli.add_force(ap, "an output folder")
    args = ap.parse_args(argv)

    def job():
        meta = write_lmdb(args.list, args.out, args.root, args.num_classes,
                          args.skip_bad, args.jobs, force=args.force)
        print("records=%d" % meta["count"]
              + (" skipped=%d" % len(meta["skipped"]) if meta["skipped"] else ""))
    return cli.run(job, "make_lmdb")


if __name__ == "__main__":
    sys.exit(main())
