"""The segmenter: label maps of images from a deploy net, with views
(scales, flip), tiles and the four-pass shifted test (fcrn.infer.geometry)."""
import numpy as np

from .. import caffeio, datasets
from ..errors import UsageError
from . import geometry


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
        classes = net.blobs[output].shape[1]
        if classes > datasets.IGNORE_LABEL:  # would wrap in the uint8 label maps
            raise ValueError("output %r has %d channels, and a label map holds at most %d "
                             "classes (0..%d; %d is the ignore label): is it the score blob?"
                             % (output, classes, datasets.IGNORE_LABEL,
                                datasets.IGNORE_LABEL - 1, datasets.IGNORE_LABEL))
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
        self.views = [geometry.View(s, f) for s in scales for f in ((False, True) if flip else (False,))]
        self.has_pass = "pass" in net.inputs
        self.passes = (4 if self.has_pass else 1) if passes is None else int(passes)
        if self.passes not in (1, 4) or (self.passes == 4 and not self.has_pass):
            raise ValueError("passes must be 1, or 4 with a net that has a 'pass' input")
        if stride is None or offset is None:
            try:
                s, o = geometry.trace_geometry(net_param, output, input_blob)
            except ValueError as e:
                raise ValueError("cannot trace the output grid (%s); give stride and "
                                 "offset explicitly" % e)
            stride = s if stride is None else stride
            offset = o if offset is None else offset
        self.stride, self.offset = int(stride), float(offset)
        if self.stride < 1:
            raise ValueError("stride must be >= 1, not %r" % stride)
        self.tile, self.overlap = None, None
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
        to the stride, (h, w) of the view before padding)."""
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
        ph, pw = -(-h // s) * s, -(-w // s) * s
        if (ph, pw) != (h, w):
            x = np.pad(x, ((0, 0), (0, ph - h), (0, pw - w)))  # zeros = mean colour
        return x, (h, w)

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
                tiles = geometry.tiles(x.shape[1:], self.tile, self.overlap, self.stride)
                layout.append((i, v, size, tiles))
                for t, (y0, x0, th, tw) in enumerate(tiles):
                    crop = x[:, y0:y0 + th, x0:x0 + tw]
                    for p in range(self.passes):
                        jobs.append(((i, v, t, p), np.ascontiguousarray(crop), p))
        scores = self._run(jobs)
        del jobs
        grids = [[] for _ in images]
        for i, v, size, tiles in layout:
            per_pass = []
            for p in range(self.passes):
                per_pass.append(geometry.assemble(
                    [scores.pop((i, v, t, p)) for t in range(len(tiles))], tiles, self.stride))
            grid = geometry.interleave(per_pass) if self.passes == 4 else per_pass[0]
            stride = self.stride / 2.0 if self.passes == 4 else self.stride
            view = self.views[v]
            h, w = images[i].shape[:2]
            vy = view.coords(h, size[0])
            vx = view.coords(w, size[1])
            if view.flip:
                vx = size[1] - 1 - vx
            grids[i].append((grid, (vy - self.offset) / stride, (vx - self.offset) / stride))
        return [geometry.label_from_grids(g, im.shape[0], im.shape[1],
                                          probabilities=self.probabilities)
                for g, im in zip(grids, images)]


def default_output(net_param):
    """The score blob a Segmenter reads: 'score', else 'prob', else the
    last layer's last top."""
    tops = [t for layer in net_param.layer for t in layer.top]
    return next((b for b in ("score", "prob") if b in tops), tops[-1] if tops else None)


def check_deploy(net_param, input_blob, prototxt):
    """UsageError unless `input_blob` is an input of the net (an Input
    layer's, or the legacy `input` field): a train or test net reads its
    own data, and images written into its blob would be overwritten or
    refused by the shapes."""
    if input_blob in net_param.input:
        return
    source = next((l for l in net_param.layer if input_blob in l.top), None)
    if source is None:
        raise UsageError("%s: no blob %r for the images" % (prototxt, input_blob))
    if source.type != "Input":
        raise UsageError("%s: not a deploy net: its %r comes from layer %r (%s), not from an "
                         "Input layer; give the deploy.prototxt beside it"
                         % (prototxt, input_blob, source.name, source.type))


def load_segmenter(prototxt, weights, gpu=None, share_memory=None, output=None, **options):
    """Segmenter of a deploy net with checked weights, on the CPU or GPU
    `gpu`. The net is built up to its output blob (`output`, default
    `default_output`), which a net that shares blob memory (share_memory:
    None, the prototxt's choice, or True/False) then keeps. `options` are
    Segmenter's (mean, batch_size, scales, flip, tile, overlap, passes,
    stride, offset); contradictory ones raise UsageError."""
    caffeio.set_mode(gpu)
    full = caffeio.read_net_param(prototxt)
    net_param = caffeio.up_to(full, output or default_output(full), prototxt)
    check_deploy(net_param, options.get("input_blob", "data"), prototxt)
    net = caffeio.load_net(prototxt, weights, share_memory=share_memory, param=net_param)
    try:
        return Segmenter(net, net_param, output=output, **options)
    except ValueError as e:
        raise UsageError("%s: %s" % (prototxt, e))
