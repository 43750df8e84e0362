"""SegDataLayer: augmenting, prefetching segmentation data for Caffe.

    layer { name: "data" type: "Python" top: "data" top: "label"
      python_param { module: "fcrn_data" layer: "SegDataLayer"
        param_str: '{"source": "voc_aug/train_aug.lmdb", "crop_size": 321}' } }

Tops: `data` (N,3,H,W float32, BGR minus mean), `label` (N,1,H,W float32,
`ignore_label` where padded), and with "passes" P > 1 a third top `pass`,
shape (1,), holding 0..P-1: each batch is served for P consecutive forwards
(no new augmentation) for the multi-pass shifted-resolution training. A
third top may also be given with P = 1 (it then always holds 0).

param_str is JSON or YAML (fcrn.pylayer); keys (defaults in PARAMS):
  source        LMDB directory (scripts/make_lmdb.py) or "image label" list file
  root          directory the list's paths are relative to (default: the list's)
  batch_size    crops per batch
  crop_size     int or [h, w]
  scale         [min, max] of the random resize factor (TRAIN), or one number
  mirror        random horizontal flip (TRAIN)
  mean          BGR mean subtracted from the image; also the image padding
  ignore_label  label of padded pixels
  num_classes   labels must lie in [0, num_classes) or be ignore_label; null:
                taken from the LMDB / the list's manifest.json, else unchecked
  seed          integer for a reproducible stream; null: random
  shuffle       reshuffle every epoch (TRAIN; TEST always keeps list order)
  workers       prefetching processes (0: load in the trainer, no prefetch)
  prefetch      batches buffered ahead (rounded up to a multiple of workers)
  passes        P, forwards per batch

TRAIN, resumed: FCRN_DATA_RESUME, the forwards the TRAIN net made before
(iteration x iter_size; scripts/train.py sets it when it resumes from a
snapshot), starts the stream where that run left it: the stream is a
function of (seed, shard, position), so a resumed training sees the batches
and augmentations the uninterrupted one would have.

TRAIN: each solver of a multi-GPU run reads the disjoint shard
items[rank::count] (rank = caffe.solver_rank(), count = caffe.solver_count()),
epoch after epoch of its own: where count does not divide the list, shards
differ by one item and the solvers step together, so an item of a shorter
shard is drawn more often than one of a longer, by 1 / (len(items) // count)
(0.04% for VOC's 10,582 images on 4 GPUs; twice as often for one item of 7
on 4).
Caffe refuses Python layers in `caffe train --gpu 0,1` ("PythonLayer does not
support CLI Multi-GPU, use train.py"): multi-GPU training goes through Caffe's
python/train.py, one process per GPU, which sets rank and count.
TRAIN: random resize in `scale` (bilinear image, nearest label), random crop
(image padded at the bottom/right with the mean and label with ignore when
smaller than the crop), random mirror. TEST: the whole list in order, no
resize or mirror, bottom/right padding, centred crop when larger; batches run
on across the end of the list (a batch_size that does not divide it scores
the first images again: generated TEST nets take one image a batch).

Prefetching runs in forked worker processes, not threads: neither the caffe
tool nor pycaffe releases the GIL during forward/backward (fcrn/data/prefetch.py).
"""
import atexit
import numbers
import os

import caffe

from fcrn import datasets, pylayer
from fcrn.data.augment import Augmenter
from fcrn.data.prefetch import RESUME, BatchMaker, Prefetcher
from fcrn.data.sources import open_source
from fcrn.errors import InputError
from fcrn.imageio import decode_image, decode_label

PARAMS = {
    "source": None,
    "root": None,
    "batch_size": 1,
    "crop_size": 321,
    "scale": [0.5, 2.0],
    "mirror": True,
    "mean": list(datasets.MEAN_BGR),
    "ignore_label": datasets.IGNORE_LABEL,
    "num_classes": None,
    "seed": None,
    "shuffle": True,
    "workers": 2,
    "prefetch": 4,
    "passes": 1,
}


# pycaffe never frees a Python layer (the layer and its C++ peer hold each
# other), so worker processes cannot follow the layer's lifetime: they end
# with the process (also if it is killed: PR_SET_PDEATHSIG) or on close_all().
_PREFETCHERS = []


def close_all():
    """Stop the worker processes of every SegDataLayer of this process."""
    while _PREFETCHERS:
        _PREFETCHERS.pop().close()


atexit.register(close_all)


def _int(x, low):
    return isinstance(x, int) and not isinstance(x, bool) and x >= low


def _numbers(x, n):
    return isinstance(x, (list, tuple)) and len(x) == n and all(
        isinstance(v, numbers.Real) and not isinstance(v, bool) for v in x)


def parse_params(param_str, who="SegDataLayer"):
    """param_str merged over PARAMS and checked (values of the wrong type are
    refused like values out of range)."""
    p = pylayer.parse_param_str(who, param_str, PARAMS)
    if not p["source"] or not isinstance(p["source"], str):
        raise ValueError("%s: param_str needs 'source' (LMDB or list file)" % who)
    crop, scale = p["crop_size"], p["scale"]
    crop = [crop, crop] if not isinstance(crop, (list, tuple)) else list(crop)
    scale = [scale, scale] if isinstance(scale, numbers.Real) else scale
    checks = [
        (len(crop) == 2 and all(_int(c, 1) for c in crop),
         "crop_size must be a positive int or [h, w]"),
        (_numbers(scale, 2) and 0 < scale[0] <= scale[1],
         "scale must be [min, max] with 0 < min <= max"),
        (_int(p["batch_size"], 1), "batch_size must be a positive int"),
        (_int(p["passes"], 1), "passes must be a positive int"),
        (_int(p["workers"], 0), "workers must be an int >= 0"),
        (_int(p["prefetch"], 1), "prefetch must be a positive int"),
        (_numbers(p["mean"], 3), "mean must have 3 (BGR) numbers"),
        (_int(p["ignore_label"], 0), "ignore_label must be an int >= 0"),
        (p["seed"] is None or _int(p["seed"], 0), "seed must be null or an int >= 0"),
        (p["num_classes"] is None or _int(p["num_classes"], 1),
         "num_classes must be null or a positive int"),
        (p["root"] is None or isinstance(p["root"], str), "root must be a path"),
        (isinstance(p["mirror"], bool) and isinstance(p["shuffle"], bool),
         "mirror and shuffle must be true or false"),
    ]
    for ok, msg in checks:
        if not ok:
            raise ValueError("%s: %s" % (who, msg))
    p["crop_size"], p["scale"] = crop, list(scale)
    return p


def resumed_forwards(who):
    """The forwards a resumed TRAIN net made before (FCRN_DATA_RESUME), else 0."""
    value = os.environ.get(RESUME, "0")
    if not value.isdigit():
        raise ValueError("%s: %s must be a number of forwards, not %r" % (who, RESUME, value))
    return int(value)


class SegDataLayer(pylayer.Layer):

    # Each forward copies a whole batch into the tops; no bottoms.
    blob_use = "computes"

    def describe(self):
        p = getattr(self, "p", None)
        return "SegDataLayer(source=%s)" % p["source"] if p else "SegDataLayer"

    def setup(self, bottom, top):
        p = self.p = parse_params(self.param_str)
        who = self.describe()
        if bottom:
            raise ValueError("%s: takes no bottom blobs" % who)
        if len(top) not in (2, 3) or (p["passes"] > 1 and len(top) != 3):
            raise ValueError("%s: needs tops data, label%s; got %d" % (
                who, ", pass (passes > 1)" if p["passes"] > 1 else " [, pass]", len(top)))
        train = self.phase == caffe.TRAIN
        rank, count = (caffe.solver_rank(), caffe.solver_count()) if train else (0, 1)
        try:
            src = open_source(p["source"], p["root"])
            try:
                n_items = len(src)
                num_classes = p["num_classes"] or src.num_classes
                indices = list(range(rank, n_items, max(count, 1)))
                if not indices:
                    raise InputError("shard %d of %d is empty (%d items)" % (rank, count, n_items))
                name, lbl_name, img, lbl = src.get(indices[0])  # fail now, not mid-training
                decode_image(img, name)
                decode_label(lbl, lbl_name)
            finally:
                src.close()
        except InputError as e:
            raise InputError("%s: %s" % (who, e))
        aug = Augmenter(p["crop_size"], p["scale"] if train else (1, 1), p["mirror"] and train,
                        p["mean"], p["ignore_label"], num_classes, train)
        seed = p["seed"] if p["seed"] is not None else int.from_bytes(os.urandom(4), "little")
        maker = BatchMaker(lambda: open_source(p["source"], p["root"]), indices,
                           p["batch_size"], aug, seed, rank, p["shuffle"] and train)
        done = resumed_forwards(who) if train else 0
        self.prefetcher = Prefetcher(maker, [p["batch_size"]] + p["crop_size"],
                                     p["workers"], p["prefetch"], who, done // p["passes"])
        _PREFETCHERS.append(self.prefetcher)
        self.n_items, self.shard = n_items, (rank, count, len(indices))
        self.pass_index = done % p["passes"]
        self.batch = None

    def reshape(self, bottom, top):
        n, (h, w) = self.p["batch_size"], self.p["crop_size"]
        top[0].reshape(n, 3, h, w)
        top[1].reshape(n, 1, h, w)
        if len(top) == 3:
            top[2].reshape(1)

    def forward(self, bottom, top):
        if self.pass_index == 0 or self.batch is None:  # None: resumed mid-batch
            if self.batch is not None:
                self.prefetcher.release()
            self.batch = self.prefetcher.next_batch()
        top[0].data[...] = self.batch[0]
        top[1].data[...] = self.batch[1]
        if len(top) == 3:
            top[2].data[0] = self.pass_index
        self.pass_index = (self.pass_index + 1) % self.p["passes"]

    def backward(self, top, propagate_down, bottom):
        pass
