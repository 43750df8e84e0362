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
"""
import logging
import os
import re
import tempfile

import numpy as np

log = logging.getLogger(__name__)

# BGR means of the ImageNet ResNet models (He et al.) that initialise FCRN.
IMAGENET_MEAN = (104.008, 116.669, 122.675)

CITYSCAPES_COLORS = (  # RGB, train id order (cityscapesScripts helpers/labels.py)
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
    (0, 80, 100), (0, 0, 230), (119, 11, 32))


def voc_palette(n=256):
    """PASCAL VOC colour map: the bits of the label spread over R, G, B from the
    most significant bit down (label 1 = dark red, 255 = cream)."""
    pal = np.zeros((n, 3), np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal[i] = r, g, b
    return pal


def cityscapes_palette():
    pal = np.zeros((256, 3), np.uint8)
    pal[:19] = CITYSCAPES_COLORS
    return pal


PALETTES = {"voc": voc_palette, "cityscapes": cityscapes_palette}


# --- images -----------------------------------------------------------------

def read_image(path):
    """BGR uint8 image of any file cv2 reads: grey, BGRA, 16-bit included.

    Raises OSError naming the file when it is missing or not an image.
    """
    import cv2
    if not os.path.isfile(path):
        raise OSError("%s: no such file" % path)
    img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise OSError("%s: not a readable image" % path)
    if img.dtype == np.uint16:
        img = (img.astype(np.float32) / 257.0 + 0.5).astype(np.uint8)
    elif img.dtype != np.uint8:
        img = np.clip(img, 0, 255).astype(np.uint8)
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    elif img.shape[2] == 4:
        img = img[:, :, :3]  # alpha is not part of the scene
    return np.ascontiguousarray(img)


def _atomic_path(path):
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", dir=d)
    os.close(fd)
    return tmp


def write_atomic(path, save):
    """Call ``save(tmp)`` and rename tmp to path: a reader never sees half a file."""
    tmp = _atomic_path(path)
    try:
        save(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_label_png(path, label, palette=None):
    """Label map as a palette PNG (indices stay the pixel values, colours for
    viewing) or, without palette, a greyscale PNG. PIL because cv2 cannot write
    palette PNGs."""
    from PIL import Image
    im = Image.fromarray(np.asarray(label, np.uint8), mode="L")
    if palette is not None:
        im = im.convert("P")
        im.putpalette(np.asarray(palette, np.uint8).ravel().tolist())
    write_atomic(path, lambda tmp: im.save(tmp, format="PNG"))


def overlay(image, label, palette, alpha=0.5):
    colour = np.asarray(palette, np.uint8)[label][:, :, ::-1]  # RGB palette -> BGR
    return (image * (1 - alpha) + colour * alpha + 0.5).astype(np.uint8)


def write_image(path, image):
    import cv2
    ext = os.path.splitext(path)[1] or ".png"
    ok, buf = cv2.imencode(ext, image)
    if not ok:
        raise OSError("%s: cannot encode" % path)
    write_atomic(path, lambda tmp: buf.tofile(tmp))


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

    def __init__(self, net, net_param, output=None, mean=IMAGENET_MEAN, batch_size=1,
                 scales=(1.0,), flip=False, tile=None, overlap=1.0 / 3, passes=None,
                 stride=None, offset=None, input_blob="data"):
        self.net, self.input = net, input_blob
        if output is None:
            output = next((b for b in ("score", "prob") if b in net.blobs), net.outputs[-1])
        if output not in net.blobs:
            raise ValueError("net has no blob %r" % output)
        self.output = output
        # A Softmax output is averaged as it is; raw scores go through softmax.
        self.probabilities = any(l.type == "Softmax" and output in l.top
                                 for l in net_param.layer)
        self.mean = np.asarray(mean, np.float32).reshape(3, 1, 1)
        self.batch_size = max(1, int(batch_size))
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
        self.tile = None
        if tile is not None:
            self.tile = tuple(-(-int(t) // self.stride) * self.stride for t in tile)
            self.overlap = float(overlap)
        self.forwards = 0

    # One net input: (chw array, pass); the batch groups equal shapes and pass.
    def _prepare(self, image, view):
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

    def _interleave(self, maps):
        """Four pass maps -> one map at twice the resolution (out[dy::2, dx::2])."""
        c = maps[0].shape[0]
        hs = [m.shape[1] for m in maps]
        ws = [m.shape[2] for m in maps]
        # rows of parity dy exist up to 2 * h_dy + dy; keep rows every pass covers
        h = min(2 * hs[0], 2 * hs[2] + 1, 2 * hs[1], 2 * hs[3] + 1)
        w = min(2 * ws[0], 2 * ws[1] + 1, 2 * ws[2], 2 * ws[3] + 1)
        out = np.empty((c, 2 * max(hs), 2 * max(ws)), np.float32)
        for p, m in enumerate(maps):
            dy, dx = divmod(p, 2)
            out[:, dy:dy + 2 * m.shape[1]:2, dx:dx + 2 * m.shape[2]:2] = m
        return out[:, :h, :w]

    def predict(self, images):
        """Label maps (uint8, each of its image's size) for a list of BGR images."""
        jobs, layout = [], []
        for i, image in enumerate(images):
            for v, view in enumerate(self.views):
                x, size = self._prepare(image, view)
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
            grid = self._interleave(per_pass) if self.passes == 4 else per_pass[0]
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


# --- helpers for scripts ------------------------------------------------------

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".ppm", ".pgm", ".webp")


def list_inputs(sources, list_file=None):
    """[(path, output name without extension)] from files, folders (recursive,
    names relative to the folder) and a list file (one path per line)."""
    items = []
    for src in sources:
        if os.path.isdir(src):
            for dirpath, _, names in sorted(os.walk(src)):
                for n in sorted(names):
                    if n.lower().endswith(IMAGE_EXTENSIONS):
                        path = os.path.join(dirpath, n)
                        items.append((path, os.path.splitext(os.path.relpath(path, src))[0]))
        else:
            items.append((src, os.path.splitext(os.path.basename(src))[0]))
    if list_file:
        with open(list_file) as f:
            for line in f:
                line = line.strip()
                if line:
                    items.append((line, os.path.splitext(os.path.basename(line))[0]))
    return items


def gpu_build():
    """Whether the loaded libcaffe was built with CUDA (it then maps libcudart)."""
    import caffe  # noqa: F401
    try:
        with open("/proc/self/maps") as f:
            return re.search(r"libcudart|libcublas", f.read()) is not None
    except OSError:
        return False
