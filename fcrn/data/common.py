"""Shared pieces of dataset preparation: validation, fingerprints, manifests,
split lists and the checked parallel loop."""
import concurrent.futures
import hashlib
import json
import logging
import os

import numpy as np

from .. import datasets, fileio, lists
from ..errors import InputError, UsageError

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"


def bad_label_values(lbl, num_classes, ignore_label=datasets.IGNORE_LABEL):
    """Sorted label values that are neither a class in [0, num_classes) nor ignore."""
    flat = lbl.ravel()
    negative = np.unique(flat[flat < 0]).tolist() if flat.dtype.kind == "i" else []
    values = np.flatnonzero(np.bincount(flat[flat >= 0] if negative else flat, minlength=256))
    return negative + [int(v) for v in values if v >= num_classes and v != ignore_label]


def check_pair(img, lbl, num_classes, img_name, lbl_name,
               ignore_label=datasets.IGNORE_LABEL):
    """Raise InputError when image and label disagree in size or the label
    holds values outside [0, num_classes) other than the ignore label (not
    checked when num_classes is None)."""
    if img.shape[:2] != lbl.shape[:2]:
        raise InputError("%s: label size %dx%d differs from image %s (%dx%d)" % (
            lbl_name, lbl.shape[1], lbl.shape[0], img_name, img.shape[1], img.shape[0]))
    bad = bad_label_values(lbl, num_classes, ignore_label) if num_classes else []
    if bad:
        raise InputError("%s: label values %s outside [0, %d) and not %d" % (
            lbl_name, bad[:10], num_classes, ignore_label))


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


def read_manifest(out_dir):
    try:
        with open(os.path.join(out_dir, MANIFEST)) as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def is_prepared(fmt):
    """`is_own` test of a preparation's output folder: its manifest's format.
    A rerun replaces the folder as a whole, so one that also holds what the
    preparation did not write (an LMDB, snapshots) is refused here, naming
    it, unless --force (which skips this test). Manifests written before
    they listed their entries vouch for the format alone."""
    def own(out_dir):
        manifest = read_manifest(out_dir) or {}
        if manifest.get("format") != fmt:
            return False
        written = manifest.get("entries")
        # hidden files are the system's (.DS_Store, .nfs*), not a user's work
        foreign = sorted(set() if written is None else {
            name for name in os.listdir(out_dir) if not name.startswith(".")} - set(written))
        if foreign:
            raise UsageError("%s: holds %s, which the preparation did not write; a rerun "
                             "replaces the folder as a whole: move it beside, or use --force "
                             "to replace it" % (out_dir, ", ".join(foreign)))
        return True
    return own


def current_manifest(out_dir, fp):
    """The manifest of `out_dir` if it is a complete output made from the
    inputs fingerprinted `fp` (logged as up to date), else None: also when a
    split list no longer holds the lines the manifest counts (cut short or
    removed since), so that the preparation writes it again."""
    manifest = read_manifest(out_dir)
    if manifest is None or manifest.get("fingerprint") != fp:
        return None
    changed = [split for split, count in sorted(manifest.get("counts", {}).items())
               if _count_lines(os.path.join(out_dir, split + ".txt")) != count]
    if changed:
        log.warning("%s: %s no longer as written; preparing it again", out_dir,
                    ", ".join(split + ".txt" for split in changed))
        return None
    log.info("%s is up to date", out_dir)
    return manifest


def _count_lines(path):
    """Non-blank lines of the file at `path`; None when it cannot be read."""
    try:
        with open(path, "rb") as f:
            return sum(1 for line in f if line.strip())
    except OSError:
        return None


def write_split_lists(tmp, split_pairs, out_abs, expected):
    """`<split>.txt` in `tmp` for each split of {split: [(image, label)]}, in
    the dict's order, paths relative to `out_abs`; a split left with no
    usable image is an error. Sizes that differ from the full dataset's (the
    registry's Dataset `expected`) are logged. Returns {split: count}."""
    counts = {}
    for name, pairs in split_pairs.items():
        if not pairs:
            raise InputError("split %s: no usable image" % name)
        lists.write_pairs(os.path.join(tmp, name + ".txt"), pairs, out_abs)
        counts[name] = len(pairs)
        full = expected.split_size(name)
        log.info("%s: %d images%s", name, len(pairs), "" if full in (None, len(pairs))
                 else " (%d in the full %s)" % (full, expected.title or expected.name))
    return counts


def write_manifest(out_dir, **fields):
    """The manifest, written last into the preparation's folder `out_dir`:
    `fields` and the entries written beside it (is_prepared)."""
    entries = set(os.listdir(out_dir)) - {fileio.LOCK_NAME}
    fields = dict(fields, entries=sorted(entries | {MANIFEST}))
    fileio.atomic_write(os.path.join(out_dir, MANIFEST),
                        json.dumps(fields, indent=1, sort_keys=True) + "\n")


def run_checked(items, work, skip_bad, desc, workers=None):
    """Apply `work(item)` to every item in a thread pool (cv2 and zlib release
    the GIL) with a progress bar. InputErrors are collected rather than
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
            except InputError as e:
                problems.append((i, str(e)))
    problems = [msg for _, msg in sorted(problems)]
    if problems and not skip_bad:
        raise InputError("%d bad input file(s); fix them or pass --skip-bad"
                         % len(problems), problems)
    for msg in problems:
        log.warning("skipped: %s", msg)
    if problems:
        log.warning("skipped %d bad item(s) of %d", len(problems), len(items))
    return [r[1] for r in results if r is not None], problems


def add_output_options(parser):
    """--out, --skip-bad, --jobs and --force, as every preparation script has them."""
    from .. import cli
    parser.add_argument("--out", required=True, help="output folder (replaced as a whole)")
    parser.add_argument("--skip-bad", action="store_true",
                        help="skip bad images and report the count")
    cli.add_jobs(parser, "threads reading images")
    cli.add_force(parser, "an output folder")


def summary(manifest):
    """The line the preparation scripts print: split counts and skipped files."""
    return " ".join("%s=%d" % kv for kv in sorted(manifest["counts"].items())) + (
        " skipped=%d" % len(manifest["skipped"]) if manifest["skipped"] else "")
