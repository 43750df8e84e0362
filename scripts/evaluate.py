#!/usr/bin/env python3
"""Score predicted label maps against ground truth: pixel accuracy, mean accuracy,
mean IoU (the paper's Section 4.1) and per-class IoU, from one confusion matrix
accumulated over the whole set.

  # VOC 2012 val: predictions from scripts/infer.py (palette PNGs)
  python scripts/evaluate.py --dataset voc --gt VOC2012/SegmentationClass \\
      --list VOC2012/ImageSets/Segmentation/val.txt --pred out/val \\
      --out-md results/voc_val.md --out-json results/voc_val.json

  # Cityscapes val: official labelIds ground truth, trainId predictions
  python scripts/evaluate.py --dataset cityscapes --gt cityscapes/gtFine/val \\
      --gt-suffix _gtFine_labelIds.png --pred out/cs_val --pred-suffix _leftImg8bit.png

Exit status: 0 scored, 2 refused (missing predictions, size mismatches: all listed).
"""
import argparse
import logging
import os
import sys

from fcrn import evaluate as ev

log = logging.getLogger("evaluate")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gt", required=True, help="ground-truth folder (searched recursively)")
    p.add_argument("--pred", required=True, help="prediction folder (searched recursively)")
    p.add_argument("--dataset", choices=sorted(ev.DATASETS) + ["generic"], default="voc",
                   help="class names; cityscapes also maps labelId ground truth to trainIds")
    p.add_argument("--num-classes", type=int, help="number of classes (generic dataset)")
    p.add_argument("--list", help="file of image ids to score (default: every ground truth)")
    p.add_argument("--gt-suffix", help="ground-truth file suffix (default .png; "
                   "cityscapes: _gtFine_labelIds.png)")
    p.add_argument("--pred-suffix", default=None,
                   help="prediction file suffix (default .png; cityscapes: _leftImg8bit.png)")
    p.add_argument("--gt-format", choices=["trainid", "labelid"], default=None,
                   help="cityscapes ground truth encoding (default labelid)")
    p.add_argument("--pred-format", choices=["trainid", "labelid"], default="trainid",
                   help="cityscapes prediction encoding (labelid: submission PNGs)")
    p.add_argument("--name", default="FCRN", help="row label in the Markdown tables")
    p.add_argument("--out-md", help="write the Markdown tables here")
    p.add_argument("--out-json", help="write scores and the confusion matrix here")
    p.add_argument("--jobs", type=int, default=min(4, os.cpu_count() or 1),
                   help="threads decoding PNGs")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cityscapes = args.dataset == "cityscapes"
    if args.dataset == "generic":
        if not args.num_classes:
            log.error("--dataset generic needs --num-classes")
            return 2
        names = ["class%d" % i for i in range(args.num_classes)]
    else:
        names = list(ev.DATASETS[args.dataset]["classes"])
        if args.num_classes and args.num_classes != len(names):
            log.error("--num-classes %d contradicts %s's %d classes",
                      args.num_classes, args.dataset, len(names))
            return 2
    gt_suffix = args.gt_suffix or ("_gtFine_labelIds.png" if cityscapes else ".png")
    pred_suffix = args.pred_suffix or ("_leftImg8bit.png" if cityscapes else ".png")
    gt_lut = pred_lut = None
    if cityscapes:
        if (args.gt_format or "labelid") == "labelid":
            gt_lut = ev.cityscapes_label_to_train_lut()
        if args.pred_format == "labelid":
            pred_lut = ev.cityscapes_label_to_train_lut()

    ids = None
    if args.list:
        with open(args.list) as f:
            ids = [line.split()[0] for line in f if line.strip()]
    pairs, problems = ev.pair_files(args.gt, args.pred, gt_suffix, pred_suffix, ids)
    if not pairs and not problems:
        problems.append("no ground truth *%s under %s" % (gt_suffix, args.gt))
    try:
        if problems:
            raise ev.EvaluationError(problems)
        progress = None
        if not args.quiet:
            from tqdm import tqdm

            def progress(it):
                return tqdm(it, total=len(pairs), unit="img", desc="evaluate")
        cm = ev.evaluate_pairs(pairs, len(names), gt_lut, pred_lut, args.jobs, progress)
    except ev.EvaluationError as e:
        log.error("refusing to score: %s", e)
        return 2
    except ValueError as e:
        log.error("refusing to score: %s", e)
        return 2

    scores = cm.scores()
    md = ev.markdown_report(scores, names, args.name)
    sys.stdout.write(md)
    log.info("%d images, %d pixels: pixel acc %.2f%%, mean acc %.2f%%, mean IoU %.2f%%",
             len(pairs), scores["num_pixels"], 100 * scores["pixel_acc"],
             100 * scores["mean_acc"], 100 * scores["mean_iou"])
    if args.out_md:
        ev.write_atomic(args.out_md, md)
    if args.out_json:
        ev.write_atomic(args.out_json, ev.json_report(
            cm, scores, names, {"dataset": args.dataset, "num_images": len(pairs)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
