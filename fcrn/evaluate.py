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
- A predicted value outside 0..n-1 (255, or a Cityscapes labelId that is not
  evaluated) on a valid ground-truth pixel is an error for that pixel's class (a
  false negative) and a false positive for no class: the matrix has one extra
  column for it. This is what cityscapesScripts does with such predictions.

Cityscapes: ground truth is read as the official ``*_gtFine_labelIds.png`` and
mapped to the 19 train ids; the IoU computed here then equals cityscapesScripts'
``evalPixelLevelSemanticLabeling`` (tests/test_evaluate.py checks it where the
package is installed).
"""
import json
import math
import os

import numpy as np

IGNORE_LABEL = 255

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car",
    "cat", "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person",
    "pottedplant", "sheep", "sofa", "train", "tvmonitor")

CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
    "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car",
    "truck", "bus", "train", "motorcycle", "bicycle")

# Cityscapes labelId of each train id (cityscapesScripts' helpers/labels.py);
# every other labelId is ignored in evaluation.
CITYSCAPES_TRAIN_TO_LABEL_ID = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25,
                                26, 27, 28, 31, 32, 33)


def cityscapes_label_to_train_lut():
    """256-entry lookup table labelId -> trainId (255 for ids not evaluated)."""
    lut = np.full(256, IGNORE_LABEL, np.uint8)
    lut[list(CITYSCAPES_TRAIN_TO_LABEL_ID)] = np.arange(19, dtype=np.uint8)
    return lut


def cityscapes_train_to_label_lut():
    """256-entry lookup table trainId -> labelId for submissions (0 = unlabeled)."""
    lut = np.zeros(256, np.uint8)
    lut[:19] = CITYSCAPES_TRAIN_TO_LABEL_ID
    return lut


DATASETS = {
    "voc": {"classes": VOC_CLASSES},
    "cityscapes": {"classes": CITYSCAPES_CLASSES},
}


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


def read_label_png(path):
    """Single-channel label map of a PNG: palette indices, or grey values.

    A colour (RGB) image is refused: its colours would have to be mapped back
    through a palette, which is a data-preparation step, not evaluation.
    """
    from PIL import Image  # Debian python3-pil; imported here so the metrics need only numpy
    with Image.open(path) as im:
        if im.mode not in ("P", "L", "I", "I;16", "I;16B", "1"):
            raise ValueError("%s: mode %s is not a single-channel label map"
                             % (path, im.mode))
        return np.array(im)


def png_size(path):
    """(height, width) from the image header, without decoding the pixels."""
    from PIL import Image
    with Image.open(path) as im:
        return im.size[1], im.size[0]


def index_files(root, suffix):
    """{id: path} of files under root (recursive) whose name ends with suffix.

    The id is the file name without the suffix, so ground truth in per-city
    folders pairs with flat prediction folders. Duplicate ids raise.
    """
    found = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            if name.endswith(suffix):
                key = name[:len(name) - len(suffix)]
                path = os.path.join(dirpath, name)
                if key in found:
                    raise ValueError("two files for id %r: %s and %s" % (key, found[key], path))
                found[key] = path
    return found


def pair_files(gt_root, pred_root, gt_suffix=".png", pred_suffix=".png", ids=None):
    """[(id, gt_path, pred_path)] sorted by id, and the problems found.

    ``ids`` (e.g. VOC's val.txt) restricts the set; entries may carry folders or
    the suffix. Problems: ids without ground truth, ground truth without
    prediction.
    """
    gts = index_files(gt_root, gt_suffix)
    preds = index_files(pred_root, pred_suffix)
    problems = []
    if ids is None:
        keys = sorted(gts)
    else:
        keys = []
        for entry in ids:
            key = os.path.basename(entry.strip())
            if key.endswith(gt_suffix):
                key = key[:len(key) - len(gt_suffix)]
            if key:
                keys.append(key)
        for key in keys:
            if key not in gts:
                problems.append("%s: no ground truth %s%s under %s"
                                % (key, key, gt_suffix, gt_root))
    pairs = []
    for key in keys:
        if key not in gts:
            continue
        if key not in preds:
            problems.append("%s: no prediction %s%s under %s"
                            % (key, key, pred_suffix, pred_root))
            continue
        pairs.append((key, gts[key], preds[key]))
    return pairs, problems


class EvaluationError(Exception):
    """The inputs cannot be evaluated; ``problems`` lists every reason found."""

    def __init__(self, problems):
        self.problems = list(problems)
        super().__init__("%d problem(s):\n  %s" % (len(self.problems),
                                                   "\n  ".join(self.problems)))


def check_sizes(pairs):
    """Problems for pairs whose prediction size differs from the ground truth's."""
    problems = []
    for key, gt_path, pred_path in pairs:
        try:
            g, p = png_size(gt_path), png_size(pred_path)
        except (OSError, ValueError) as e:
            problems.append("%s: unreadable: %s" % (key, e))
            continue
        if g != p:
            problems.append("%s: prediction is %dx%d, ground truth %dx%d (HxW)"
                            % (key, p[0], p[1], g[0], g[1]))
    return problems


def evaluate_pairs(pairs, num_classes, gt_lut=None, pred_lut=None, jobs=1,
                   progress=None):
    """Accumulate one ConfusionMatrix over all pairs.

    ``gt_lut`` / ``pred_lut``: optional 256-entry lookup tables applied to the
    decoded maps (e.g. Cityscapes labelId -> trainId). ``progress`` wraps the
    iterator (e.g. tqdm). Sizes are checked first, so nothing is scored when any
    pair is bad.
    """
    problems = check_sizes(pairs)
    if problems:
        raise EvaluationError(problems)

    def load(pair):
        _, gt_path, pred_path = pair
        gt, pred = read_label_png(gt_path), read_label_png(pred_path)
        if gt_lut is not None:
            gt = gt_lut[gt]
        if pred_lut is not None:
            pred = pred_lut[pred]
        return gt, pred

    cm = ConfusionMatrix(num_classes)
    if jobs > 1:
        # PNG decoding releases the GIL, so threads overlap it with bincount.
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(jobs) as pool:
            loaded = pool.map(load, pairs)
            for gt, pred in (progress(loaded) if progress else loaded):
                cm.update(gt, pred)
    else:
        for pair in (progress(pairs) if progress else pairs):
            cm.update(*load(pair))
    return cm


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


def write_atomic(path, text):
    """Write text to path via a temporary file and os.replace: never half-written."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    tmp = os.path.join(d, ".%s.tmp%d" % (os.path.basename(path), os.getpid()))
    try:
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
