"""PASCAL VOC 2012 augmented with SBD (Hariharan et al. 2011).

The conventional `train_aug` set (Section 4.1 of the paper, following FCN and
DeepLab) is SBD train + SBD val + VOC train, minus VOC val: 10,582 images on
the real data; `val` is VOC val (1,449). Every label is written as a
single-channel PNG with values 0..20 and 255 (ignore). Where an image has a
VOC annotation (VOC train), that one is used: it is the official ground truth
and carries the 255 "void" band around objects; the others come from SBD's
`GTcls.Segmentation`, which has no void band.
"""
import logging
import os

import numpy as np

from .common import (DatasetError, atomic_dir, check_pair, fingerprint,
                     read_id_list, read_image, run_checked, current_manifest,
                     write_label, write_manifest, write_split_lists)

log = logging.getLogger(__name__)

NUM_CLASSES = 21
FORMAT = "fcrn-voc-aug/1"
LABEL_DIR = "SegmentationClassAug"


def _find(root, markers, candidates):
    """Accept the named directory or an ancestor (VOCdevkit, benchmark_RELEASE)."""
    for sub in ("",) + candidates:
        d = os.path.join(root, sub)
        if all(os.path.isdir(os.path.join(d, m)) for m in markers):
            return d
    return None


def voc_dir(root):
    d = _find(root, ("JPEGImages", "SegmentationClass", os.path.join("ImageSets", "Segmentation")),
              ("VOC2012", os.path.join("VOCdevkit", "VOC2012")))
    if d is None:
        raise DatasetError("%s: not a VOC2012 tree (expected JPEGImages/, "
                           "SegmentationClass/, ImageSets/Segmentation/)" % root)
    return d


def sbd_dir(root):
    d = _find(root, ("img", "cls"), ("dataset", os.path.join("benchmark_RELEASE", "dataset")))
    if d is None:
        raise DatasetError("%s: not an SBD tree (expected img/, cls/, train.txt, val.txt)" % root)
    return d


def read_voc_label(path):
    """VOC SegmentationClass PNGs are palette images whose indices are the
    labels (255 = void); reading them through the palette would give colours."""
    from PIL import Image
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L"):
                raise DatasetError("%s: expected a palette (P) or grey (L) PNG, got mode %s"
                                   % (path, im.mode))
            return np.array(im, dtype=np.uint8)
    except (OSError, SyntaxError, ValueError) as e:
        raise DatasetError("%s: not a readable label image (%s)" % (path, e))


def read_sbd_label(path):
    """SBD cls/<id>.mat holds a MATLAB struct GTcls whose Segmentation field
    is the HxW class map (0 background, 1..20 classes)."""
    import scipy.io
    try:
        mat = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)
        seg = mat["GTcls"].Segmentation
    except FileNotFoundError:
        raise DatasetError("%s: missing" % path)
    except Exception as e:  # scipy raises assorted errors on garbage
        raise DatasetError("%s: not an SBD GTcls .mat file (%s: %s)" % (path, type(e).__name__, e))
    seg = np.asarray(seg)
    if seg.ndim != 2 or seg.min() < 0 or seg.max() > 255:
        raise DatasetError("%s: GTcls.Segmentation is not a 2-D class map" % path)
    return seg.astype(np.uint8)


def prepare_voc(voc_root, sbd_root, out_dir, skip_bad=False, workers=None):
    """Write `out_dir` with SegmentationClassAug/<id>.png and the lists
    train_aug.txt (if `sbd_root`), train.txt and val.txt ("image label" lines
    relative to out_dir). Returns the manifest dict. A no-op when out_dir
    already holds the result for the same inputs."""
    voc = voc_dir(voc_root)
    sets = os.path.join(voc, "ImageSets", "Segmentation")
    voc_train = read_id_list(os.path.join(sets, "train.txt"))
    voc_val = read_id_list(os.path.join(sets, "val.txt"))
    if not voc_train or not voc_val:
        raise DatasetError("%s: empty VOC train or val list" % sets)
    splits = {"train": sorted(set(voc_train)), "val": sorted(set(voc_val))}

    sbd = None
    if sbd_root is not None:
        sbd = sbd_dir(sbd_root)
        sbd_ids = set()
        for name in ("train.txt", "val.txt"):
            ids = read_id_list(os.path.join(sbd, name))
            if not ids:
                raise DatasetError("%s: empty list" % os.path.join(sbd, name))
            sbd_ids.update(ids)
        splits["train_aug"] = sorted((sbd_ids | set(voc_train)) - set(voc_val))
    else:
        log.warning("no SBD tree given: writing train and val only, no train_aug")

    with_voc_label = set(voc_train) | set(voc_val)
    ids = sorted(set().union(*splits.values()))

    def sources(i):
        img = os.path.join(voc, "JPEGImages", i + ".jpg")
        if sbd is not None and not os.path.exists(img):
            img = os.path.join(sbd, "img", i + ".jpg")
        if i in with_voc_label:
            return img, os.path.join(voc, "SegmentationClass", i + ".png")
        return img, os.path.join(sbd, "cls", i + ".mat")

    inputs = [p for i in ids for p in sources(i)]
    lists = [os.path.join(sets, "train.txt"), os.path.join(sets, "val.txt")]
    if sbd is not None:
        lists += [os.path.join(sbd, "train.txt"), os.path.join(sbd, "val.txt")]
    fp = fingerprint(lists + inputs, {"format": FORMAT, "skip_bad": bool(skip_bad)})
    manifest = current_manifest(out_dir, fp)
    if manifest is not None:
        return manifest

    out_abs = os.path.abspath(out_dir)
    with atomic_dir(out_dir) as tmp:
        def work(i):
            img_path, lbl_path = sources(i)
            img = read_image(img_path)
            if lbl_path.endswith(".mat"):
                lbl = read_sbd_label(lbl_path)
            else:
                if not os.path.exists(lbl_path):
                    raise DatasetError("%s: missing" % lbl_path)
                lbl = read_voc_label(lbl_path)
            check_pair(img, lbl, NUM_CLASSES, img_path, lbl_path)
            write_label(os.path.join(tmp, LABEL_DIR, i + ".png"), lbl)
            return i, img_path

        done, problems = run_checked(ids, work, skip_bad, "voc labels", workers)
        good = dict(done)
        counts = write_split_lists(
            tmp, {name: [(good[i], os.path.join(out_abs, LABEL_DIR, i + ".png"))
                         for i in split if i in good]
                  for name, split in sorted(splits.items())}, out_abs)
        manifest = dict(format=FORMAT, fingerprint=fp, counts=counts,
                        num_classes=NUM_CLASSES, voc=os.path.abspath(voc),
                        sbd=os.path.abspath(sbd) if sbd else None,
                        skipped=problems)
        write_manifest(tmp, **manifest)
    for name, n in sorted(counts.items()):
        log.info("%s: %d images", name, n)
    return manifest
