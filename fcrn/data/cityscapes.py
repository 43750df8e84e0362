"""Cityscapes fine annotations: labelIds -> the 19 training classes.

Input: the official tree, `leftImg8bit/{train,val,test}/<city>/*_leftImg8bit.png`
and `gtFine/{train,val}/<city>/*_gtFine_labelIds.png`. Output: trainId label
PNGs (0..18, 255 ignore) and "image label" lists: 2,975 train and 500 val
images on the real data (test, 1,525 images without public labels, is listed
image-only). The labelId -> trainId table is the dataset registry's copy of
`cityscapesscripts.helpers.labels` (fcrn/datasets/cityscapes.json; a test
keeps the two equal).
"""
import glob
import logging
import os

from .. import datasets, fileio, imageio
from ..errors import InputError
from .common import (check_pair, current_manifest, fingerprint, is_prepared, run_checked,
                     write_manifest, write_split_lists)

log = logging.getLogger(__name__)

CITYSCAPES = datasets.get("cityscapes")
NUM_CLASSES = CITYSCAPES.num_classes
FORMAT = "fcrn-cityscapes/1"
LABEL_DIR = "gtFine_trainIds"
IMG_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"
OUT_SUFFIX = "_gtFine_labelTrainIds.png"


def find_split(root, split, with_labels):
    """[(stem, image, labelIds or None)] for one split, sorted by stem."""
    img_dir = os.path.join(root, "leftImg8bit", split)
    images = sorted(glob.glob(os.path.join(img_dir, "*", "*" + IMG_SUFFIX)))
    items = []
    for img in images:
        city = os.path.basename(os.path.dirname(img))
        stem = os.path.basename(img)[:-len(IMG_SUFFIX)]
        lbl = (os.path.join(root, "gtFine", split, city, stem + LABEL_SUFFIX)
               if with_labels else None)
        items.append((split, city, stem, img, lbl))
    return items


def prepare_cityscapes(root, out_dir, skip_bad=False, workers=None, force=False):
    """Write `out_dir` with gtFine_trainIds/<split>/<city>/*_gtFine_labelTrainIds.png
    and train.txt, val.txt ("image label") and test.txt (images only), paths
    relative to out_dir. Returns the manifest dict; a no-op when out_dir
    already holds the result for the same inputs; a folder that is not an
    earlier output is replaced only with `force`, an input never."""
    if not os.path.isdir(os.path.join(root, "leftImg8bit")):
        raise InputError("%s: not a Cityscapes tree (expected leftImg8bit/ and gtFine/)" % root)
    trees = [os.path.join(root, "leftImg8bit"), os.path.join(root, "gtFine")]
    fileio.check_disjoint([out_dir], trees)
    splits = {}
    for split in ("train", "val"):
        if not os.path.isdir(os.path.join(root, "gtFine", split)):
            raise InputError("%s: missing" % os.path.join(root, "gtFine", split))
        splits[split] = find_split(root, split, True)
        if not splits[split]:
            raise InputError("%s: no *%s images" % (
                os.path.join(root, "leftImg8bit", split), IMG_SUFFIX))
    splits["test"] = find_split(root, "test", False)
    if not splits["test"]:
        log.warning("no test images found; test.txt will not be written")
        del splits["test"]

    lut = CITYSCAPES.label_to_class_lut()
    items = [it for split in splits.values() for it in split]
    inputs = [p for it in items for p in it[3:] if p is not None]
    fileio.check_disjoint([out_dir], trees + inputs)  # linked cities may lie in --out
    fp = fingerprint(inputs, {"format": FORMAT, "skip_bad": bool(skip_bad),
                              "lut": lut.tolist()})
    manifest = current_manifest(out_dir, fp)
    if manifest is not None:
        return manifest

    out_abs = os.path.abspath(out_dir)
    with fileio.output_dir(out_dir, trees + inputs, force, is_prepared(FORMAT)) as tmp:
        def work(item):
            split, city, stem, img_path, lbl_path = item
            img = imageio.read_image(img_path)  # decoded so that corrupt files are caught now
            if lbl_path is None:
                return item, None
            train_ids = CITYSCAPES.classes_of_label_ids(imageio.read_label(lbl_path), lbl_path)
            check_pair(img, train_ids, NUM_CLASSES, img_path, lbl_path)
            rel = os.path.join(LABEL_DIR, split, city, stem + OUT_SUFFIX)
            imageio.write_label_png(os.path.join(tmp, rel), train_ids)
            return item, os.path.join(out_abs, rel)

        done, problems = run_checked(items, work, skip_bad, "cityscapes", workers)
        counts = write_split_lists(
            tmp, {split: [(it[3], lbl) for it, lbl in done if it[0] == split]
                  for split in splits}, out_abs, datasets.get("cityscapes"))
        manifest = dict(format=FORMAT, fingerprint=fp, counts=counts,
                        num_classes=NUM_CLASSES, root=os.path.abspath(root),
                        label_table="fcrn/datasets/cityscapes.json", skipped=problems)
        write_manifest(tmp, **manifest)
    return manifest
