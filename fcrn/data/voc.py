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

from .. import datasets, fileio, imageio, lists
from ..errors import InputError
from .common import (check_pair, current_manifest, fingerprint, is_prepared, run_checked,
                     write_manifest, write_split_lists)

log = logging.getLogger(__name__)

NUM_CLASSES = datasets.get("voc").num_classes
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
        raise InputError("%s: not a VOC2012 tree (expected JPEGImages/, "
                         "SegmentationClass/, ImageSets/Segmentation/)" % root)
    return d


def sbd_dir(root):
    d = _find(root, ("img", "cls"), ("dataset", os.path.join("benchmark_RELEASE", "dataset")))
    if d is None:
        raise InputError("%s: not an SBD tree (expected img/, cls/, train.txt, val.txt)" % root)
    return d


def read_sbd_label(path):
    """SBD cls/<id>.mat holds a MATLAB struct GTcls whose Segmentation field
    is the HxW class map (0 background, 1..20 classes)."""
    import scipy.io
    try:
        mat = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)
        seg = mat["GTcls"].Segmentation
    except FileNotFoundError:
        raise InputError("%s: missing" % path)
    except Exception as e:  # scipy raises assorted errors on garbage
        raise InputError("%s: not an SBD GTcls .mat file (%s: %s)" % (path, type(e).__name__, e))
    seg = np.asarray(seg)
    if seg.ndim != 2 or seg.min() < 0 or seg.max() > 255:
        raise InputError("%s: GTcls.Segmentation is not a 2-D class map" % path)
    return seg.astype(np.uint8)


def _read_ids(path):
    ids = lists.read_ids(path)
    if not ids:
        raise InputError("%s: empty list" % path)
    return ids


def prepare_voc(voc_root, sbd_root, out_dir, skip_bad=False, workers=None, force=False):
    """Write `out_dir` with SegmentationClassAug/<id>.png and the lists
    train_aug.txt (if `sbd_root`), train.txt and val.txt ("image label" lines
    relative to out_dir). Returns the manifest dict. A no-op when out_dir
    already holds the result for the same inputs; a folder that is not an
    earlier output is replaced only with `force`, an input never."""
    voc = voc_dir(voc_root)
    sets = os.path.join(voc, "ImageSets", "Segmentation")
    voc_train = _read_ids(os.path.join(sets, "train.txt"))
    voc_val = _read_ids(os.path.join(sets, "val.txt"))
    both = sorted(set(voc_train) & set(voc_val))
    if both:
        raise InputError("%s: %d id(s) listed in both train.txt and val.txt"
                         % (sets, len(both)), both)
    splits = {"train": sorted(set(voc_train)), "val": sorted(set(voc_val))}
    roots = [voc]  # the trees read, not the folders above them that the user may have named

    sbd = None
    if sbd_root is not None:
        sbd = sbd_dir(sbd_root)
        roots.append(sbd)
        sbd_ids = set()
        for name in ("train.txt", "val.txt"):
            sbd_ids.update(_read_ids(os.path.join(sbd, name)))
        splits["train_aug"] = sorted((sbd_ids | set(voc_train)) - set(voc_val))
    else:
        log.warning("no SBD tree given: writing train and val only, no train_aug")

    with_voc_label = set(voc_train) | set(voc_val)
    ids = sorted(set().union(*splits.values()))

    def image(i):
        """The image of `i`: VOC's JPEGImages, else SBD's img (None if neither has it)."""
        candidates = [os.path.join(voc, "JPEGImages", i + ".jpg")]
        if sbd is not None:
            candidates.append(os.path.join(sbd, "img", i + ".jpg"))
        found = next((c for c in candidates if os.path.exists(c)), None)
        return found, candidates

    def label(i):
        if i in with_voc_label:
            return os.path.join(voc, "SegmentationClass", i + ".png")
        return os.path.join(sbd, "cls", i + ".mat")

    inputs = [p for i in ids for p in (image(i)[0] or image(i)[1][0], label(i))]
    lists_read = [os.path.join(sets, "train.txt"), os.path.join(sets, "val.txt")]
    if sbd is not None:
        lists_read += [os.path.join(sbd, "train.txt"), os.path.join(sbd, "val.txt")]
    # the files themselves too: a linked JPEGImages/ may lie inside --out
    fileio.check_disjoint([out_dir], roots + lists_read + inputs)
    fp = fingerprint(lists_read + inputs, {"format": FORMAT, "skip_bad": bool(skip_bad)})
    manifest = current_manifest(out_dir, fp)
    if manifest is not None:
        return manifest

    out_abs = os.path.abspath(out_dir)
    with fileio.output_dir(out_dir, roots + lists_read + inputs, force,
                           is_prepared(FORMAT)) as tmp:
        def work(i):
            img_path, looked = image(i)
            if img_path is None:
                raise InputError("%s: no image (looked for %s)" % (i, " and ".join(looked)))
            lbl_path = label(i)
            img = imageio.read_image(img_path)
            if lbl_path.endswith(".mat"):
                lbl = read_sbd_label(lbl_path)
            else:
                lbl = imageio.read_label(lbl_path)
            check_pair(img, lbl, NUM_CLASSES, img_path, lbl_path)
            imageio.write_label_png(os.path.join(tmp, LABEL_DIR, i + ".png"), lbl)
            return i, img_path

        done, problems = run_checked(ids, work, skip_bad, "voc labels", workers)
        good = dict(done)
        counts = write_split_lists(
            tmp, {name: [(good[i], os.path.join(out_abs, LABEL_DIR, i + ".png"))
                         for i in split if i in good]
                  for name, split in sorted(splits.items())}, out_abs, datasets.get("voc"))
        manifest = dict(format=FORMAT, fingerprint=fp, counts=counts,
                        num_classes=NUM_CLASSES, voc=os.path.abspath(voc),
                        sbd=os.path.abspath(sbd) if sbd else None,
                        skipped=problems)
        write_manifest(tmp, **manifest)
    return manifest
