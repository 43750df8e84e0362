#!/usr/bin/env python3
"""Score predicted label maps against ground truth: pixel accuracy, mean accuracy,
mean IoU (the paper's Section 4.1) and per-class IoU, from one confusion matrix
accumulated over the whole set.

  # VOC 2012 val: predictions from scripts/infer.py (palette PNGs)
  python scripts/evaluate.py --dataset voc --gt VOC2012/SegmentationClass \\
      --list VOC2012/ImageSets/Segmentation/val.txt --pred out/val \\
      --out-md results/voc_val.md --out-json results/voc_val.json

  # one's own dataset (scripts/prepare_folder.py): class names from its classes file
  python scripts/evaluate.py --classes data/mine/classes.txt --gt my/labels \\
      --list data/mine/val.txt --pred out/mine_val --out-md results/mine_val.md

  # Cityscapes val: official labelIds ground truth, trainId predictions
  python scripts/evaluate.py --dataset cityscapes --gt cityscapes/gtFine/val \\
      --gt-suffix _gtFine_labelIds.png --pred out/cs_val --pred-suffix _leftImg8bit.png

Files pair by their paths under --gt and --pred, or by the longest tail of
them they share (flat predictions pair with per-city ground truth); --list
entries (ids, or the image paths of a prepared list) name them.

Exit status: 0 scored; 1 refused (an entry with no ground truth or
prediction or several, a file paired twice, a size mismatch: all listed; a
label outside the classes: its file named); 2 usage.
"""
import os
import sys

from fcrn import cli, datasets, evaluate


def parse_args(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("--gt", required=True, help="ground-truth folder (searched recursively)")
    p.add_argument("--pred", required=True, help="prediction folder (searched recursively)")
    p.add_argument("--dataset", choices=datasets.choices(),
                   help="class names; cityscapes also maps labelId ground truth to trainIds "
                   "(default: generic with --classes or --num-classes, else voc)")
    p.add_argument("--classes", metavar="FILE",
                   help="generic dataset: classes file naming the classes (what "
                   "scripts/prepare_folder.py writes)")
    p.add_argument("--num-classes", type=cli.ranged(int, 1, 255), metavar="N",
                   help="generic dataset: N classes, named class0..")
    p.add_argument("--list", help="file of image ids to score (default: every ground truth)")
    p.add_argument("--gt-suffix", help="ground-truth file suffix (default .png; "
                   "cityscapes: _gtFine_labelIds.png, with --gt-format trainid "
                   "_gtFine_labelTrainIds.png)")
    p.add_argument("--pred-suffix", default=None,
                   help="prediction file suffix (default .png; cityscapes: _leftImg8bit.png)")
    p.add_argument("--gt-format", choices=["trainid", "labelid"], default=None,
                   help="cityscapes ground truth encoding (default labelid)")
    p.add_argument("--pred-format", choices=["trainid", "labelid"], default="trainid",
                   help="cityscapes prediction encoding (labelid: submission PNGs)")
    p.add_argument("--name", default="FCRN", help="row label in the Markdown tables")
    p.add_argument("--out-md", help="write the Markdown tables here")
    p.add_argument("--out-json", help="write scores and the confusion matrix here")
    cli.add_jobs(p, "threads decoding PNGs", min(4, os.cpu_count() or 1))
    cli.add_force(p, "an existing report file")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)

    def job():
        _, _, md = evaluate.run(args.gt, args.pred, args.dataset, args.num_classes, args.list,
                                args.gt_suffix, args.pred_suffix, args.gt_format,
                                args.pred_format, args.name, args.out_md, args.out_json,
                                args.jobs, not args.quiet, args.force,
                                classes_file=args.classes)
        sys.stdout.write(md)
    return cli.run(job, "evaluate")


if __name__ == "__main__":
    sys.exit(main())
