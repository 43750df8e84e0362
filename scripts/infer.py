#!/usr/bin/env python3
"""Segment images with a deploy net: one label PNG of exactly the input size each.

  # VOC: whole images, unresized (the paper's test), palette PNGs + overlays,
  # on the val list that scripts/prepare_voc.py wrote
  python scripts/infer.py --net deploy.prototxt --weights fcrn.caffemodel \\
      --list data/voc_aug/val.txt --out out/val --overlay out/val_overlay

  # one's own dataset (scripts/prepare_folder.py): its classes' colours
  python scripts/infer.py --net nets/mine/deploy.prototxt --weights mine.caffemodel \\
      --classes data/mine/classes.txt --list data/mine/val.txt --out out/mine_val

  # Cityscapes: 1024x2048 in overlapping 512x1024 tiles, flip averaging,
  # trainId palette PNGs plus labelId PNGs for the official server
  python scripts/infer.py --net deploy.prototxt --weights fcrn.caffemodel \\
      --dataset cityscapes --tile 512 1024 --flip leftImg8bit/val --out out/cs_val \\
      --labelids out/cs_val_labelIds

Inputs: image files, folders (recursive; output names keep the sub-folders) and
--list files. Inputs whose names would collide are named by their paths relative
to their common folder, or keep their extension (c.png, c.jpg -> c.png.png,
c.jpg.png). A net with a `pass` input runs the four-pass shifted test (--passes 1
for pass 0 only). Unreadable images are named, skipped and counted; the exit
status is then 1. Each output folder is built beside its place and swapped in whole
when the run ends: a killed or failed run leaves the earlier output as it was,
and a run whose inputs partly failed keeps its predictions only where there
was no earlier output. Outputs never go over or into an input; a folder that
is not an earlier output of infer.py needs --force.
"""
import sys

from fcrn import cli, datasets, infer


def parse_args(argv=None):
    """The options, named as fcrn.infer.run's keywords."""
    p = cli.parser(__doc__)
    p.add_argument("sources", nargs="*", metavar="inputs", help="image files or folders")
    p.add_argument("--list", dest="list_file", metavar="LIST",
                   help="file with one image path per line")
    p.add_argument("--net", required=True, help="deploy prototxt")
    p.add_argument("--weights", required=True, help="caffemodel")
    p.add_argument("--out", required=True, help="folder for the label PNGs")
    p.add_argument("--dataset", choices=datasets.choices(),
                   help="the net's dataset: colours of the palette PNGs and overlays "
                   "(default: the colours of --classes, else VOC's, for any number of "
                   "classes)")
    p.add_argument("--classes", dest="classes_file", metavar="FILE",
                   help="generic dataset: classes file with the colours (what "
                   "scripts/prepare_folder.py writes)")
    p.add_argument("--overlay", dest="overlay_dir", metavar="OVERLAY",
                   help="also write colour overlays (JPEG) here")
    p.add_argument("--labelids", help="cityscapes: also write labelId PNGs here")
    size = cli.ranged(int, 1, infer.MAX_SIZE)  # beyond, Caffe aborts on the blob sizes
    p.add_argument("--tile", type=size, nargs=2, metavar=("H", "W"),
                   help="sliding window of this size (default: whole image)")
    p.add_argument("--overlap", type=cli.unit_fraction, default=1.0 / 3,
                   help="tile overlap fraction, in [0, 1)")
    p.add_argument("--scales", type=cli.ranged(float, 0, infer.MAX_SCALE, low_open=True),
                   nargs="+", default=[1.0],
                   help="test scales, probabilities averaged (e.g. 0.75 1 1.25)")
    p.add_argument("--flip", action="store_true", help="also average the mirrored image")
    p.add_argument("--passes", type=int, choices=[1, 4],
                   help="shifted test passes (default: 4 when the net has a 'pass' input)")
    p.add_argument("--batch-size", "--batch", dest="batch_size", type=cli.positive_int,
                   default=1, metavar="N", help="net inputs per forward, all of one "
                   "shape: a tile's, or a whole view's (default: 1)")
    p.add_argument("--gpu", type=cli.nonnegative_int, metavar="N",
                   help="run on GPU N (CUDA build)")
    p.add_argument("--mean", type=cli.finite, nargs=3, default=datasets.MEAN_BGR,
                   metavar=("B", "G", "R"), help="BGR mean subtracted (default: FCN's and "
                   "DeepLab's, 104.008 116.669 122.675, as training subtracts)")
    p.add_argument("--output-blob", dest="output", help="score blob (default: score, else prob)")
    p.add_argument("--stride", type=size, help="override the traced output stride")
    p.add_argument("--offset", type=cli.finite, help="override the traced grid offset")
    cli.add_no_share_memory(p)
    cli.add_jobs(p, "threads reading and writing files", 2)
    cli.add_force(p, "an output folder")
    cli.add_verbose(p)
    p.add_argument("-q", "--quiet", dest="progress", action="store_false",
                   help="no progress bar")
    return p.parse_args(argv)


def main(argv=None):
    options = vars(parse_args(argv))
    verbose = options.pop("verbose")

    def job():
        stats = infer.run(**options)
        return 1 if stats.failed else 0
    return cli.run(job, "infer", verbose)


if __name__ == "__main__":
    sys.exit(main())
