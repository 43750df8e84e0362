#!/usr/bin/env python3
"""One's own dataset (a folder of images, a folder of label PNGs) -> checked
"image label" lists train.txt, val.txt (and test.txt), relative to --out,
with classes.txt and manifest.json, for make_net.py, make_lmdb.py, infer.py
and evaluate.py.

  # images/train, images/val (and images/test) with labels/ alike
  python scripts/prepare_folder.py --images my/images --labels my/labels \\
      --classes my/classes.txt --out data/mine

  # one folder of a.jpg + a_mask.png pairs, 10% held out for validation
  python scripts/prepare_folder.py --images photos --labels photos \\
      --label-suffix _mask.png --num-classes 4 --val-fraction 0.1 --out data/photos

A label is the image's path relative to --images, under --labels, with its
extension replaced by --label-suffix; it holds class indices 0..N-1 (grey or
palette PNG) and 255 for pixels not scored. The classes file has one class
per line in label order: a name, or a name and its R G B colour (used for
the palette PNGs and overlays of infer.py). Split sub-folders (train/ or
training/, val/, validation/ or valid/, test/ or testing/) are the splits;
without them, or without a val folder, --val-fraction of the (train) images,
chosen by a hash of their paths, so reproducibly, form val. Linked folders
are followed. manifest.json counts each split's pixels per class; a class
with no pixel in train is warned of.

Bad input (an unreadable image or label, a missing label, a size mismatch, a
label outside 0..N-1 and 255) is listed file by file and nothing is written,
unless --skip-bad. Images outside the split folders or in two of them, and a
label that two images name (a.jpg, a.png), are refused whatever --skip-bad
says. Re-running on unchanged input does nothing. --out is
replaced as a whole when it is an earlier output of this script (or with
--force); it may never hold or lie inside an input.
"""
import sys

from fcrn import cli
from fcrn.data.common import add_output_options, summary
from fcrn.data.folder import prepare_folder


def main(argv=None):
    ap = cli.parser(__doc__)
    ap.add_argument("--images", required=True, help="folder of images (searched recursively)")
    ap.add_argument("--labels", required=True, help="folder of label PNGs (may be --images)")
    classes = ap.add_mutually_exclusive_group(required=True)
    classes.add_argument("--classes", metavar="FILE", help="classes file (names, colours)")
    classes.add_argument("--num-classes", type=cli.ranged(int, 2, 255), metavar="N",
                         help="N classes named class0.. (default colours)")
    ap.add_argument("--label-suffix", default=".png",
                    help="end of a label's file name, replacing the image's extension "
                         "(default: %(default)s)")
    ap.add_argument("--val-fraction", type=cli.ranged(float, 0, 1, True, True), default=0.1,
                    help="share of the (train) images held out for val when there is no val "
                         "sub-folder (default: %(default)s)")
    add_output_options(ap)
    args = ap.parse_args(argv)
    return cli.run(lambda: print(summary(prepare_folder(
        args.images, args.labels, args.out, args.classes, args.num_classes, args.label_suffix,
        args.val_fraction, args.skip_bad, args.jobs, args.force))), "prepare_folder")


if __name__ == "__main__":
    sys.exit(main())
