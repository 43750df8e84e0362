"""Shared pieces of dataset preparation: file I/O, validation, list files,
fingerprints and all-or-nothing output directories."""
import concurrent.futures
import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile

import cv2
import numpy as np

log = logging.getLogger(__name__)

IGNORE_LABEL = 255
DATA_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "data")
MANIFEST = "manifest.json"


class DatasetError(Exception):
    """Bad input. `problems` lists one human-readable line per bad file."""

    def __init__(self, message, problems=()):
        self.problems = list(problems)
        if self.problems:
            shown = self.problems[:50]
            more = len(self.problems) - len(shown)
            message += ":\n  " + "\n  ".join(shown)
            if more:
                message += "\n  ... and %d more" % more
        super().__init__(message)


def load_classes(name):
    """Class names, palette and extra tables of dataset `name` from data/<name>.json."""
    with open(os.path.join(DATA_DIR, name + ".json")) as f:
        return json.load(f)


# ---------------------------------------------------------------- image I/O

def decode_image(buf, what):
    """Decode encoded bytes to an HxWx3 uint8 BGR array (the order Caffe's
    ImageNet models expect); raise DatasetError naming `what` on failure."""
    img = cv2.imdecode(np.frombuffer(buf, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise DatasetError("%s: not a readable image" % what)
    return img


def decode_label(buf, what):
    """Decode a single-channel 8-bit label PNG. Palette or colour PNGs are
    refused: cv2 would silently expand a palette into colours."""
    lbl = cv2.imdecode(np.frombuffer(buf, np.uint8), cv2.IMREAD_UNCHANGED)
    if lbl is None:
        raise DatasetError("%s: not a readable label image" % what)
    if lbl.ndim != 2 or lbl.dtype != np.uint8:
        raise DatasetError(
            "%s: label must be a single-channel 8-bit PNG (got shape %s, %s); "
            "convert it with scripts/prepare_voc.py or prepare_cityscapes.py"
            % (what, lbl.shape, lbl.dtype))
    return lbl


def read_bytes(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise DatasetError("%s: cannot read (%s)" % (path, e.strerror or e))


def read_image(path):
    return decode_image(read_bytes(path), path)


def read_label(path):
    return decode_label(read_bytes(path), path)


def encode_label(lbl):
    ok, buf = cv2.imencode(".png", lbl)
    assert ok
    return buf.tobytes()


def write_label(path, lbl):
    """Write a uint8 label map as a single-channel PNG."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(encode_label(np.ascontiguousarray(lbl, np.uint8)))


def bad_label_values(lbl, num_classes, ignore_label=IGNORE_LABEL):
    """Sorted label values that are neither a class in [0, num_classes) nor ignore."""
    values = np.flatnonzero(np.bincount(lbl.ravel(), minlength=256))
    return [int(v) for v in values if v >= num_classes and v != ignore_label]


def check_pair(img, lbl, num_classes, img_name, lbl_name):
    """Raise DatasetError when image and label disagree in size or the label
    holds values outside [0, num_classes) other than 255."""
    if img.shape[:2] != lbl.shape[:2]:
        raise DatasetError("%s: label size %dx%d differs from image %s (%dx%d)" % (
            lbl_name, lbl.shape[1], lbl.shape[0], img_name, img.shape[1], img.shape[0]))
    bad = bad_label_values(lbl, num_classes)
    if bad:
        raise DatasetError("%s: label values %s outside [0, %d) and not %d" % (
            lbl_name, bad[:10], num_classes, IGNORE_LABEL))


# ---------------------------------------------------------------- list files

def read_id_list(path):
    """Image ids, one per line (the format of VOC ImageSets and SBD train/val)."""
    if not os.path.isfile(path):
        raise DatasetError("%s: list file not found" % path)
    with open(path) as f:
        return [line.split()[0] for line in f if line.strip()]


def read_pair_list(path, root=None, need_label=True):
    """Read a list of "image [label]" lines; paths relative to `root`
    (default: the list's own directory). Returns [(image, label or None)]."""
    if not os.path.isfile(path):
        raise DatasetError("%s: list file not found" % path)
    root = os.path.dirname(os.path.abspath(path)) if root is None else root
    pairs = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) > 2 or (need_label and len(fields) != 2):
                raise DatasetError("%s:%d: expected 'image label', got %r"
                                   % (path, n, line.rstrip("\n")))
            img = os.path.join(root, fields[0])
            lbl = os.path.join(root, fields[1]) if len(fields) == 2 else None
            pairs.append((img, lbl))
    if not pairs:
        raise DatasetError("%s: list is empty" % path)
    return pairs


def write_pair_list(path, pairs, root):
    """Write "image label" lines with paths relative to `root` (the list's
    final directory), so a list stays valid when the trees move together."""
    with open(path, "w") as f:
        for img, lbl in pairs:
            fields = [os.path.relpath(img, root)]
            if lbl is not None:
                fields.append(os.path.relpath(lbl, root))
            f.write(" ".join(fields) + "\n")


# ---------------------------------------------------------------- fingerprints, output

def fingerprint(files, extra):
    """Hash of the inputs' paths, sizes and mtimes plus `extra` (options and
    the format version): equal fingerprints mean re-running is a no-op."""
    h = hashlib.sha256(json.dumps(extra, sort_keys=True).encode())
    for path in files:
        try:
            st = os.stat(path)
            h.update(("%s\0%d\0%d\n" % (os.path.abspath(path), st.st_size,
                                         st.st_mtime_ns)).encode())
        except OSError:
            h.update(("%s\0missing\n" % os.path.abspath(path)).encode())
    return h.hexdigest()


def current_manifest(out_dir, fp):
    """The manifest of `out_dir` if it is a complete output made from the
    inputs fingerprinted `fp` (logged as up to date), else None."""
    try:
        with open(os.path.join(out_dir, MANIFEST)) as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return None
    if manifest.get("fingerprint") != fp:
        return None
    log.info("%s is up to date", out_dir)
    return manifest


def write_split_lists(tmp, split_pairs, out_abs):
    """`<split>.txt` in `tmp` for each split of {split: [(image, label)]}, in
    the dict's order, paths relative to `out_abs`; a split left with no
    usable image is an error. Returns {split: count}."""
    counts = {}
    for name, pairs in split_pairs.items():
        if not pairs:
            raise DatasetError("split %s: no usable image" % name)
        write_pair_list(os.path.join(tmp, name + ".txt"), pairs, out_abs)
        counts[name] = len(pairs)
    return counts


@contextlib.contextmanager
def atomic_dir(out_dir):
    """Yield a temporary directory beside `out_dir`; on success it replaces
    `out_dir` by rename, on error it is removed, so the output is complete or
    absent (the previous complete output survives a failed re-run)."""
    out_dir = os.path.abspath(out_dir)
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="." + os.path.basename(out_dir) + ".partial-", dir=parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the output is not
    try:
        yield tmp
        if os.path.exists(out_dir):
            old = tempfile.mkdtemp(prefix="." + os.path.basename(out_dir) + ".old-", dir=parent)
            os.rename(out_dir, os.path.join(old, "x"))
            os.rename(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_manifest(out_dir, **fields):
    with open(os.path.join(out_dir, MANIFEST), "w") as f:
        json.dump(fields, f, indent=1, sort_keys=True)
        f.write("\n")


def run_checked(items, work, skip_bad, desc, workers=None):
    """Apply `work(item)` to every item in a thread pool (cv2 and zlib release
    the GIL) with a progress bar. DatasetErrors are collected rather than
    raised one at a time, so that a run names every bad file. Returns
    (results of good items in input order, problems)."""
    from tqdm import tqdm
    workers = workers or min(8, (os.cpu_count() or 1) + 1)
    results, problems = [None] * len(items), []
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        futures = {pool.submit(work, it): i for i, it in enumerate(items)}
        for fut in tqdm(concurrent.futures.as_completed(futures), total=len(items),
                        desc=desc, unit="img", leave=False, disable=None):
            i = futures[fut]
            try:
                results[i] = (True, fut.result())
            except DatasetError as e:
                problems.append((i, str(e)))
    problems = [msg for _, msg in sorted(problems)]
    if problems and not skip_bad:
        raise DatasetError("%d bad input file(s); fix them or pass --skip-bad"
                           % len(problems), problems)
    for msg in problems:
        log.warning("skipped: %s", msg)
    if problems:
        log.warning("skipped %d bad item(s) of %d", len(problems), len(items))
    return [r[1] for r in results if r is not None], problems


def run_preparation(name, prepare, *args):
    """What the preparation scripts do after parsing their arguments: run
    `prepare`, print the split counts (and how many bad files were skipped),
    or log the DatasetError that lists the bad files and return 1."""
    try:
        manifest = prepare(*args)
    except DatasetError as e:
        logging.getLogger(name).error("%s", e)
        return 1
    print(" ".join("%s=%d" % kv for kv in sorted(manifest["counts"].items()))
          + (" skipped=%d" % len(manifest["skipped"]) if manifest["skipped"] else ""))
    return 0
