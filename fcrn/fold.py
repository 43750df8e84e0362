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
layer (bias_term) instead, so the export still has only stock layers.

Weights are checked against the net before anything is loaded: Caffe itself
aborts the process on a shape mismatch and silently keeps random fillers for a
layer missing from the caffemodel. Here both are refused with every offending
layer named.
"""
import logging
import os
import tempfile

import numpy as np
from google.protobuf import text_format

log = logging.getLogger(__name__)

BN_TYPES = ("BatchNorm", "LeanBatchNorm")
# Layer types of this project that stock Caffe (and OpenCV) do not know.
PROJECT_TYPES = ("LeanBatchNorm", "BootstrappedSoftmaxWithLoss")


class FoldError(Exception):
    """The net or its weights cannot be exported; the message names the layers."""


def _caffe():
    import caffe
    return caffe


def read_net_param(prototxt):
    from caffe.proto import caffe_pb2
    net = caffe_pb2.NetParameter()
    with open(prototxt) as f:
        text_format.Merge(f.read(), net)
    if len(net.layers):
        raise FoldError("%s uses the V1 'layers' format; upgrade it with Caffe's "
                        "upgrade_net_proto_text first" % prototxt)
    return net


def _blob_shape(blob):
    if blob.HasField("shape"):
        return tuple(blob.shape.dim)
    return (blob.num, blob.channels, blob.height, blob.width)


def _shapes_match(expected, stored, legacy):
    if not legacy:
        return tuple(expected) == tuple(stored)
    # Caffe compares legacy (num, channels, height, width) blobs after padding
    # the expected shape to 4 axes with leading ones.
    return (1,) * (4 - len(expected)) + tuple(expected) == tuple(stored)


def check_weights(net, caffemodel):
    """Raise FoldError naming every layer of ``net`` whose weights in ``caffemodel``
    are missing or of another count or shape. Returns the names of stored layers
    the net does not use (Caffe ignores those)."""
    from caffe.proto import caffe_pb2
    stored = caffe_pb2.NetParameter()
    with open(caffemodel, "rb") as f:
        stored.ParseFromString(f.read())
    blobs = {}
    for layer in list(stored.layer) + list(stored.layers):
        if len(layer.blobs):
            blobs[layer.name] = [(_blob_shape(b), not b.HasField("shape"))
                                 for b in layer.blobs]
    problems = []
    for name, params in net.params.items():
        expected = [p.data.shape for p in params]
        if name not in blobs:
            problems.append("%s: no weights in %s" % (name, os.path.basename(caffemodel)))
            continue
        got = blobs[name]
        if len(got) != len(expected):
            problems.append("%s: %d blobs stored, the net has %d"
                            % (name, len(got), len(expected)))
            continue
        for i, (e, (g, legacy)) in enumerate(zip(expected, got)):
            if not _shapes_match(e, g, legacy):
                problems.append("%s: blob %d stored as %s, the net expects %s"
                                % (name, i, "x".join(map(str, g)), "x".join(map(str, e))))
    if problems:
        raise FoldError("weights do not match the net (%d layer(s)):\n  %s"
                        % (len(problems), "\n  ".join(problems)))
    return sorted(set(blobs) - set(net.params.keys()))


def load_net(prototxt, caffemodel):
    """caffe.Net in TEST phase with checked weights (FoldError instead of an abort)."""
    caffe = _caffe()
    net = caffe.Net(prototxt, caffe.TEST)
    unused = check_weights(net, caffemodel)
    if unused:
        log.info("%d stored layer(s) not in the net, ignored: %s", len(unused),
                 ", ".join(unused[:8]) + (" ..." if len(unused) > 8 else ""))
    net.copy_from(caffemodel)
    return net


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


def fold_net(net_param, net):
    """Folded NetParameter and {layer: [arrays]} of the new and changed layers."""
    from caffe.proto import caffe_pb2
    layers = net_param.layer
    folds = plan(net_param)
    out = caffe_pb2.NetParameter()
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
    left = [l.name + " (" + l.type + ")" for l in out.layer if l.type in PROJECT_TYPES]
    if left:
        raise FoldError("layers not exportable to stock Caffe: " + ", ".join(left))
    return out, new_params, folds


def _atomic_target(path):
    d = os.path.dirname(os.path.abspath(path)) or "."
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", dir=d)
    os.close(fd)
    return tmp


def export(prototxt, caffemodel, out_prototxt, out_caffemodel, verify_shape=None,
           tol=1e-4):
    """Fold ``prototxt`` + ``caffemodel`` into ``out_prototxt`` + ``out_caffemodel``.

    Both outputs are written to temporary files and renamed into place only when
    both are complete and, unless ``verify_shape`` is False, the folded net's
    outputs equal the original's on a random input within ``tol`` relative
    (``verify_shape``: (N, C, H, W) of that input, default the deploy shape).
    Returns (folds, relative error or None).
    """
    caffe = _caffe()
    net_param = read_net_param(prototxt)
    net = load_net(prototxt, caffemodel)
    folded, new_params, folds = fold_net(net_param, net)
    tmp_proto, tmp_model = _atomic_target(out_prototxt), _atomic_target(out_caffemodel)
    try:
        with open(tmp_proto, "w") as f:
            f.write(text_format.MessageToString(folded))
        out = caffe.Net(tmp_proto, caffe.TEST)
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
        out.save(tmp_model)
        os.replace(tmp_proto, out_prototxt)
        os.replace(tmp_model, out_caffemodel)
    finally:
        for t in (tmp_proto, tmp_model):
            if os.path.exists(t):
                os.remove(t)
    return folds, err


def random_inputs(net, shape=None, seed=0):
    """Inputs for a comparison: image-like values (mean-subtracted pixels span about
    +-128) for 4-D inputs, zeros for others (e.g. the shifted net's ``pass``)."""
    rng = np.random.RandomState(seed)
    feeds = {}
    for name in net.inputs:
        blob = net.blobs[name]
        if blob.data.ndim == 4:
            s = tuple(shape) if shape else blob.data.shape
            feeds[name] = (rng.uniform(-128, 128, s)).astype(np.float32)
        else:
            feeds[name] = np.zeros(blob.data.shape, np.float32)
    return feeds


def forward(net, feeds):
    """Run ``net`` on ``feeds`` ({input: array}); copies of its outputs and of the
    inputs of its Softmax layers."""
    for name, value in feeds.items():
        if net.blobs[name].data.shape != value.shape:
            net.blobs[name].reshape(*value.shape)
    net.reshape()
    for name, value in feeds.items():
        net.blobs[name].data[...] = value
    net.forward()
    names = list(net.outputs)
    # A saturated softmax hides differences: compare what goes into it too.
    for name, layer in net.layer_dict.items():
        if layer.type == "Softmax":
            names += [b for b in net.bottom_names[name] if b not in names]
    return {n: net.blobs[n].data.copy() for n in names}


def verify(ref, folded, shape=None, seed=0):
    """Max relative difference of the outputs of two nets on the same random input."""
    feeds = random_inputs(ref, shape, seed)
    a, b = forward(ref, feeds), forward(folded, feeds)
    return max(relative_error(a[n], b[n]) for n in a)


def relative_error(ref, other):
    """max |ref - other| / max |ref|: one number for a whole score map."""
    return float(np.abs(ref - other).max() / max(float(np.abs(ref).max()), 1e-30))
