"""Cityscapes fine annotations: labelIds -> the 19 training classes.

Input: the official tree, `leftImg8bit/{train,val,test}/<city>/*_leftImg8bit.png`
and `gtFine/{train,val}/<city>/*_gtFine_labelIds.png`. Output: trainId label
PNGs (0..18, 255 ignore) and "image label" lists: 2,975 train and 500 val
images on the real data (test, 1,525 images without public labels, is listed
image-only). The labelId -> trainId table is the official one from
`cityscapesscripts.helpers.labels` when that package is installed, otherwise
the copy in data/cityscapes.json (a test keeps the two equal).
"""
import glob
import logging
import os

import numpy as np

from .common import (IGNORE_LABEL, DatasetError, atomic_dir,
                     check_pair, fingerprint, load_classes, read_image,
                     read_label, run_checked, current_manifest, write_label,
                     write_manifest, write_split_lists)

log = logging.getLogger(__name__)

NUM_CLASSES = 19
FORMAT = "fcrn-cityscapes/1"
LABEL_DIR = "gtFine_trainIds"
IMG_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"
OUT_SUFFIX = "_gtFine_labelTrainIds.png"


def label_table():
    """{labelId: trainId} with 255 for every id not trained on, and where the
    table came from."""
    try:
        from cityscapesscripts.helpers.labels import labels
        rows, source = [(l.id, l.trainId) for l in labels], "cityscapesscripts"
    except ImportError:
        rows = [(l["id"], l["trainId"]) for l in load_classes("cityscapes")["labels"]]
        source = "data/cityscapes.json"
    # id -1 (license plate) never occurs in labelIds images; trainId -1 or 255 means ignore
    table = {i: (t if 0 <= t < NUM_CLASSES else IGNORE_LABEL) for i, t in rows if 0 <= i < 256}
    return table, source


def label_lut():
    """256-entry lookup labelId -> trainId; -1 marks ids absent from the table
    (they make a label file bad rather than silently ignored)."""
    table, source = label_table()
    lut = np.full(256, -1, np.int16)
    for i, t in table.items():
        lut[i] = t
    return lut, source


def to_train_ids(label_ids, lut, name):
    out = lut[label_ids]
    if (out < 0).any():
        bad = sorted(set(np.unique(label_ids[out < 0]).tolist()))
        raise DatasetError("%s: labelIds %s are not Cityscapes label ids" % (name, bad[:10]))
    return out.astype(np.uint8)


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


def prepare_cityscapes(root, out_dir, skip_bad=False, workers=None):
    """Write `out_dir` with gtFine_trainIds/<split>/<city>/*_gtFine_labelTrainIds.png
    and train.txt, val.txt ("image label") and test.txt (images only), paths
    relative to out_dir. Returns the manifest dict; a no-op when out_dir
    already holds the result for the same inputs."""
    if not os.path.isdir(os.path.join(root, "leftImg8bit")):
        raise DatasetError("%s: not a Cityscapes tree (expected leftImg8bit/ and gtFine/)" % root)
    splits = {}
    for split in ("train", "val"):
        if not os.path.isdir(os.path.join(root, "gtFine", split)):
            raise DatasetError("%s: missing" % os.path.join(root, "gtFine", split))
        splits[split] = find_split(root, split, True)
        if not splits[split]:
            raise DatasetError("%s: no *%s images" % (
                os.path.join(root, "leftImg8bit", split), IMG_SUFFIX))
    splits["test"] = find_split(root, "test", False)
    if not splits["test"]:
        log.warning("no test images found; test.txt will not be written")
        del splits["test"]

    lut, table_source = label_lut()
    log.info("labelId -> trainId table from %s", table_source)
    items = [it for split in splits.values() for it in split]
    inputs = [p for it in items for p in it[3:] if p is not None]
    fp = fingerprint(inputs, {"format": FORMAT, "skip_bad": bool(skip_bad),
                              "lut": lut.tolist()})
    manifest = current_manifest(out_dir, fp)
    if manifest is not None:
        return manifest

    out_abs = os.path.abspath(out_dir)
    with atomic_dir(out_dir) as tmp:
        def work(item):
            split, city, stem, img_path, lbl_path = item
            img = read_image(img_path)  # decoded so that corrupt files are caught now
            if lbl_path is None:
                return item, None
            train_ids = to_train_ids(read_label(lbl_path), lut, lbl_path)
            check_pair(img, train_ids, NUM_CLASSES, img_path, lbl_path)
            rel = os.path.join(LABEL_DIR, split, city, stem + OUT_SUFFIX)
            write_label(os.path.join(tmp, rel), train_ids)
            return item, os.path.join(out_abs, rel)

        done, problems = run_checked(items, work, skip_bad, "cityscapes", workers)
        counts = write_split_lists(
            tmp, {split: [(it[3], lbl) for it, lbl in done if it[0] == split]
                  for split in splits}, out_abs)
        manifest = dict(format=FORMAT, fingerprint=fp, counts=counts,
                        num_classes=NUM_CLASSES, root=os.path.abspath(root),
                        label_table=table_source, skipped=problems)
        write_manifest(tmp, **manifest)
    for name, n in sorted(counts.items()):
        log.info("%s: %d images", name, n)
    return manifest
