"""One's own dataset: a folder of images and a folder of label PNGs.

Pairs: every image under the images folder (recursive; the extensions of
`fcrn.imageio.IMAGE_EXTENSIONS`) has its label at the same relative path in
the labels folder, extension replaced by the label suffix (default `.png`;
`_mask.png` for `a.jpg` -> `a_mask.png`). The two folders may be one: a file
that is another image's label is not an image. A label holds class indices
0..N-1 (a grey PNG, or a palette PNG whose indices are the classes) and 255
for pixels not scored.

Splits: when the images folder has split sub-folders (`train` or
`training`, `val`, `validation` or `valid`, `test` or `testing`: as
mmsegmentation's `img_dir/train`, ADE20K's `images/training`), those, with
the labels under the same sub-folders of the labels folder (`test` may have
none: its list is then image-only). A train folder is needed; without a val
folder, `val` is held out of it as below. Images beside the split folders
are refused (they would be in no split). Without split folders every image
is in one pool, and about `val_fraction` of it is held out as `val`, chosen
by a hash of each image's path: reproducibly, and an image keeps its split
when others are added.

Links to folders are followed (`fcrn.lists.files_under`). An image whose
label another image claims too (`a.jpg` and `a.png` -> `a.png`) is refused.
The manifest counts each split's pixels per class; a class with no pixel
in train is warned of, and a train split with no labelled pixel refused.
Images that decoding turns by their EXIF orientation are named: their
labels must be drawn on the turned image.

Output, as the VOC and Cityscapes preparation: the lists `train.txt`,
`val.txt` (and `test.txt`), "image label" per line, relative to the output
folder (the lists name the user's own files, which are not copied),
`classes.txt` (the classes, for make_net.py, infer.py and evaluate.py
--classes) and `manifest.json`. Every pair is read and checked first; bad
ones are listed and nothing is written (unless `skip_bad`).
"""
import collections
import hashlib
import logging
import os

import numpy as np

from .. import datasets, fileio, imageio, lists
from ..errors import InputError, UsageError
from .common import (check_pair, current_manifest, fingerprint, is_prepared, run_checked,
                     write_manifest, write_split_lists)

log = logging.getLogger(__name__)

FORMAT = "fcrn-folder/1"
# The version of what preparing checks and records: outputs made by earlier
# checks are prepared again (their format is the same, so they stay the
# tool's own).
CHECKS = 2
# The names a split's folder may have.
SPLIT_NAMES = {"train": ("train", "training"), "val": ("val", "validation", "valid"),
               "test": ("test", "testing")}
CLASSES = "classes.txt"


def image_names(images, labels, suffix):
    """The test of a file name under `images` for an image: an image's
    extension, and, where labels sit beside their images named by a suffix
    that is more than an extension (_mask.png), not that suffix (a file so
    named is a label, even with no image)."""
    beside = os.path.realpath(images) == os.path.realpath(labels) and \
        os.path.splitext(suffix)[0]
    return lambda name: imageio.is_image_name(name) and not (beside and name.endswith(suffix))


def find_images(images, labels, suffix):
    """[(image, label)] of one folder pair, sorted by image path; a file
    that is the label of another image is left out of the images."""
    found = lists.files_under(images, image_names(images, labels, suffix))
    real_labels = os.path.realpath(labels)
    if real_labels != os.path.realpath(images):  # labels kept inside the images folder
        found = [p for p in found if not fileio.within(os.path.realpath(p), real_labels)]

    def label(path):
        return os.path.join(labels, os.path.splitext(os.path.relpath(path, images))[0] + suffix)
    taken = {os.path.realpath(label(p)) for p in found}
    orphans = [path for path in _files(labels, suffix)
               if os.path.realpath(path) not in taken and path not in found]
    if orphans:  # a label's image renamed or lost: say so rather than drop the pair
        log.warning("%d label(s) with no image, left out:\n  %s", len(orphans),
                    "\n  ".join(orphans[:20]) + ("\n  ..." if len(orphans) > 20 else ""))
    pairs = [(p, label(p)) for p in found if os.path.realpath(p) not in taken]
    claims = collections.defaultdict(list)  # by path, not file: one mask may serve
    for image, lbl in pairs:                # two exposures through a link
        claims[os.path.abspath(lbl)].append(image)
    shared = ["%s: label of %s" % (lbl, ", ".join(images_))
              for lbl, images_ in claims.items() if len(images_) > 1 and os.path.exists(lbl)]
    if shared:  # a.jpg and a.png: one label cannot be both pictures'
        raise InputError("%d label(s) named by more than one image; rename the images "
                         "or their labels" % len(shared), sorted(shared))
    return pairs


def _files(folder, suffix):
    """Files under `folder` (recursive, sorted) whose names end with `suffix`."""
    if not os.path.isdir(folder):
        return []
    return lists.files_under(folder, lambda n: n.endswith(suffix))


def hold_out(pairs, images, fraction):
    """(train, val): val holds the pairs whose image path (relative to
    `images`) hashes below `fraction` of the hash range, about that share of
    them, and at least one and not all. An image keeps its split when others
    are added or removed (the lowest and highest hashes decide the edge cases
    of a set too small for the share)."""
    if len(pairs) < 2:
        raise InputError("%s: %d image(s); at least 2 are needed to hold one out for val"
                         % (images, len(pairs)))

    def share(pair):
        digest = hashlib.sha1(os.path.relpath(pair[0], images).encode(
            "utf-8", "surrogateescape")).digest()
        return int.from_bytes(digest[:8], "big") / 2.0 ** 64
    ranked = sorted(pairs, key=share)
    n_val = sum(share(p) < fraction for p in ranked)
    val = set(p[0] for p in ranked[:min(len(pairs) - 1, max(1, n_val))])
    return [p for p in pairs if p[0] not in val], [p for p in pairs if p[0] in val]


def _one_folder_hint(images, labels):
    """Where images and labels share a folder, an image named as a label is
    one (a.png beside a.jpg): PNG images need labels named otherwise."""
    if os.path.realpath(images) != os.path.realpath(labels):
        return ""
    return ("; images and labels are one folder, where a file named as a label is one: "
            "give the labels a suffix of their own (e.g. --label-suffix _mask.png)")


def split_folders(images):
    """{split: its folder's name} of the split sub-folders of `images` (any
    case)."""
    entries = [e for e in os.listdir(images) if os.path.isdir(os.path.join(images, e))]
    named = {}
    for split, names in SPLIT_NAMES.items():
        present = sorted(e for e in entries if e.lower() in names)
        if len(present) > 1:
            raise InputError("%s: folders %s each name the %s split; keep one"
                             % (images, ", ".join(present), split))
        if present:
            named[split] = present[0]
    if named and "train" not in named:
        raise InputError("%s: split folder(s) %s but no train folder (%s); a folder so named "
                         "that is not a split needs another name" % (
                             images, ", ".join(sorted(named.values())),
                             " or ".join(SPLIT_NAMES["train"])))
    return named


def _outside(images, labels, named, is_image):
    """The images under `images` (files `is_image` accepts) that are in none
    of its split folders, nor in the labels folder."""
    apart = [os.path.realpath(os.path.join(images, n)) for n in named.values()]
    apart.append(os.path.realpath(labels))
    return [p for p in lists.files_under(images, is_image)
            if not any(fileio.within(os.path.realpath(p), a) for a in apart)]


def find_splits(images, labels, suffix, val_fraction):
    """({split: [(image, label or None)]}, how the splits were made)."""
    named = split_folders(images)
    if not named:
        pairs = find_images(images, labels, suffix)
        if not pairs:
            raise InputError("%s: no image (%s)%s" % (
                images, ", ".join(imageio.IMAGE_EXTENSIONS), _one_folder_hint(images, labels)))
        train, val = hold_out(pairs, images, val_fraction)
        return {"train": train, "val": val}, "val fraction %g" % val_fraction
    stray = _outside(images, labels, named, image_names(images, labels, suffix))
    if stray:
        raise InputError("%d image(s) outside the split folders %s, in no split; move them "
                         "into one" % (len(stray), ", ".join(sorted(named.values()))), stray)
    splits = {}
    for split, name in named.items():
        folder = os.path.join(images, name)
        pairs = find_images(folder, os.path.join(labels, name), suffix)
        if split == "test" and not os.path.isdir(os.path.join(labels, name)):
            pairs = [(image, None) for image, _ in pairs]
        if not pairs:
            raise InputError("%s: no image%s" % (folder, _one_folder_hint(images, labels)))
        splits[split] = pairs
    _check_apart(splits)
    how = "folders"
    if "val" not in splits:  # hashed as when every image was pooled: val stays val
        splits["train"], splits["val"] = hold_out(splits["train"], images, val_fraction)
        how = "folders, val fraction %g of train" % val_fraction
    return {s: splits[s] for s in SPLIT_NAMES if s in splits}, how


def _check_apart(splits):
    """Refuse an image in two splits (a link in one split's folder to
    another's)."""
    found = collections.defaultdict(set)
    for split, pairs in splits.items():
        for image, _ in pairs:
            found[os.path.realpath(image)].add(split)
    twice = sorted("%s: in %s" % (image, " and ".join(sorted(s)))
                   for image, s in found.items() if len(s) > 1)
    if twice:
        raise InputError("%d image(s) in more than one split" % len(twice), twice)


def class_pixels(label, num_classes):
    """Pixels of each class in a checked label map, then the ignored ones."""
    values = np.where(label == datasets.IGNORE_LABEL, num_classes, label).ravel()
    return np.bincount(values, minlength=num_classes + 1)


def count_pixels(done, data):
    """{split: {"classes": [pixels per class], "ignored": n}} of the checked
    pairs [((split, image, label), class_pixels or None, _)]. A class without a
    pixel in train is warned of (with a hint where the labels hold only 0
    and the ignore label, as binary masks saved 0/255); a train split
    without a labelled pixel is an InputError."""
    n = data.num_classes
    totals = {}
    for (split, _, _), found, _ in done:
        if found is not None:
            totals[split] = totals.get(split, 0) + found
    train = totals.get("train", np.zeros(n + 1, np.int64))
    if not train[:n].any():
        raise InputError("train split: no labelled pixel (every label pixel is %d, not "
                         "scored)" % datasets.IGNORE_LABEL)
    missing = [data.classes[c] for c in range(n) if not train[c]]
    if missing:
        every = sum(totals.values())
        binary = every[0] and every[n] and not every[1:n].any()
        log.warning("class(es) with no pixel in the train split: %s%s", ", ".join(missing),
                    "; the labels hold only 0 and %d, which marks pixels not scored: binary "
                    "masks saved as 0/255 need their foreground as 1" % datasets.IGNORE_LABEL
                    if binary else "")
    return {split: {"classes": [int(v) for v in t[:n]], "ignored": int(t[n])}
            for split, t in totals.items()}


def prepare_folder(images, labels, out_dir, classes_file=None, num_classes=None,
                   label_suffix=".png", val_fraction=0.1, skip_bad=False, workers=None,
                   force=False):
    """Check every pair and write the lists, classes.txt and manifest.json
    into `out_dir` (see the module docstring). Returns the manifest dict; a
    no-op when `out_dir` already holds the result for the same inputs; a
    folder that is not an earlier output is replaced only with `force`, an
    input never."""
    data = datasets.generic(num_classes, classes_file)
    for folder, what in ((images, "images"), (labels, "labels")):
        if not os.path.isdir(folder):
            raise InputError("%s: %s folder %s" % (folder, what, "not found" if not
                                                    os.path.exists(folder) else "is a file"))
    if not label_suffix or os.sep in label_suffix:
        raise UsageError("label suffix %r: give the end of a label's file name, e.g. .png"
                         % label_suffix)
    if not 0 < val_fraction < 1:
        raise UsageError("val fraction must lie in (0, 1), not %r" % val_fraction)
    roots = [images, labels] + ([classes_file] if classes_file else [])
    fileio.check_disjoint([out_dir], roots)
    splits, how = find_splits(images, labels, label_suffix, val_fraction)
    items = [(split, image, label) for split, pairs in splits.items() for image, label in pairs]
    inputs = [p for it in items for p in it[1:] if p is not None]
    fp = fingerprint(inputs, {"format": FORMAT, "checks": CHECKS, "skip_bad": bool(skip_bad),
                              "splits": how, "suffix": label_suffix, "classes": data.classes,
                              "colours": data.colours})
    manifest = current_manifest(out_dir, fp)
    if manifest is not None:
        return manifest

    def work(item):
        """(item, class_pixels or None, EXIF orientation that decoding applied or None)."""
        split, image_path, label_path = item
        encoded = imageio.read_bytes(image_path)
        img = imageio.decode_image(encoded, image_path)  # corrupt files are caught now
        turn = imageio.exif_turn(encoded, img, image_path)
        if label_path is None:
            return item, None, turn
        if not os.path.exists(label_path):
            raise InputError("%s: no label (looked for %s)" % (image_path, label_path))
        lbl = imageio.read_label(label_path)
        try:
            check_pair(img, lbl, data.num_classes, image_path, label_path)
        except InputError as e:
            if turn and img.shape[:2] != lbl.shape[:2]:
                raise InputError("%s; the image is turned by its EXIF orientation %d, as "
                                 "viewers show it: draw the label on the turned image"
                                 % (e, turn))
            raise
        return item, class_pixels(lbl, data.num_classes), turn

    out_abs = os.path.abspath(out_dir)
    # The files too, not only the roots: a linked folder's images may lie
    # anywhere, and --force must not replace them.
    with fileio.output_dir(out_dir, roots + inputs, force, is_prepared(FORMAT)) as tmp:
        done, problems = run_checked(items, work, skip_bad, "pairs", workers)
        counts = write_split_lists(
            tmp, {split: [(os.path.abspath(image), label and os.path.abspath(label))
                          for (s, image, label), _, _ in done if s == split]
                  for split in splits}, out_abs, data)
        turned = ["%s (orientation %d)" % (image, turn)
                  for (_, image, _), _, turn in done if turn]
        if turned:  # a label drawn on the stored pixels of a square image fits, wrongly
            log.warning("%d image(s) turned by their EXIF orientation, as viewers show them "
                        "and as training reads them; their labels must be drawn on the turned "
                        "image:\n  %s", len(turned), "\n  ".join(turned[:20]))
        pixels = count_pixels(done, data)
        datasets.write_classes(os.path.join(tmp, CLASSES), data.classes, data.colours)
        manifest = dict(format=FORMAT, fingerprint=fp, counts=counts,
                        num_classes=data.num_classes, classes=list(data.classes),
                        images=os.path.abspath(images), labels=os.path.abspath(labels),
                        splits=how, skipped=problems, pixels=pixels)
        write_manifest(tmp, **manifest)
    return manifest
