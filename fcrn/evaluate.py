"""Semantic-segmentation metrics of the paper (Section 4.1) from one confusion matrix.

Pixel accuracy, mean class-wise pixel accuracy and mean IoU are computed, as in
FCN's ``score.py``, from a confusion matrix accumulated with ``np.bincount`` over
the *whole* set: a class's IoU is its intersection summed over all images divided
by its union summed over all images, which is not the mean of per-image scores.

Conventions (both tested):

- Ground-truth pixels equal to ``ignore_label`` (255) are not counted at all.
- A class absent from both the ground truth and the predictions of the whole set
  has IoU 0/0 = NaN and is left out of the mean (as FCN's score.py, mmsegmentation
  and cityscapesScripts do). A class absent from the ground truth but predicted
  somewhere has IoU 0 and counts. Class accuracy is NaN for a class absent from
  the ground truth and is left out of the mean accuracy.
- A predicted 255 (the ignore label, or a Cityscapes labelId that is not
  evaluated) on a valid ground-truth pixel is an error for that pixel's class (a
  false negative) and a false positive for no class: the matrix has one extra
  column for it. This is what cityscapesScripts does with such predictions. Any
  other value outside 0..n-1 in a prediction file is refused: it comes from
  another label set.

Cityscapes: ground truth is read as the official ``*_gtFine_labelIds.png`` and
mapped to the 19 train ids; the IoU computed here then equals cityscapesScripts'
``evalPixelLevelSemanticLabeling`` (tests/test_evaluate.py checks it where the
package is installed).
"""
import concurrent.futures
import json
import logging
import math
import os

import numpy as np

from . import datasets, fileio, imageio, lists
from .data import cityscapes as cityscapes_data
from .errors import InputError

log = logging.getLogger(__name__)

IGNORE_LABEL = datasets.IGNORE_LABEL


class ConfusionMatrix:
    """Confusion matrix accumulated over a set: rows ground truth, columns prediction.

    ``hist`` has ``num_classes + 1`` columns; the last one counts predictions that
    are not a class (see the module docstring).
    """

    def __init__(self, num_classes, ignore_label=IGNORE_LABEL):
        self.num_classes = int(num_classes)
        self.ignore_label = ignore_label
        self.hist = np.zeros((self.num_classes, self.num_classes + 1), np.int64)

    def update(self, gt, pred):
        gt = np.asarray(gt)
        pred = np.asarray(pred)
        if gt.shape != pred.shape:
            raise ValueError("ground truth %s and prediction %s differ in shape"
                             % (gt.shape, pred.shape))
        n = self.num_classes
        valid = gt != self.ignore_label
        g = gt[valid].astype(np.int64)
        if g.size and (g.min() < 0 or g.max() >= n):
            bad = np.unique(g[(g < 0) | (g >= n)])
            raise ValueError("ground truth has labels %s outside 0..%d and not %d "
                             "(wrong --dataset or label format?)"
                             % (bad[:10].tolist(), n - 1, self.ignore_label))
        p = pred[valid].astype(np.int64)
        p[(p < 0) | (p >= n)] = n
        self.hist += np.bincount((n + 1) * g + p,
                                 minlength=n * (n + 1)).reshape(n, n + 1)
        return self

    def merge(self, other):
        self.hist += other.hist
        return self

    def scores(self):
        """Dict of pixel_acc, mean_acc, mean_iou, fw_iou and per-class acc/iou (0..1)."""
        n = self.num_classes
        hist = self.hist.astype(np.float64)
        tp = np.diag(hist[:, :n])
        gt_count = hist.sum(1)
        pred_count = hist[:, :n].sum(0)
        union = gt_count + pred_count - tp
        total = hist.sum()
        with np.errstate(divide="ignore", invalid="ignore"):
            acc = tp / gt_count
            iou = tp / union
            pixel_acc = tp.sum() / total if total else float("nan")
        freq = gt_count / total if total else np.zeros(n)
        has_gt = gt_count > 0
        return {
            "pixel_acc": float(pixel_acc),
            "mean_acc": _nanmean(acc),
            "mean_iou": _nanmean(iou),
            "fw_iou": float((freq[has_gt] * iou[has_gt]).sum()) if total else float("nan"),
            "class_acc": acc,
            "class_iou": iou,
            "num_pixels": int(total),
        }


def _nanmean(x):
    x = np.asarray(x, np.float64)
    ok = ~np.isnan(x)
    return float(x[ok].mean()) if ok.any() else float("nan")


def _parts(path):
    """The components of a relative path, as a tuple."""
    return tuple(p for p in os.path.normpath(path).split(os.sep) if p not in ("", "."))


def _common_tail(a, b):
    """How many last components two tuples of path components share."""
    n = 0
    while n < min(len(a), len(b)) and a[-1 - n] == b[-1 - n]:
        n += 1
    return n


class FileIndex:
    """The files under `root` (recursive) whose names end with `suffix`, by
    id: the path relative to root without the suffix, as components. `what`
    names them in problems."""

    def __init__(self, root, suffix, what):
        self.root, self.suffix, self.what = root, suffix, what
        self._by_name = {}
        for path in lists.files_under(
                root, lambda name: name.endswith(suffix) and len(name) > len(suffix)):
            rel = os.path.relpath(path, root)
            parts = _parts(rel[:len(rel) - len(suffix)])
            if parts:  # not a file named as the suffix after a dot ("..png")
                self._by_name.setdefault(parts[-1], []).append((parts, path))

    def ids(self):
        return sorted(parts for found in self._by_name.values() for parts, _ in found)

    def find(self, parts):
        """The paths of the files that `parts` can name: the one of that id,
        else those of that name whose ids share the longest tail with `parts`
        (flat predictions pair with per-city ground truth; a list's
        `images/val/a.jpg` with `labels/val/a.png` rather than with
        `labels/train/a.png`). More than one is an ambiguity."""
        found = self._by_name.get(parts[-1], ())
        exact = [path for ident, path in found if ident == parts]
        if exact:
            return exact
        shared = [(_common_tail(ident, parts), path) for ident, path in found]
        longest = max((n for n, _ in shared), default=0)
        return [path for n, path in shared if n == longest]

    def describe(self, parts, paths):
        """A problem's words for `parts`, which names none or several of `paths`."""
        if not paths:
            shown = [p for p in parts if p != os.pardir] or parts
            return "no %s %s%s under %s" % (self.what, os.path.join(*shown), self.suffix,
                                           self.root)
        return "%d %ss under %s fit it: %s" % (
            len(paths), self.what, self.root,
            ", ".join(os.path.relpath(p, self.root) for p in paths))


def _list_entry(entry, suffixes):
    """(as listed, components as listed, components without the first of
    `suffixes` its name ends with, any case): a list's entry may be an id,
    an image's path or a label's."""
    listed = _parts(entry.strip())
    if not listed:
        return None
    name = listed[-1]
    for suffix in suffixes:
        if name.lower().endswith(suffix.lower()) and len(name) > len(suffix):
            name = name[:len(name) - len(suffix)]
            break
    return entry.strip(), listed, listed[:-1] + (name,)


def pair_files(gt_root, pred_root, gt_suffix=".png", pred_suffix=".png", ids=None):
    """[(name, gt_path, pred_path)] and the problems found: without `ids`,
    every ground truth in id order, named by its path under `gt_root`;
    with `ids` (e.g. VOC's val.txt, or the first fields of a prepared list:
    ids or paths, with a suffix or an image extension), those, in their
    order, named as listed.

    Files pair by their paths relative to their roots; where those differ,
    by the longest tail they share (FileIndex.find), so flat predictions
    pair with ground truth in per-city folders, and a prepared list's image
    paths with labels in a folder of their own. A prediction of a list
    entry is looked for with the entry's extension kept too (infer.py names
    `c.png` and `c.jpg` `c.png.png` and `c.jpg.png`). Problems: an entry
    naming no file or several, and a file paired twice.
    """
    for root, what in ((gt_root, "ground-truth"), (pred_root, "prediction")):
        if not os.path.isdir(root):
            raise InputError("%s: %s folder %s" % (root, what, "not found" if not
                                                     os.path.exists(root) else "is a file"))
    gts = FileIndex(gt_root, gt_suffix, "ground truth")
    preds = FileIndex(pred_root, pred_suffix, "prediction")
    if ids is None:
        entries = [(os.path.join(*parts), parts, parts) for parts in gts.ids()]
    else:
        suffixes = (gt_suffix, pred_suffix) + imageio.IMAGE_EXTENSIONS
        entries = list(filter(None, (_list_entry(e, suffixes) for e in ids)))
    problems, pairs, paired = [], [], ({}, {})
    for name, listed, parts in entries:
        found = gts.find(parts)
        if len(found) != 1:
            problems.append("%s: %s" % (name, gts.describe(parts, found)))
            continue
        mine = preds.find(listed) if listed != parts else []
        mine = mine or preds.find(parts)
        if len(mine) != 1:
            problems.append("%s: %s" % (name, preds.describe(parts, mine)))
            continue
        for path, seen in zip((found[0], mine[0]), paired):
            if path in seen:
                problems.append("%s: %s is %s's too; each file pairs once"
                                % (name, path, seen[path]))
            seen.setdefault(path, name)
        pairs.append((name, found[0], mine[0]))
    return pairs, problems


class EvaluationError(InputError):
    """The inputs cannot be evaluated; ``problems`` lists every reason found."""

    def __init__(self, problems):
        super().__init__("%d problem(s)" % len(problems), problems)


def check_sizes(pairs):
    """Problems for pairs whose prediction size differs from the ground truth's."""
    problems = []
    for key, gt_path, pred_path in pairs:
        try:
            g, p = imageio.image_size(gt_path), imageio.image_size(pred_path)
        except InputError as e:
            problems.append("%s: %s" % (key, e))
            continue
        if g != p:
            problems.append("%s: prediction is %dx%d, ground truth %dx%d (HxW)"
                            % (key, p[0], p[1], g[0], g[1]))
    return problems


def evaluate_pairs(pairs, num_classes, gt_map=None, pred_map=None, jobs=1,
                   progress=None):
    """Accumulate one ConfusionMatrix over all pairs.

    ``gt_map`` / ``pred_map``: optional ``f(label, path)`` giving the class
    indices of a decoded map (e.g. Cityscapes labelIds -> trainIds,
    ``Dataset.classes_of_label_ids``).
    ``progress`` wraps the iterator (e.g. tqdm). Sizes are checked first, so
    nothing is scored when any pair is bad. Each pair is scored where it is
    decoded, in ``jobs`` threads, so that only ``jobs`` pairs of maps are in
    memory at a time.
    """
    problems = check_sizes(pairs)
    if problems:
        raise EvaluationError(problems)

    def score(pair):
        _, gt_path, pred_path = pair
        gt, pred = imageio.read_label(gt_path), imageio.read_label(pred_path)
        if gt_map is not None:
            gt = gt_map(gt, gt_path)
        if pred_map is not None:
            pred = pred_map(pred, pred_path)
        try:
            one = ConfusionMatrix(num_classes).update(gt, pred)
        except ValueError as e:
            raise InputError("%s: %s" % (gt_path, e))
        # After the ground truth's check, which names the likelier mistake.
        _check_prediction(pred, num_classes, pred_path)
        return one

    cm = ConfusionMatrix(num_classes)
    # PNG decoding releases the GIL, so threads decode side by side.
    with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        try:
            scored = pool.map(score, pairs) if jobs > 1 else map(score, pairs)
            for one in (progress(scored) if progress else scored):
                cm.merge(one)
        finally:  # a refusal ends the run: the pairs not started are not scored
            pool.shutdown(cancel_futures=True)
    return cm


def _check_prediction(pred, num_classes, path):
    """A predicted value that is neither a class nor the ignore label comes
    from another label set (wrong --num-classes or --dataset): refused."""
    bad = np.unique(pred[((pred >= num_classes) | (pred < 0)) & (pred != IGNORE_LABEL)])
    if bad.size:
        raise InputError("%s: prediction has values %s outside 0..%d (and not %d, the ignore "
                         "label); wrong --dataset or --num-classes?"
                         % (path, bad[:10].tolist(), num_classes - 1, IGNORE_LABEL))


def label_counts(paths, num_classes, ignore_label=IGNORE_LABEL):
    """(pixels, images): per class, its pixels and the number of images it
    appears in, over the label maps `paths` (ignore and values outside the
    classes not counted)."""
    pixels = np.zeros(num_classes, np.int64)
    images = np.zeros(num_classes, np.int64)
    for path in paths:
        label = imageio.read_label(path)
        valid = label[(label != ignore_label) & (label < num_classes)]
        counts = np.bincount(valid.ravel().astype(np.int64), minlength=num_classes)
        pixels += counts
        images += counts > 0
    return pixels, images


def majority_baseline(train_labels, pairs, num_classes, ignore_label=IGNORE_LABEL):
    """ConfusionMatrix of predicting, everywhere, the class most frequent in
    the label maps `train_labels` (paths), scored on the ground truth of
    `pairs` [(id, gt path, ...)], and that class."""
    majority = int(np.argmax(label_counts(train_labels, num_classes, ignore_label)[0]))
    cm = ConfusionMatrix(num_classes, ignore_label)
    for pair in pairs:
        gt = imageio.read_label(pair[1])
        try:
            cm.update(gt, np.full_like(gt, majority))
        except ValueError as e:
            raise InputError("%s: %s" % (pair[1], e))
    return cm, majority


# --- reports ----------------------------------------------------------------

def _pct(x, digits):
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) \
        else "%.*f" % (digits, 100.0 * x)


def markdown_report(scores, class_names, name="FCRN"):
    """Markdown: a summary row as in Tables 1-4 and a per-class IoU row as in
    Tables 5 and 6 (percent; n/a for a class absent from GT and prediction)."""
    lines = ["| Method | Pixel acc. % | Mean acc. % | Mean IoU % |",
             "|---|---:|---:|---:|",
             "| %s | %s | %s | %s |" % (name, _pct(scores["pixel_acc"], 2),
                                        _pct(scores["mean_acc"], 2),
                                        _pct(scores["mean_iou"], 2)),
             "",
             "| Method | " + " | ".join(class_names) + " | Mean |",
             "|---|" + "---:|" * (len(class_names) + 1),
             "| %s | " % name + " | ".join(_pct(float(v), 1) for v in scores["class_iou"])
             + " | %s |" % _pct(scores["mean_iou"], 1)]
    return "\n".join(lines) + "\n"


def json_report(cm, scores, class_names, extra=None):
    def num(x):
        x = float(x)
        return None if math.isnan(x) else x
    out = {
        "pixel_acc": num(scores["pixel_acc"]),
        "mean_acc": num(scores["mean_acc"]),
        "mean_iou": num(scores["mean_iou"]),
        "fw_iou": num(scores["fw_iou"]),
        "num_pixels": scores["num_pixels"],
        "classes": list(class_names),
        "class_iou": {c: num(v) for c, v in zip(class_names, scores["class_iou"])},
        "class_acc": {c: num(v) for c, v in zip(class_names, scores["class_acc"])},
        # Rows: ground truth; columns: prediction, the last one "not a class".
        "confusion_matrix": cm.hist.tolist(),
        "convention": "whole-set confusion matrix; ignore label %d not counted; a class "
                      "absent from ground truth and prediction has IoU null, excluded "
                      "from the mean" % cm.ignore_label,
    }
    if extra:
        out.update(extra)
    return json.dumps(out, indent=1) + "\n"


def is_report(path):
    """Whether `path` is a report this module wrote (Markdown or JSON)."""
    try:
        with open(path) as f:
            text = f.read(16 << 20)  # a report is far smaller; do not slurp a stranger's file
    except (OSError, UnicodeDecodeError):
        return False
    return text.startswith("| Method | Pixel acc. %") or \
        '"convention": "whole-set confusion matrix' in text


def class_names(dataset, num_classes=None, classes_file=None):
    """Class names of a registry dataset, or of a generic one (`classes_file`,
    else class0.. class<num_classes - 1>)."""
    return list(datasets.resolve(dataset, num_classes, classes_file).classes)


def run(gt, pred, dataset="voc", num_classes=None, list_file=None, gt_suffix=None,
        pred_suffix=None, gt_format=None, pred_format="trainid", name="FCRN", out_md=None,
        out_json=None, jobs=1, progress=False, force=False, ids=None, classes_file=None):
    """Score the predictions under `pred` against the ground truth under `gt`
    (both searched recursively, paired by id) and write the reports.

    `dataset`: a registry name, or generic with `classes_file` (the names in
    the reports) or `num_classes`; None: generic when either is given, else
    voc. Cityscapes ground truth is read as labelIds (`gt_format`, default
    labelid; trainid: what prepare_cityscapes writes) and mapped to train
    ids, predictions as train ids unless `pred_format` is labelid; a value
    that is not a Cityscapes labelId is refused. `ids` (or the ids of
    `list_file`) restrict the set to those images (`pair_files`). Returns
    (scores, ConfusionMatrix, Markdown text). Refuses, listing every
    problem, when an entry has no ground truth or prediction or several,
    a file pairs twice, or a prediction's size is not its ground truth's.
    """
    data = datasets.resolve(dataset, num_classes, classes_file)
    names = list(data.classes)
    cityscapes = data.name == "cityscapes"
    outputs = [p for p in (out_md, out_json) if p]
    fileio.check_targets(outputs, [gt, pred, list_file, classes_file], force, is_report)
    gt_map = pred_map = None
    if cityscapes:
        gt_format = gt_format or "labelid"
        gt_suffix = gt_suffix or (cityscapes_data.LABEL_SUFFIX if gt_format == "labelid"
                                  else cityscapes_data.OUT_SUFFIX)
        pred_suffix = pred_suffix or cityscapes_data.IMG_SUFFIX
        gt_map = data.classes_of_label_ids if gt_format == "labelid" else None
        pred_map = data.classes_of_label_ids if pred_format == "labelid" else None
    gt_suffix, pred_suffix = gt_suffix or ".png", pred_suffix or ".png"
    if list_file:
        ids = lists.read_ids(list_file)
        if not ids:
            raise InputError("%s: the id list is empty" % list_file)
    pairs, problems = pair_files(gt, pred, gt_suffix, pred_suffix, ids)
    if not pairs and not problems:
        problems.append("no ground truth *%s under %s" % (gt_suffix, gt))
    if problems:
        raise EvaluationError(problems + check_sizes(pairs))
    wrap = None
    if progress:
        from tqdm import tqdm

        def wrap(it):
            return tqdm(it, total=len(pairs), unit="img", desc="evaluate")
    cm = evaluate_pairs(pairs, len(names), gt_map, pred_map, jobs, wrap)
    scores = cm.scores()
    md = markdown_report(scores, names, name)
    log.info("%d images, %d pixels: pixel acc %.2f%%, mean acc %.2f%%, mean IoU %.2f%%",
             len(pairs), scores["num_pixels"], 100 * scores["pixel_acc"],
             100 * scores["mean_acc"], 100 * scores["mean_iou"])
    reports = []
    if out_md:
        reports.append((out_md, fileio.writes(md)))
    if out_json:
        reports.append((out_json, fileio.writes(json_report(
            cm, scores, names, {"dataset": data.name, "num_images": len(pairs)}))))
    fileio.atomic_save_all(reports)  # both or neither
    return scores, cm, md
