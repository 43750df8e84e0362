"""One's own dataset: a folder of images and a folder of label PNGs.

Pairs: every image under the images folder (recursive; the extensions of
`fcrn.imageio.IMAGE_EXTENSIONS`) has its label at the same relative path in
the labels folder, extension replaced by the label suffix (default `.png`;
`_mask.png` for `a.jpg` -> `a_mask.png`). The two folders may be one: a file
that is another image's label is not an image. A label holds class indices
0..N-1 (a grey PNG, or a palette PNG whose indices are the classes) and 255
for pixels not scored.

Splits: when the images folder has sub-folders `train` and `val` (and
optionally `test`), as mmsegmentation's `img_dir/train`, those, with the
labels under the same sub-folders of the labels folder (`test` may have
none: its list is then image-only). Otherwise every image is in one pool,
and about `val_fraction` of it is held out as `val`, chosen by a hash of
each image's path: reproducibly, and an image keeps its split when others
are added.

Output, as the VOC and Cityscapes preparation: the lists `train.txt`,
`val.txt` (and `test.txt`), "image label" per line, relative to the output
folder (the lists name the user's own files, which are not copied),
`classes.txt` (the classes, for make_net.py, infer.py and evaluate.py
--classes) and `manifest.json`. Every pair is read and checked first; bad
ones are listed and nothing is written (unless `skip_bad`).
"""
import hashlib
import logging
import os

from .. import datasets, fileio, imageio
from ..errors import InputError, UsageError
from .common import (check_pair, current_manifest, fingerprint, is_prepared, run_checked,
                     write_manifest, write_split_lists)

log = logging.getLogger(__name__)

FORMAT = "fcrn-folder/1"
SPLITS = ("train", "val", "test")
CLASSES = "classes.txt"


def find_images(images, labels, suffix):
    """[(image, label)] of one folder pair, sorted by image path; a file
    that is the label of another image is left out of the images."""
    found = []
    # Labels beside their images, named by a suffix that is more than an
    # extension (_mask.png): a file so named is a label, even with no image.
    beside = os.path.realpath(images) == os.path.realpath(labels) and \
        os.path.splitext(suffix)[0]
    for dirpath, dirs, names in os.walk(images):
        dirs.sort()
        found += [os.path.join(dirpath, n) for n in sorted(names)
                  if n.lower().endswith(imageio.IMAGE_EXTENSIONS)
                  and not (beside and n.endswith(suffix))]

    def label(path):
        return os.path.join(labels, os.path.splitext(os.path.relpath(path, images))[0] + suffix)
    taken = {os.path.realpath(label(p)) for p in found}
    orphans = [path for path in _files(labels, suffix)
               if os.path.realpath(path) not in taken and path not in found]
    if orphans:  # a label's image renamed or lost: say so rather than drop the pair
        log.warning("%d label(s) with no image, left out:\n  %s", len(orphans),
                    "\n  ".join(orphans[:20]) + ("\n  ..." if len(orphans) > 20 else ""))
    return [(p, label(p)) for p in found if os.path.realpath(p) not in taken]


def _files(folder, suffix):
    """Files under `folder` (recursive, sorted) whose names end with `suffix`."""
    if not os.path.isdir(folder):
        return []
    found = []
    for dirpath, dirs, names in os.walk(folder):
        dirs.sort()
        found += [os.path.join(dirpath, n) for n in sorted(names) if n.endswith(suffix)]
    return found


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


def find_splits(images, labels, suffix, val_fraction):
    """({split: [(image, label or None)]}, how the splits were made)."""
    if all(os.path.isdir(os.path.join(images, s)) for s in ("train", "val")):
        splits = {}
        for split in SPLITS:
            folder = os.path.join(images, split)
            if not os.path.isdir(folder):
                continue
            pairs = find_images(folder, os.path.join(labels, split), suffix)
            if split == "test" and not os.path.isdir(os.path.join(labels, split)):
                pairs = [(image, None) for image, _ in pairs]
            if not pairs:
                raise InputError("%s: no image%s" % (folder, _one_folder_hint(images, labels)))
            splits[split] = pairs
        return splits, "folders"
    pairs = find_images(images, labels, suffix)
    if not pairs:
        raise InputError("%s: no image (%s)%s" % (images, ", ".join(imageio.IMAGE_EXTENSIONS),
                                                  _one_folder_hint(images, labels)))
    train, val = hold_out(pairs, images, val_fraction)
    return {"train": train, "val": val}, "val fraction %g" % val_fraction


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
    fp = fingerprint(inputs, {"format": FORMAT, "skip_bad": bool(skip_bad), "splits": how,
                              "suffix": label_suffix, "classes": data.classes,
                              "colours": data.colours})
    manifest = current_manifest(out_dir, fp)
    if manifest is not None:
        return manifest

    def work(item):
        split, image_path, label_path = item
        img = imageio.read_image(image_path)  # decoded so that corrupt files are caught now
        if label_path is not None:
            if not os.path.exists(label_path):
                raise InputError("%s: no label (looked for %s)" % (image_path, label_path))
            check_pair(img, imageio.read_label(label_path), data.num_classes, image_path,
                       label_path)
        return item

    out_abs = os.path.abspath(out_dir)
    with fileio.output_dir(out_dir, roots, force, is_prepared(FORMAT)) as tmp:
        done, problems = run_checked(items, work, skip_bad, "pairs", workers)
        counts = write_split_lists(
            tmp, {split: [(os.path.abspath(image), label and os.path.abspath(label))
                          for s, image, label in done if s == split]
                  for split in splits}, out_abs, data)
        datasets.write_classes(os.path.join(tmp, CLASSES), data.classes, data.colours)
        manifest = dict(format=FORMAT, fingerprint=fp, counts=counts,
                        num_classes=data.num_classes, classes=list(data.classes),
                        images=os.path.abspath(images), labels=os.path.abspath(labels),
                        splits=how, skipped=problems)
        write_manifest(tmp, **manifest)
    return manifest
