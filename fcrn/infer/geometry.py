"""The geometry of inference: where score cells sit on the input, how score
grids are upsampled, tiled and interleaved.

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
import numpy as np


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


def tiles(shape, tile, overlap, stride):
    """[(y, x, th, tw)] of the sliding-window tiles of an (h, w) view padded
    to the stride (or the whole view when `tile` is None): origins on
    multiples of `stride`, the last tile flush with the far edge; a tile
    longer than the view is cut to it, as padding would only add cells that
    see none of the image."""
    h, w = shape
    if not tile:
        return [(0, 0, h, w)]
    th, tw = min(tile[0], h), min(tile[1], w)
    out = []
    for length, t in ((h, th), (w, tw)):
        step = max(stride, int((1 - overlap) * t) // stride * stride)
        starts = list(range(0, max(length - t, 0) + 1, step))
        if starts[-1] + t < length:
            starts.append(length - t)  # a multiple of stride: both are
        out.append(starts)
    return [(y, x, th, tw) for y in out[0] for x in out[1]]


def assemble(maps, tiles, stride):
    """Average the raw score maps of `tiles` on one grid of the padded view."""
    if len(maps) == 1:
        return maps[0]
    s = stride
    h = max(y0 // s + m.shape[1] for (y0, _, _, _), m in zip(tiles, maps))
    w = max(x0 // s + m.shape[2] for (_, x0, _, _), m in zip(tiles, maps))
    acc = np.zeros((maps[0].shape[0], h, w), np.float32)
    count = np.zeros((h, w), np.float32)
    for (y0, x0, _, _), m in zip(tiles, maps):
        gy, gx = y0 // s, x0 // s
        acc[:, gy:gy + m.shape[1], gx:gx + m.shape[2]] += m
        count[gy:gy + m.shape[1], gx:gx + m.shape[2]] += 1
    return acc / np.maximum(count, 1)
