"""Deployment export: fold frozen batch normalisation into convolutions.

With frozen statistics, BN followed by its Scale is the per-channel affine map
``y = a * x + c`` with ``a = gamma / sqrt(var + eps)`` and
``c = beta - a * mean`` (mean and var being Caffe's stored sums divided by the
moving-average factor, blob 2, as Caffe's BatchNorm does). Following a
convolution it folds into it: ``W' = a * W`` (per output channel) and
``b' = a * (b - mean) + beta``. The exported net has no BN at all, so it runs
faster, needs no project layer, and loads in any Caffe-format reader.

Handled: ``LeanBatchNorm`` (blobs mean, var, factor, gamma, beta) and stock
``BatchNorm`` optionally followed by ``Scale``, in place or not. A BN whose input
is not a convolution's output read by nothing else becomes one stock ``Scale``
layer (bias_term) instead, so the export still has only stock layers. A net
with a layer that folding cannot replace by stock ones (a Python layer, as the
_sim4 nets' shift) is refused.

Weights are checked against the net before anything is loaded
(`fcrn.caffeio.load_net`).
"""
import logging
import os

import numpy as np
from google.protobuf import text_format

from . import caffeio, fileio
from .errors import InputError

log = logging.getLogger(__name__)

BN_TYPES = ("BatchNorm", "LeanBatchNorm")
# Layer types of this project that stock Caffe (and OpenCV) do not know.
PROJECT_TYPES = ("LeanBatchNorm", "BootstrappedSoftmaxWithLoss")


class FoldError(InputError):
    """The net or its weights cannot be exported; the message names the layers."""


def foreign_layers(net_param):
    """'name (type)' of the layers that stock Caffe (and OpenCV) lack and that
    folding does not remove: Python layers (the _sim4 nets' shift) and the
    project's own layers other than its BN."""
    return ["%s (%s)" % (l.name, l.type) for l in net_param.layer
            if l.type == "Python" or l.type in PROJECT_TYPES and l.type not in BN_TYPES]


def _graph(net_param):
    """For every layer, the (blob, version) it reads and writes; each top write
    makes a new version, so in-place chains are followed exactly."""
    version, reads, writes = {}, [], []
    consumers = {}
    for i, layer in enumerate(net_param.layer):
        r = [(b, version.get(b, 0)) for b in layer.bottom]
        for key in r:
            consumers.setdefault(key, []).append(i)
        w = []
        for t in layer.top:
            version[t] = version.get(t, 0) + 1
            w.append((t, version[t]))
        reads.append(r)
        writes.append(w)
    producer = {key: i for i, w in enumerate(writes) for key in w}
    return reads, writes, producer, consumers


def plan(net_param):
    """List of folds: dicts with conv (index or None), bn, scale (index or None)."""
    layers = net_param.layer
    reads, writes, producer, consumers = _graph(net_param)
    folds, problems = [], []
    for i, layer in enumerate(layers):
        if layer.type not in BN_TYPES:
            continue
        bp = layer.batch_norm_param
        if bp.HasField("use_global_stats") and not bp.use_global_stats:
            problems.append("%s: use_global_stats is false (batch statistics); only "
                            "frozen statistics fold" % layer.name)
            continue
        if len(reads[i]) != 1 or len(writes[i]) != 1:
            problems.append("%s: expected one bottom and one top" % layer.name)
            continue
        fold = {"bn": i, "conv": None, "scale": None}
        p = producer.get(reads[i][0])
        if (p is not None and layers[p].type == "Convolution"
                and consumers[reads[i][0]] == [i] and len(writes[p]) == 1):
            fold["conv"] = p
        if layer.type == "BatchNorm":
            out = writes[i][0]
            nxt = consumers.get(out, [])
            if len(nxt) == 1:
                s = layers[nxt[0]]
                sp = s.scale_param
                if (s.type == "Scale" and len(s.bottom) == 1 and len(s.top) == 1
                        and sp.axis == 1 and sp.num_axes == 1):
                    fold["scale"] = nxt[0]
        folds.append(fold)
    if problems:
        raise FoldError("cannot fold:\n  " + "\n  ".join(problems))
    return folds


def _affine(net, layers, fold):
    """(a, c) of y = a * x + c for one BN (+ Scale)."""
    bn = layers[fold["bn"]]
    p = [b.data for b in net.params[bn.name]]
    eps = bn.batch_norm_param.eps
    factor = float(p[2].ravel()[0])
    k = 0.0 if factor == 0 else 1.0 / factor  # as Caffe: factor 0 means "no statistics"
    mean = p[0].astype(np.float64) * k
    var = p[1].astype(np.float64) * k
    a = 1.0 / np.sqrt(var + eps)
    c = -mean * a
    if bn.type == "LeanBatchNorm":
        gamma, beta = p[3].astype(np.float64), p[4].astype(np.float64)
        a, c = a * gamma, c * gamma + beta
    elif fold["scale"] is not None:
        s = layers[fold["scale"]]
        sp = [b.data for b in net.params.get(s.name, [])]
        gamma = sp[0].astype(np.float64).ravel()
        beta = sp[1].astype(np.float64).ravel() if s.scale_param.bias_term else 0.0
        a, c = a * gamma, c * gamma + beta
    return a, c


def check_foldable(net_param, source=None):
    """Refuses a net whose folded form would keep a `foreign_layers` one
    (`source`: the prototxt, for the message)."""
    left = foreign_layers(net_param)
    if left:
        raise FoldError("%slayers not exportable to stock Caffe: %s" % (
            source + ": " if source else "", ", ".join(left)))


def fold_net(net_param, net, source=None):
    """Folded NetParameter and {layer: [arrays]} of the new and changed layers
    (check_foldable first)."""
    check_foldable(net_param, source)
    layers = net_param.layer
    folds = plan(net_param)
    out = caffeio.caffe_pb2().NetParameter()
    out.CopyFrom(net_param)
    del out.layer[:]
    new_params, drop, replace = {}, set(), {}
    for f in folds:
        a, c = _affine(net, layers, f)
        bn = layers[f["bn"]]
        last = layers[f["scale"]] if f["scale"] is not None else bn
        drop.add(f["bn"])
        if f["scale"] is not None:
            drop.add(f["scale"])
        if f["conv"] is not None:
            conv = layers[f["conv"]]
            w = net.params[conv.name][0].data.astype(np.float64)
            if w.shape[0] != a.size:
                raise FoldError("%s: %d output channels, %s has %d"
                                % (conv.name, w.shape[0], bn.name, a.size))
            b = (net.params[conv.name][1].data.astype(np.float64)
                 if conv.convolution_param.bias_term else np.zeros(a.size))
            new_params[conv.name] = [
                (w * a.reshape((-1,) + (1,) * (w.ndim - 1))).astype(np.float32),
                (a * b + c).astype(np.float32)]
            replace[f["conv"]] = ("conv", last.top[0])
        else:
            name = bn.name
            replace[f["bn"]] = ("scale", name, bn.bottom[0], last.top[0])
            drop.discard(f["bn"])
            new_params[name] = [a.astype(np.float32), c.astype(np.float32)]
    for i, layer in enumerate(layers):
        if i in drop and i not in replace:
            continue
        new = out.layer.add()
        if i in replace and replace[i][0] == "scale":
            _, name, bottom, top = replace[i]
            new.name, new.type = name, "Scale"
            new.bottom.append(bottom)
            new.top.append(top)
            new.scale_param.bias_term = True
            continue
        new.CopyFrom(layer)
        if i in replace:
            new.convolution_param.bias_term = True
            del new.top[:]
            new.top.append(replace[i][1])
    return out, new_params, folds


def export(prototxt, caffemodel, out_prototxt, out_caffemodel, verify_shape=None,
           tol=1e-4, force=False):
    """Fold ``prototxt`` + ``caffemodel`` into ``out_prototxt`` + ``out_caffemodel``.

    Nothing is written unless, where ``verify_shape`` is not False, the folded
    net's outputs equal the original's on a random input within ``tol``
    relative (``verify_shape``: (N, C, H, W) of that input, default the deploy
    shape); then both files are written atomically. Existing outputs are
    replaced only with ``force``, inputs never. Returns (folds, relative
    error or None).
    """
    fileio.check_targets([out_prototxt, out_caffemodel], [prototxt, caffemodel], force)
    net_param = caffeio.read_net_param(prototxt)
    check_foldable(net_param, prototxt)  # before building it: a data layer would run
    # Unshared: `verify` reads the inputs of the Softmax layers too.
    net = caffeio.load_net(prototxt, caffemodel, share_memory=False)
    folded, new_params, folds = fold_net(net_param, net, prototxt)
    folded.ClearField("share_memory")  # the project's field; stock readers refuse it
    text = "# %s with its batch normalisation folded (scripts/fold_bn.py)\n%s" % (
        os.path.basename(prototxt), text_format.MessageToString(folded))
    folded.share_memory = False
    out = caffeio.net_from_param(folded)
    for name, params in out.params.items():
        src = new_params.get(name) or [b.data for b in net.params[name]]
        for dst, val in zip(params, src):
            dst.data[...] = val.reshape(dst.data.shape)
    err = None
    if verify_shape is not False:
        err = verify(net, out, verify_shape)
        if not err <= tol:
            raise FoldError("folded net differs from the original: relative error "
                            "%.3g > %.3g" % (err, tol))
    fileio.atomic_save_all([(out_caffemodel, out.save), (out_prototxt, fileio.writes(text))])
    return folds, err


def verify(ref, folded, shape=None, seed=0):
    """Max relative difference (caffeio.output_error) of the outputs of two
    nets on the same random input."""
    feeds = caffeio.random_inputs(ref, shape, seed)
    return caffeio.output_error(ref, caffeio.forward(ref, feeds),
                                caffeio.forward(folded, feeds))
