"""Inference with any deploy net (prototxt + caffemodel) through pycaffe.

The jobs are modules of their own: `geometry` (where score cells sit, upsampling,
tiles, the four-pass interleave), `segmenter` (label maps from a deploy net),
`naming` (inputs, output names and the output plan) and `stream` (reading and
writing in a thread pool while the net computes); `run` ties them together.

The pipeline (`run`): images are read and results written by a thread pool
while the net computes; every output name is planned and checked before the
net is loaded (unique per input, never over an input, never into a folder
that holds an input, never into a folder that is not an earlier output of
this tool unless forced). Each output folder is built beside its target and
swapped in whole when the run completes (`fileio.output_dir`).
"""
import contextlib
import dataclasses
import logging
import os
import time

import numpy as np

from .. import datasets, fileio, imageio
from ..errors import InputError, UsageError
from ..net.options import MAX_CROP
from . import naming
from .segmenter import load_segmenter
from .stream import stream

log = logging.getLogger(__name__)

TOOL = "infer"

# The bounds of scripts/infer.py's size options. A net input (a tile, or a
# whole image padded to the stride) beyond make_net's largest crop approaches
# Caffe's 2^31 elements per blob, where Caffe aborts; a scale beyond 4 makes a
# VOC-sized image that large (tile bigger images).
MAX_SIZE = MAX_CROP
MAX_SCALE = 4.0


class _Abandon(Exception):
    """Raised inside the output folders' block: their earlier contents stay."""


@dataclasses.dataclass
class Stats:
    """What a run did: images segmented, inputs that failed (path: why),
    seconds from the first read to the last write (the net's loading
    excluded), forward passes."""
    images: int
    failed: list
    seconds: float
    forwards: int


def overlay(image, label, palette, alpha=0.5):
    colour = np.asarray(palette, np.uint8)[label][:, :, ::-1]  # RGB palette -> BGR
    return (image * (1 - alpha) + colour * alpha + 0.5).astype(np.uint8)


def run(*, net, weights, sources=(), out=None, list_file=None, overlay_dir=None,
        labelids=None, dataset=None, classes_file=None, gpu=None, jobs=2, force=False,
        progress=False, **options):
    """Segment images with a deploy net and write one label PNG each.

    `sources`: image files and folders (recursive); `list_file`: an image
    path per line (first field; relative to the list's folder). Writes
    `out/NAME.png` (palette PNGs in the colours of `dataset`, a registry
    name, or of `classes_file`; else in `datasets.colormap`'s, VOC's, for
    any number of classes), and optionally colour overlays
    `overlay_dir/NAME.jpg` and, for Cityscapes, labelId PNGs
    `labelids/NAME.png`. A net scoring more classes than the dataset named
    has is refused. Unreadable images are named, skipped and counted in
    the returned Stats; everything else that is wrong raises before the first
    forward. `options` go to the Segmenter. The keywords are scripts/infer.py's
    options (its parsed arguments are this call's).

    Each folder is built beside its target and swapped in whole once every
    image is done: a failed or killed run leaves the earlier output as it
    was. When images failed, the others' predictions are kept only where
    they replace nothing (no earlier output, nor anything else, is there).
    """
    # Without a dataset named, the default palette (VOC's colours) for any net.
    data = datasets.resolve(dataset, classes_file=classes_file) \
        if classes_file or dataset not in (None, datasets.GENERIC) else None
    if labelids is not None and (data is None or data.label_ids is None):
        raise UsageError("--labelids needs a dataset with label ids (--dataset cityscapes)")
    if jobs < 1:
        raise UsageError("jobs must be >= 1, not %r" % jobs)
    if not sources and not list_file:
        raise UsageError("no inputs: name image files or folders, or --list LIST")
    items, labels = naming.list_inputs(sources, list_file)
    if not items:
        raise InputError("no input images in %s" % ", ".join(list(sources) + (
            [list_file] if list_file else [])))
    folders, plan = naming.plan(items, out, overlay_dir, labelids,
                                list(sources) + labels + [list_file, classes_file], force, TOOL)
    seg = load_segmenter(net, weights, gpu=gpu, **options)
    classes = seg.net.blobs[seg.output].data.shape[1]
    if data is not None and classes > data.num_classes:  # labels no class of it has
        raise UsageError("%s: the net scores %d classes, %s has %d (give the net's dataset: "
                         "--dataset, or --classes FILE)" % (net, classes, data.name,
                                                            data.num_classes))
    log.info("output %r: stride %d, offset %g, %d pass(es), %d view(s), %s",
             seg.output, seg.stride, seg.offset, seg.passes, len(seg.views),
             "tiles %dx%d" % seg.tile if seg.tile else "whole images")

    palette = data.palette() if data else datasets.colormap()
    to_label_id = data.class_to_label_lut() if labelids is not None else None

    def load(k):
        return imageio.read_image(items[k][0])

    slots = (out, overlay_dir, labelids)
    built = {}  # target folder -> the temporary folder it is built in

    def save(k, image, label):
        label_png, overlay_jpg, ids_png = (
            path and os.path.join(built[folder], os.path.relpath(path, folder))
            for path, folder in zip(plan[k], slots))
        imageio.write_label_png(label_png, label, palette)
        if overlay_jpg:
            imageio.write_image(overlay_jpg, overlay(image, label, palette))
        if ids_png:
            imageio.write_label_png(ids_png, to_label_id[label])

    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(items), unit="img", desc="infer")
    start = time.time()
    dropped = []
    try:
        with contextlib.ExitStack() as swaps:
            for folder in folders:
                built[folder] = swaps.enter_context(fileio.output_dir(
                    folder, force=force, is_own=lambda d: fileio.is_marked(d, TOOL)))
                fileio.mark(built[folder], TOOL)
            written, failed = stream(seg, [path for path, _ in items], load, save, jobs, bar)
            elapsed = time.time() - start
            # A run with failures keeps its predictions only where they replace nothing.
            dropped = [f for f in folders if failed and fileio.occupied(f)]
            if dropped:
                raise _Abandon()
    except _Abandon:
        pass
    finally:
        if bar:
            bar.close()
    log.info("%d image(s) in %.1f s: %.2f images/s, %d forward(s)", written, elapsed,
             written / max(elapsed, 1e-9), seg.forwards)
    if failed:
        log.error("%d of %d input(s) failed:\n  %s", len(failed), len(items),
                  "\n  ".join(failed[:50]) + ("\n  ..." if len(failed) > 50 else ""))
    if dropped:
        log.error("%s left as before: this run's predictions are dropped, as inputs failed "
                  "(a run without failures replaces the output whole)", ", ".join(dropped))
    return Stats(written, failed, elapsed, seg.forwards)

