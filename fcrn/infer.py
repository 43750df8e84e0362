"""Inference with any deploy net (prototxt + caffemodel) through pycaffe.

Alignment convention. Score-map cell ``j`` of a net with output stride ``s`` is
the prediction for input pixel ``s * j + o``, the centre of its receptive field;
``s`` and ``o`` are traced from the deploy prototxt (convolutions and poolings
from the input to the output blob; ``o = 2`` for the ResNet FCRNs, from conv1's
and pool1's padding). A pixel ``y`` takes the bilinear interpolation of the raw
scores at fractional cell ``(y - o) / s``, clamped at the borders, and then the
argmax. Images are padded at the bottom and right only (with the mean colour,
i.e. zeros after mean subtraction), so padding never moves this grid.

Views (scales, flip) are each mapped back to the original pixels this way and
their softmax probabilities averaged. Tiles of one view are placed on one global
score grid (tile origins are multiples of ``s``) and their raw scores averaged
where they overlap, so tiling changes nothing but the context each cell saw.
Upsampling and argmax run in bands of rows on score grids kept at 1/s resolution:
memory is bounded by the tile size, not the image size, apart from the image and
its label map.

Four-pass shifted test (Section 3.2): when the net has an input blob ``pass``,
pass ``p`` shifts by ``(dy, dx) = divmod(p, 2)`` and the four score maps are
interleaved, ``out[dy::2, dx::2] = score_p``; the result has stride ``s / 2`` and
the same ``o`` (exact when the shifted stride-2 layer is a 1x1 unpadded
convolution, as in ResNet).

The pipeline (`run`): images are read and results written by a thread pool
while the net computes; every output name is planned and checked before the
net is loaded (unique per input, never over an input, never into a folder
that is not an earlier output of this tool unless forced).
"""
import collections
import dataclasses
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from . import caffeio, datasets, fileio, imageio, lists
from .errors import InputError, UsageError, describe_oserror

log = logging.getLogger(__name__)

TOOL = "infer"


# --- geometry ---------------------------------------------------------------

def _first(values, default):
    return values[0] if len(values) else default


def _window(layer):
    """(kernel, stride, pad, dilation) along H of a Convolution or Pooling."""
    if layer.type == "Pooling":
        p = layer.pooling_param
        if p.global_pooling:
            raise ValueError("%s: global pooling has no output grid" % layer.name)
        k = p.kernel_h or p.kernel_size
        s = p.stride_h or p.stride
        pad = p.pad_h or p.pad
        return k, s, pad, 1
    p = layer.convolution_param
    k = p.kernel_h or _first(p.kernel_size, 1)
    s = p.stride_h or _first(p.stride, 1)
    pad = p.pad_h or _first(p.pad, 0)
    return k, s, pad, _first(p.dilation, 1)


def trace_geometry(net_param, output, input_blob="data"):
    """(stride, offset) with score cell j centred on input pixel stride * j + offset.

    Walks the layers in order; layers other than Convolution and Pooling keep
    the grid of their first bottom that has one (element-wise layers, ReLU, BN,
    Eltwise, the Python shift layer at pass 0). Raises ValueError for layers that
    change the grid otherwise (Deconvolution, Interp, ...).
    """
    grid = {input_blob: (1, 0.0)}
    for layer in net_param.layer:
        src = next((grid[b] for b in layer.bottom if b in grid), None)
        if src is None:
            continue
        if layer.type in ("Convolution", "Pooling"):
            k, s, pad, d = _window(layer)
            scale, off = src
            new = (scale * s, off + scale * (d * (k - 1) / 2.0 - pad))
        elif layer.type in ("Deconvolution", "Interp", "Crop", "Reshape", "Flatten",
                            "InnerProduct", "Resize", "Upsample"):
            raise ValueError("%s (%s) changes the grid in a way not traced"
                             % (layer.name, layer.type))
        else:
            new = src
        for t in layer.top:
            grid[t] = new
    if output not in grid:
        raise ValueError("output %r is not reached from input %r" % (output, input_blob))
    return grid[output]


# --- upsampling -------------------------------------------------------------

def _lerp_index(pos, n):
    """Clamped bilinear taps for fractional positions ``pos`` on ``n`` cells."""
    pos = np.clip(np.asarray(pos, np.float64), 0, n - 1)
    i0 = np.floor(pos).astype(np.int64)
    i1 = np.minimum(i0 + 1, n - 1)
    return i0, i1, (pos - i0).astype(np.float32)


def interp_cols(scores, fx):
    """C x h x len(fx): scores sampled at fractional columns fx."""
    x0, x1, w = _lerp_index(fx, scores.shape[2])
    return scores[:, :, x0] * (1 - w) + scores[:, :, x1] * w


def interp_rows(scores, fy):
    y0, y1, w = _lerp_index(fy, scores.shape[1])
    w = w[:, None]
    return scores[:, y0, :] * (1 - w) + scores[:, y1, :] * w


def softmax(x, axis=0):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


class View:
    """One transformed copy of an image and how to map its score grid back."""

    def __init__(self, scale=1.0, flip=False):
        self.scale, self.flip = float(scale), bool(flip)

    def coords(self, n, n_view):
        """Positions in the resized view of original pixel centres 0..n-1
        (cv2.resize's half-pixel convention); the caller mirrors flipped views."""
        return (np.arange(n) + 0.5) * (n_view / float(n)) - 0.5

    def __repr__(self):
        return "View(scale=%g, flip=%s)" % (self.scale, self.flip)


def label_from_grids(grids, height, width, band=128, probabilities=False):
    """Argmax label map (H x W uint8) from score grids of several views.

    ``grids``: list of (scores C x h x w, fy, fx) with fy, fx the fractional grid
    positions of the original rows and columns. One grid: argmax of bilinear raw
    scores. Several: argmax of the mean of their softmax probabilities (of the
    maps themselves when they already are probabilities).
    """
    label = np.empty((height, width), np.uint8)
    cols = [(interp_cols(s, fx), fy) for s, fy, fx in grids]
    for y in range(0, height, band):
        rows = slice(y, min(y + band, height))
        if len(cols) == 1:
            acc = interp_rows(cols[0][0], cols[0][1][rows])
        else:
            norm = (lambda a: a) if probabilities else softmax
            acc = sum(norm(interp_rows(c, fy[rows])) for c, fy in cols)
        label[rows] = acc.argmax(0)
    return label


def interleave(passes):
    """Four pass outputs (..., h_p, w_p), pass p = 2*dy + dx, -> the map (..., H, W)
    whose phase [dy::2, dx::2] is pass (dy, dx): the simulated finer output.
    Passes whose sizes are not the four phases of one map are refused."""
    if len(passes) != 4:
        raise ValueError('need the outputs of 4 passes, got %d' % len(passes))
    height = passes[0].shape[-2] + passes[2].shape[-2]
    width = passes[0].shape[-1] + passes[1].shape[-1]
    out = np.empty(passes[0].shape[:-2] + (height, width), passes[0].dtype)
    for index, phase in enumerate(passes):
        dy, dx = divmod(index, 2)
        view = out[..., dy::2, dx::2]
        if view.shape != phase.shape:
            raise ValueError('pass %d has shape %s, expected %s'
                             % (index, phase.shape, view.shape))
        view[...] = phase
    return out


# --- the segmenter ------------------------------------------------------------

class Segmenter:
    """Label maps of images from a deploy net.

    net: caffe.Net in TEST phase; net_param: its NetParameter (for geometry).
    output: score blob (default 'score', else 'prob', else the last output).
    tile: None (whole image) or (h, w) of sliding-window tiles, rounded up to a
    multiple of the stride; overlap: fraction of a tile shared with the next.
    passes: 4 runs the four-pass shifted test when the net has a 'pass' input
    (default: 4 if it has one), 1 only pass 0.
    """

    def __init__(self, net, net_param, output=None, mean=datasets.MEAN_BGR, batch_size=1,
                 scales=(1.0,), flip=False, tile=None, overlap=1.0 / 3, passes=None,
                 stride=None, offset=None, input_blob="data"):
        self.net, self.input = net, input_blob
        if output is None:
            output = default_output(net_param)
        if output not in net.blobs:
            raise ValueError("net has no blob %r" % output)
        self.output = output
        # A Softmax output is averaged as it is; raw scores go through softmax.
        self.probabilities = any(l.type == "Softmax" and output in l.top
                                 for l in net_param.layer)
        self.mean = np.asarray(mean, np.float32).reshape(3, 1, 1)
        self.batch_size = int(batch_size)
        if self.batch_size < 1:
            raise ValueError("batch size must be >= 1, not %r" % batch_size)
        if not scales or min(scales) <= 0:
            raise ValueError("scales must be positive, not %r" % (scales,))
        self.views = [View(s, f) for s in scales for f in ((False, True) if flip else (False,))]
        self.has_pass = "pass" in net.inputs
        self.passes = (4 if self.has_pass else 1) if passes is None else int(passes)
        if self.passes not in (1, 4) or (self.passes == 4 and not self.has_pass):
            raise ValueError("passes must be 1, or 4 with a net that has a 'pass' input")
        if stride is None or offset is None:
            try:
                s, o = trace_geometry(net_param, output, input_blob)
            except ValueError as e:
                raise ValueError("cannot trace the output grid (%s); give stride and "
                                 "offset explicitly" % e)
            stride = s if stride is None else stride
            offset = o if offset is None else offset
        self.stride, self.offset = int(stride), float(offset)
        if self.stride < 1:
            raise ValueError("stride must be >= 1, not %r" % stride)
        self.tile = None
        if tile is not None:
            if len(tile) != 2 or min(tile) < 1:
                raise ValueError("tile must be two sizes >= 1, not %r" % (tile,))
            if not 0 <= overlap < 1:
                raise ValueError("overlap must lie in [0, 1), not %r" % overlap)
            self.tile = tuple(-(-int(t) // self.stride) * self.stride for t in tile)
            self.overlap = float(overlap)
        self.forwards = 0

    def prepare(self, image, view):
        """(net input C x H x W: resized, flipped, mean-subtracted and padded
        to the stride and tile, (h, w) of the view before padding)."""
        import cv2
        img = image
        if view.scale != 1.0:
            h, w = img.shape[:2]
            size = (max(1, int(round(w * view.scale))), max(1, int(round(h * view.scale))))
            img = cv2.resize(img, size, interpolation=cv2.INTER_LINEAR)
        if view.flip:
            img = img[:, ::-1]
        x = img.transpose(2, 0, 1).astype(np.float32) - self.mean
        h, w = x.shape[1:]
        s = self.stride
        th, tw = self.tile if self.tile else (0, 0)
        ph, pw = max(-(-h // s) * s, th), max(-(-w // s) * s, tw)
        if (ph, pw) != (h, w):
            x = np.pad(x, ((0, 0), (0, ph - h), (0, pw - w)))  # zeros = mean colour
        return x, (h, w)

    def _tiles(self, h, w):
        if not self.tile:
            return [(0, 0, h, w)]
        th, tw = self.tile
        out = []
        for length, t in ((h, th), (w, tw)):
            step = max(self.stride, int((1 - self.overlap) * t) // self.stride * self.stride)
            starts = list(range(0, max(length - t, 0) + 1, step))
            if starts[-1] + t < length:
                starts.append(length - t)  # a multiple of stride: both are
            out.append(starts)
        return [(y, x, th, tw) for y in out[0] for x in out[1]]

    def _run(self, jobs):
        """jobs: list of (key, chw array, pass). Returns {key: score map C x h x w}."""
        groups = {}
        for job in jobs:
            groups.setdefault((job[1].shape, job[2]), []).append(job)
        results = {}
        data = self.net.blobs[self.input]
        for (shape, p), items in groups.items():
            for i in range(0, len(items), self.batch_size):
                chunk = items[i:i + self.batch_size]
                if data.data.shape != (len(chunk),) + shape:
                    data.reshape(len(chunk), *shape)
                    self.net.reshape()
                for k, (_, arr, _) in enumerate(chunk):
                    data.data[k] = arr
                if self.has_pass:
                    self.net.blobs["pass"].data[...] = p
                self.net.forward()
                self.forwards += 1
                out = self.net.blobs[self.output].data
                for k, (key, _, _) in enumerate(chunk):
                    results[key] = out[k].copy()
        return results

    def predict(self, images):
        """Label maps (uint8, each of its image's size) for a list of BGR images."""
        jobs, layout = [], []
        for i, image in enumerate(images):
            for v, view in enumerate(self.views):
                x, size = self.prepare(image, view)
                tiles = self._tiles(*x.shape[1:])
                layout.append((i, v, size, x.shape[1:], tiles))
                for t, (y0, x0, th, tw) in enumerate(tiles):
                    crop = x[:, y0:y0 + th, x0:x0 + tw]
                    for p in range(self.passes):
                        jobs.append(((i, v, t, p), np.ascontiguousarray(crop), p))
        scores = self._run(jobs)
        del jobs
        grids = [[] for _ in images]
        for i, v, size, padded, tiles in layout:
            per_pass = []
            for p in range(self.passes):
                per_pass.append(self._assemble([scores.pop((i, v, t, p)) for t in range(len(tiles))],
                                               tiles, padded))
            grid = interleave(per_pass) if self.passes == 4 else per_pass[0]
            stride = self.stride / 2.0 if self.passes == 4 else self.stride
            view = self.views[v]
            h, w = images[i].shape[:2]
            vy = view.coords(h, size[0])
            vx = view.coords(w, size[1])
            if view.flip:
                vx = size[1] - 1 - vx
            grids[i].append((grid, (vy - self.offset) / stride, (vx - self.offset) / stride))
        return [label_from_grids(g, im.shape[0], im.shape[1], probabilities=self.probabilities)
                for g, im in zip(grids, images)]

    def _assemble(self, maps, tiles, padded):
        """Average the raw scores of the tiles on one grid of the padded view."""
        if len(maps) == 1:
            return maps[0]
        s = self.stride
        h = max(y0 // s + m.shape[1] for (y0, _, _, _), m in zip(tiles, maps))
        w = max(x0 // s + m.shape[2] for (_, x0, _, _), m in zip(tiles, maps))
        acc = np.zeros((maps[0].shape[0], h, w), np.float32)
        count = np.zeros((h, w), np.float32)
        for (y0, x0, _, _), m in zip(tiles, maps):
            gy, gx = y0 // s, x0 // s
            acc[:, gy:gy + m.shape[1], gx:gx + m.shape[2]] += m
            count[gy:gy + m.shape[1], gx:gx + m.shape[2]] += 1
        return acc / np.maximum(count, 1)


def default_output(net_param):
    """The score blob a Segmenter reads: 'score', else 'prob', else the
    last layer's last top."""
    tops = [t for layer in net_param.layer for t in layer.top]
    return next((b for b in ("score", "prob") if b in tops), tops[-1] if tops else None)


def load_segmenter(prototxt, weights, gpu=None, share_memory=None, output=None, **options):
    """Segmenter of a deploy net with checked weights, on the CPU or GPU
    `gpu`. The net is built up to its output blob (`output`, default
    `default_output`), which a net that shares blob memory (share_memory:
    None, the prototxt's choice, or True/False) then keeps. `options` are
    Segmenter's (mean, batch_size, scales, flip, tile, overlap, passes,
    stride, offset); contradictory ones raise UsageError."""
    caffeio.set_mode(gpu)
    full = caffeio.read_net_param(prototxt)
    net_param = caffeio.up_to(full, output or default_output(full))
    net = caffeio.load_net(prototxt, weights, share_memory=share_memory, param=net_param)
    try:
        return Segmenter(net, net_param, output=output, **options)
    except ValueError as e:
        raise UsageError("%s: %s" % (prototxt, e))


def overlay(image, label, palette, alpha=0.5):
    colour = np.asarray(palette, np.uint8)[label][:, :, ::-1]  # RGB palette -> BGR
    return (image * (1 - alpha) + colour * alpha + 0.5).astype(np.uint8)


# --- inputs and output names ----------------------------------------------------

def list_inputs(sources, list_file=None):
    """[(path, output name without extension)] from files, folders (recursive,
    names relative to the folder) and a list file (an image per line, or the
    "image label" lines the preparation scripts write; paths relative to the
    list's folder), with the names made unique (`unique_names`)."""
    items = []
    for src in sources:
        if os.path.isdir(src):
            for dirpath, dirs, names in os.walk(src):
                dirs.sort()
                for n in sorted(names):
                    if n.lower().endswith(imageio.IMAGE_EXTENSIONS):
                        path = os.path.join(dirpath, n)
                        items.append((path, os.path.splitext(os.path.relpath(path, src))[0]))
        else:
            items.append((src, os.path.splitext(os.path.basename(src))[0]))
    if list_file:
        items += [(image, os.path.splitext(os.path.basename(image))[0])
                  for image, _ in lists.read_pairs(list_file, need_label=False)]
    return unique_names(items)


def unique_names(items):
    """Make the output names of [(path, name)] unique: inputs whose names
    collide are named by their paths relative to the folder they share
    (dir/a.jpg, dir/sub/a.jpg -> a, sub/a), or, in one folder, keep their
    extension (c.png, c.jpg -> c.png, c.jpg). UsageError listing a file given
    twice, or what still collides."""
    given = collections.Counter(os.path.realpath(path) for path, _ in items)
    twice = sorted("%s (%d times)" % (p, n) for p, n in given.items() if n > 1)
    if twice:
        raise UsageError("%d input(s) given more than once" % len(twice), twice)
    groups = collections.defaultdict(list)
    for i, (_, name) in enumerate(items):
        groups[name].append(i)
    names = [name for _, name in items]
    for name, members in groups.items():
        if len(members) < 2:
            continue
        paths = [os.path.abspath(items[i][0]) for i in members]
        folders = {os.path.dirname(p) for p in paths}
        if len(folders) > 1:
            common = os.path.commonpath(list(folders))
            renamed = [os.path.splitext(os.path.relpath(p, common))[0] for p in paths]
        else:
            renamed = [name + os.path.splitext(p)[1] for p in paths]
        for i, new in zip(members, renamed):
            names[i] = new
    count = collections.Counter(names)
    clashes = sorted("%s <- %s" % (n, p) for (p, _), n in zip(items, names) if count[n] > 1)
    if clashes:
        raise UsageError("%d input(s) would write the same output" % len(clashes), clashes)
    return [(path, name) for (path, _), name in zip(items, names)]


# --- the pipeline ------------------------------------------------------------------

@dataclasses.dataclass
class Stats:
    """What a run did: images segmented, inputs that failed (path: why),
    seconds from the first read to the last write (the net's loading
    excluded), forward passes."""
    images: int
    failed: list
    seconds: float
    forwards: int


def _plan(items, out, overlay_dir, labelids, sources, list_file, force):
    """Output files per item; refuses collisions with inputs and folders
    that are not this tool's earlier outputs (before anything is loaded)."""
    folders = [d for d in (out, overlay_dir, labelids) if d is not None]
    fileio.check_named(folders)
    if len(set(map(os.path.realpath, folders))) < len(folders):
        raise UsageError("--out, --overlay and --labelids must be different folders")
    plan = [[None if d is None else os.path.join(d, name + ext)
             for d, ext in ((out, ".png"), (overlay_dir, ".jpg"), (labelids, ".png"))]
            for _, name in items]
    fileio.check_disjoint([f for files in plan for f in files if f],
                          [p for p, _ in items] + list(sources) + [list_file])
    fileio.check_free(folders, force, lambda d: fileio.is_marked(d, TOOL))
    return folders, plan


def run(net, weights, sources=(), out=None, list_file=None, overlay_dir=None, labelids=None,
        dataset=None, gpu=None, jobs=2, force=False, progress=False, classes_file=None,
        **options):
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
    forward. `options` go to the Segmenter.
    """
    # Without a dataset named, the default palette (VOC's colours) for any net.
    data = datasets.resolve(dataset, classes_file=classes_file) \
        if classes_file or dataset not in (None, datasets.GENERIC) else None
    if labelids is not None and (data is None or data.label_ids is None):
        raise UsageError("--labelids needs a dataset with label ids (--dataset cityscapes)")
    if jobs < 1:
        raise UsageError("jobs must be >= 1, not %r" % jobs)
    items = list_inputs(sources, list_file)
    if not items:
        raise InputError("no input images in %s" % ", ".join(list(sources) + (
            [list_file] if list_file else [])))
    folders, plan = _plan(items, out, overlay_dir, labelids, sources, list_file, force)
    seg = load_segmenter(net, weights, gpu=gpu, **options)
    classes = seg.net.blobs[seg.output].data.shape[1]
    if data is not None and classes > data.num_classes:  # labels no class of it has
        raise UsageError("%s: the net scores %d classes, %s has %d (give the net's dataset: "
                         "--dataset, or --classes FILE)" % (net, classes, data.name,
                                                            data.num_classes))
    log.info("output %r: stride %d, offset %g, %d pass(es), %d view(s), %s",
             seg.output, seg.stride, seg.offset, seg.passes, len(seg.views),
             "tiles %dx%d" % seg.tile if seg.tile else "whole images")
    for folder in folders:
        fileio.mark(folder, TOOL)
        for dirpath, _, _ in os.walk(folder):
            fileio.clean_leftovers(dirpath)

    palette = data.palette() if data else datasets.colormap()
    to_label_id = data.class_to_label_lut() if labelids is not None else None

    def load(k):
        return imageio.read_image(items[k][0])

    def save(k, image, label):
        label_png, overlay_jpg, ids_png = plan[k]
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
    try:
        written, failed = _stream(seg, [path for path, _ in items], load, save, jobs, bar)
    finally:
        if bar:
            bar.close()
    elapsed = time.time() - start
    log.info("%d image(s) in %.1f s: %.2f images/s, %d forward(s)", written, elapsed,
             written / max(elapsed, 1e-9), seg.forwards)
    if failed:
        log.error("%d of %d input(s) failed:\n  %s", len(failed), len(items),
                  "\n  ".join(failed[:50]) + ("\n  ..." if len(failed) > 50 else ""))
    return Stats(written, failed, elapsed, seg.forwards)


def _stream(seg, paths, load, save, jobs, bar=None):
    """Read images ahead in a thread pool, predict them in batches of the
    segmenter's size, write the results in the pool. `load(k)` raises
    InputError for an unreadable input, `save(k, image, label)` OSError for an
    unwritable output: both are counted, not fatal. Returns (written, failed)."""
    failed, written = [], 0
    with ThreadPoolExecutor(jobs) as pool:
        reads, writes = collections.deque(), []
        queue = iter(range(len(paths)))
        lookahead = 2 * seg.batch_size + jobs

        def refill():
            while len(reads) < lookahead:
                k = next(queue, None)
                if k is None:
                    return
                reads.append((k, pool.submit(load, k)))

        def collect(wait):
            nonlocal written
            still = []
            for k, fut in writes:
                if not (wait or fut.done()):
                    still.append((k, fut))
                elif isinstance(fut.exception(), OSError):
                    failed.append("%s: cannot write its output: %s"
                                  % (paths[k], describe_oserror(fut.exception())))
                else:
                    fut.result()  # anything else is a bug: let it out
                    written += 1
            writes[:] = still

        refill()
        while reads:
            batch = []
            while reads and len(batch) < seg.batch_size:
                k, fut = reads.popleft()
                refill()
                try:
                    batch.append((k, fut.result()))
                except InputError as e:
                    log.error("skipped: %s", e)
                    failed.append(str(e))
                    if bar:
                        bar.update(1)
            if batch:
                labels = seg.predict([image for _, image in batch])
                writes += [(k, pool.submit(save, k, image, label))
                           for (k, image), label in zip(batch, labels)]
                if bar:
                    bar.update(len(batch))
            collect(wait=False)  # errors surface early, memory is freed
        collect(wait=True)
    return written, failed
