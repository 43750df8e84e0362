#!/usr/bin/env python3
"""Write an "image label" list into an LMDB for SegDataLayer: one
self-contained record per image (the original encoded image and label PNG,
format in fcrn/data/sources.py), in one pass. The LMDB is complete or
absent; re-running on an unchanged list and files does nothing.

    python scripts/make_lmdb.py --list voc_aug/train_aug.txt --out voc_aug_train.lmdb
"""
import argparse
import logging
import sys

from fcrn.data import DatasetError
from fcrn.data.sources import write_lmdb


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--list", required=True, help="list file of 'image label' lines")
    ap.add_argument("--root", help="directory the list's paths are relative to "
                                   "(default: the list's directory)")
    ap.add_argument("--out", required=True, help="LMDB directory to write")
    ap.add_argument("--num-classes", type=int, help="labels must be < this or 255 "
                    "(default: from manifest.json beside the list)")
    ap.add_argument("--skip-bad", action="store_true", help="skip bad images and report the count")
    ap.add_argument("--workers", type=int, default=None, help="reader threads")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        meta = write_lmdb(args.list, args.out, args.root, args.num_classes,
                          args.skip_bad, args.workers)
    except DatasetError as e:
        logging.getLogger("make_lmdb").error("%s", e)
        return 1
    print("records=%d" % meta["count"]
          + (" skipped=%d" % len(meta["skipped"]) if meta["skipped"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
