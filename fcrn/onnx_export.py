"""Deployment export: a Caffe deploy net to ONNX, through the folded net.

The net is first folded exactly as ``fcrn.fold`` folds it (frozen BN merged into
the convolutions, any other BN a stock Scale), then every layer is written as
ONNX nodes with the ``onnx`` package's helpers (opset 13, IR 7, so that older
runtimes load it too). The project writes its own converter because the caffe
to ONNX converters on PyPI do not fit (docs/usage.md, "Export to ONNX"): caffe2onnx
pins onnx 1.6.0 (no wheel for this Python), caffe-onnx requires protobuf < 4,
and both fix the input size, ignore Eltwise coefficients and leave Caffe's
dropped last pooling window out of account.

Caffe semantics reproduced for any input size (height and width are dynamic
unless fixed):

- Pooling. Caffe rounds the output size up (or down with ``round_mode: FLOOR``)
  and, when there is padding, drops a last window that would start in the
  bottom or right padding. The windows kept are those starting at t*s with
  t*s <= min(H + 2p - k + s - 1, H + p - 1), which is the plain (floor) count
  of an input padded by p before and by min(p + s - 1, k - 1) after: an end pad
  that does not depend on H, so the exported MaxPool (ceil_mode 0) matches Caffe
  at every size, with no reliance on how a runtime reads ``ceil_mode``. Average
  pooling divides by the window clipped to the padded input (padding counted,
  the extra end cells not): explicit zero padding by p, then AveragePool over
  real cells only (count_include_pad 0) with end pad min(s - 1, k - 1 - p).
- Eltwise SUM with coefficients (each input scaled before the sum), PROD, MAX.
- In-place layers: each write of a Caffe blob is a new ONNX value; the last
  version of a blob (the first of an input) carries the blob's name.
- Scale (one input, the learned scale and optional bias) broadcast over its
  axes; ReLU with negative_slope (LeakyRelu); Softmax along its axis.

Outputs: the blob "score" when the net has one (what the inference pipeline
reads), else the net's outputs, or the blobs asked for; optionally "label",
the argmax over channels. Layers the outputs do not need are left out.
"""
import collections
import os
import time

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from . import caffeio, fileio, fold
from .errors import InputError

OPSET = 13
IR_VERSION = 7  # the IR of opset 13 (onnx 1.8): loadable by runtimes back to then
BATCH, HEIGHT, WIDTH = "batch", "height", "width"  # names of the symbolic input dims
# Layer types the exporter writes; BN types are folded away before writing.
SUPPORTED = ("Input", "Convolution", "BatchNorm", "LeanBatchNorm", "Scale", "ReLU",
             "Pooling", "Eltwise", "Softmax")

Result = collections.namedtuple("Result", "inputs outputs nodes folds relative_error")


class ExportError(InputError):
    """The net, its weights or the export is unusable; the message names the cause."""


def unsupported_layers(net_param):
    """'name (type)' of every layer the exporter cannot write."""
    return ["%s (%s)" % (l.name, l.type) for l in net_param.layer
            if l.type not in SUPPORTED or len(l.include) or len(l.exclude)]


def _pair(param, name, default, h=None, w=None):
    """(h, w) of a Caffe convolution or pooling setting, read as Caffe reads it:
    the h/w fields when set, else the (repeated or scalar) field, else default."""
    if h and param.HasField(h):
        return getattr(param, h), getattr(param, w)
    value = getattr(param, name)
    if isinstance(value, int):  # PoolingParameter: scalars with their defaults
        return value, value
    value = list(value)
    if not value:
        return default, default
    return (value[0], value[0]) if len(value) == 1 else tuple(value[:2])


class _Graph:
    """ONNX nodes, initialisers and the current ONNX value of each Caffe blob.

    Caffe rewrites blobs in place; ONNX values are written once. Version v of
    blob b is the value "b#v", except one version that keeps the name "b": an
    input's first (what callers feed), any other blob's last (what they read).
    """

    def __init__(self, layers):
        self.nodes, self.inits, self.value = [], [], {}
        self._version = collections.Counter()
        self._plain = collections.Counter()
        for layer in layers:
            for top in layer.top:
                self._plain[top] = 1 if layer.type == "Input" else self._plain[top] + 1

    def read(self, blob):
        return self.value[blob]

    def write(self, blob):
        self._version[blob] += 1
        v = self._version[blob]
        self.value[blob] = blob if v == self._plain[blob] else "%s#%d" % (blob, v)
        return self.value[blob]

    def const(self, name, array, dtype=np.float32):
        self.inits.append(numpy_helper.from_array(np.asarray(array, dtype), name))
        return name

    def node(self, op, inputs, outputs, name, **attrs):
        self.nodes.append(helper.make_node(op, inputs, outputs, name=name, **attrs))
        return outputs[0]


def _conv(g, layer, params, x, y):
    p = layer.convolution_param
    w = params[0]
    if p.axis != 1 or w.ndim != 4:
        raise ExportError("%s: only 2-D convolutions over axis 1 are exported" % layer.name)
    kh, kw = _pair(p, "kernel_size", 0, "kernel_h", "kernel_w")
    ph, pw = _pair(p, "pad", 0, "pad_h", "pad_w")
    sh, sw = _pair(p, "stride", 1, "stride_h", "stride_w")
    dh, dw = _pair(p, "dilation", 1)
    inputs = [x, g.const(layer.name + "/W", w)]
    if p.bias_term:
        inputs.append(g.const(layer.name + "/B", params[1].reshape(-1)))
    g.node("Conv", inputs, [y], layer.name, kernel_shape=[kh, kw], pads=[ph, pw, ph, pw],
           strides=[sh, sw], dilations=[dh, dw], group=p.group)


def _pool(g, layer, x, y):
    p = layer.pooling_param
    if p.pool not in (p.MAX, p.AVE):
        raise ExportError("%s: %s pooling is not exported (MAX and AVE are)"
                          % (layer.name, p.PoolMethod.Name(p.pool)))
    average = p.pool == p.AVE
    if p.global_pooling:
        g.node("GlobalAveragePool" if average else "GlobalMaxPool", [x], [y], layer.name)
        return
    k = _pair(p, "kernel_size", 0, "kernel_h", "kernel_w")
    pad = _pair(p, "pad", 0, "pad_h", "pad_w")
    s = _pair(p, "stride", 1, "stride_h", "stride_w")
    ceil = p.round_mode == p.CEIL
    if ceil and not any(pad) and any(si > ki for si, ki in zip(s, k)):
        # Without padding Caffe keeps a last window that may lie wholly past
        # the input (an empty max); nothing in ONNX computes that.
        raise ExportError("%s: stride larger than kernel without padding is not "
                          "exported" % layer.name)
    extra = [si - 1 if ceil else 0 for si in s]
    if average:
        if any(pad):
            pads = [0, 0, pad[0], pad[1]] * 2
            x = g.node("Pad", [x, g.const(layer.name + "/pads", pads, np.int64)],
                       [layer.name + "/padded"], layer.name + "/pad")
        end = [min(e, ki - 1 - pi) for e, ki, pi in zip(extra, k, pad)]
        g.node("AveragePool", [x], [y], layer.name, kernel_shape=list(k), strides=list(s),
               pads=[0, 0] + end, count_include_pad=0)
    else:
        end = [min(pi + e, ki - 1) for e, ki, pi in zip(extra, k, pad)]
        g.node("MaxPool", [x], [y], layer.name, kernel_shape=list(k), strides=list(s),
               pads=list(pad) + end)


def _eltwise(g, layer, xs, y):
    p = layer.eltwise_param
    if p.operation == p.SUM:
        coeff = list(p.coeff) or [1.0] * len(xs)
        if len(coeff) != len(xs):
            raise ExportError("%s: %d coefficients for %d inputs"
                              % (layer.name, len(coeff), len(xs)))
        xs = [x if c == 1 else g.node("Mul", [x, g.const("%s/coeff%d" % (layer.name, i), c)],
                                      ["%s/scaled%d" % (layer.name, i)],
                                      "%s/mul%d" % (layer.name, i))
              for i, (x, c) in enumerate(zip(xs, coeff))]
        g.node("Sum", xs, [y], layer.name)
    elif p.operation == p.MAX:
        g.node("Max", xs, [y], layer.name)
    else:  # PROD
        acc = xs[0]
        for i, x in enumerate(xs[1:], 1):
            out = y if i == len(xs) - 1 else "%s/prod%d" % (layer.name, i)
            acc = g.node("Mul", [acc, x], [out], "%s/mul%d" % (layer.name, i))


def _scale(g, layer, params, x, y, rank):
    p = layer.scale_param
    if len(layer.bottom) != 1:
        raise ExportError("%s: Scale with the scale as a second input is not exported"
                          % layer.name)
    axis = p.axis % rank
    # Broadcast over the trailing axes not covered by the parameter.
    shape = params[0].shape + (1,) * (rank - axis - params[0].ndim)
    out = g.node("Mul", [x, g.const(layer.name + "/scale", params[0].reshape(shape))],
                 [y if not p.bias_term else layer.name + "/scaled"], layer.name + "/mul")
    if p.bias_term:
        g.node("Add", [out, g.const(layer.name + "/bias", params[1].reshape(shape))], [y],
               layer.name + "/add")


def _needed(layers, outputs):
    """Indices of the layers that the blobs in ``outputs`` depend on."""
    version, reads, writes = collections.Counter(), [], []
    for layer in layers:
        reads.append([(b, version[b]) for b in layer.bottom])
        for t in layer.top:
            version[t] += 1
        writes.append([(t, version[t]) for t in layer.top])
    wanted = {(b, version[b]) for b in outputs}
    keep = set()
    for i in reversed(range(len(layers))):
        if wanted & set(writes[i]):
            keep.add(i)
            wanted |= set(reads[i])
    return keep


def to_onnx(net_param, params, shapes, outputs, argmax=False, size=None):
    """ONNX model of a folded (BN-free) NetParameter.

    params: {layer name: [numpy arrays]}; shapes: {blob: shape} from the loaded
    net (input shapes, ranks, channel counts); outputs: blob names; argmax adds
    the int64 output "label" (argmax over channels of the first output, keeping
    the axis); size: (H, W) fixes the inputs' spatial size, else it is dynamic.
    """
    keep = _needed(net_param.layer, outputs)
    layers = [l for i, l in enumerate(net_param.layer) if i in keep]
    g = _Graph(layers)
    inputs = []
    for layer in layers:
        bottoms = [g.read(b) for b in layer.bottom]
        tops = [g.write(t) for t in layer.top]
        t = layer.type
        if t == "Input":
            for top in layer.top:
                inputs.append(_value_info(top, shapes[top], size or (HEIGHT, WIDTH)))
        elif t == "Convolution":
            _conv(g, layer, params[layer.name], bottoms[0], tops[0])
        elif t == "ReLU":
            slope = layer.relu_param.negative_slope
            if slope:
                g.node("LeakyRelu", bottoms, tops, layer.name, alpha=slope)
            else:
                g.node("Relu", bottoms, tops, layer.name)
        elif t == "Pooling":
            _pool(g, layer, bottoms[0], tops[0])
        elif t == "Eltwise":
            _eltwise(g, layer, bottoms, tops[0])
        elif t == "Scale":
            _scale(g, layer, params[layer.name], bottoms[0], tops[0],
                   len(shapes[layer.bottom[0]]))
        elif t == "Softmax":
            g.node("Softmax", bottoms, tops, layer.name, axis=layer.softmax_param.axis)
        else:
            raise ExportError("%s: layer type %s is not exported" % (layer.name, t))
    outs = []
    for blob in outputs:
        if g.value[blob] != blob:
            raise ExportError("%s: an input rewritten in place cannot be an output" % blob)
        outs.append(_value_info(blob, shapes[blob]))
    if argmax:
        if "label" in g.value:
            raise ExportError("the net has a blob 'label': no room for the argmax output")
        g.node("ArgMax", [outputs[0]], ["label"], "label", axis=1, keepdims=1)
        shape = list(shapes[outputs[0]])
        shape[1] = 1
        outs.append(_value_info("label", shape, dtype=TensorProto.INT64))
    graph = helper.make_graph(g.nodes, net_param.name or "caffe", inputs, outs, g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="fcrn", ir_version=IR_VERSION)
    onnx.checker.check_model(model)
    return model


def _value_info(name, shape, spatial=(None, None), dtype=TensorProto.FLOAT):
    """Input or output declaration: a 4-D blob gets a symbolic batch and the
    given height and width (numbers, names, or None: unnamed, as for outputs,
    whose size follows from the input's); other blobs keep their shape."""
    dims = list(shape)
    if len(dims) == 4:
        dims = [BATCH, dims[1]] + list(spatial)
    return helper.make_tensor_value_info(name, dtype, dims)


def default_outputs(net):
    """The blob the inference pipeline reads: "score", else the net's outputs."""
    return ["score"] if "score" in net.blobs else list(net.outputs)


def session(model, threads=None):
    """onnxruntime CPU session for a model path or serialised bytes, with
    ``threads`` intra-op threads (default: every CPU this process may use, as
    OpenBLAS and OpenCV do, rather than onnxruntime's physical-core count)."""
    import onnxruntime
    opts = onnxruntime.SessionOptions()
    opts.intra_op_num_threads = threads or len(os.sched_getaffinity(0))
    return onnxruntime.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


def export(prototxt, caffemodel, out, outputs=None, argmax=False, size=None,
           verify=True, verify_size=None, tol=1e-4, force=False):
    """Write ``prototxt`` + ``caffemodel`` as the ONNX model ``out`` (atomically).

    The net's BN is folded first (``fcrn.fold``). With ``verify``, onnxruntime
    runs the model on a random input of height and width ``verify_size``
    (default: ``size``, else the deploy net's) and its outputs must equal
    pycaffe's on the original, unfolded net within ``tol`` (relative to the
    largest output value) before anything is written. An existing ``out`` is
    replaced only with ``force``, an input never. Returns a Result.
    """
    fileio.check_targets([out], [prototxt, caffemodel], force)
    net_param = caffeio.read_net_param(prototxt)
    bad = unsupported_layers(net_param)
    if bad:
        raise ExportError("%s: layers not exportable to ONNX: %s (supported: %s; no "
                          "include/exclude rules)" % (prototxt, ", ".join(bad),
                                                       ", ".join(SUPPORTED)))
    # Unshared: the check reads the chosen outputs and the Softmax inputs,
    # which may be blobs inside the net.
    net = caffeio.load_net(prototxt, caffemodel, share_memory=False)
    folded, new_params, folds = fold.fold_net(net_param, net)
    outputs = list(outputs or default_outputs(net))
    missing = [b for b in outputs if b not in net.blobs]
    if missing:
        raise ExportError("%s: no blob %s" % (prototxt, ", ".join(missing)))
    params = {name: [b.data for b in blobs] for name, blobs in net.params.items()}
    params.update(new_params)  # folded convolutions, BN become Scale
    shapes = {name: blob.data.shape for name, blob in net.blobs.items()}
    model = to_onnx(folded, params, shapes, outputs, argmax, size)
    data = model.SerializeToString()
    err = None
    if verify:
        hw = verify_size or size
        err = compare(net, data, outputs, hw and shapes[net.inputs[0]][:2] + tuple(hw))
        if not err <= tol:
            raise ExportError("the ONNX model differs from the Caffe net: relative error "
                              "%.3g > %.3g" % (err, tol))
    fileio.atomic_write(out, data)
    return Result([i.name for i in model.graph.input], [o.name for o in model.graph.output],
                  len(model.graph.node), folds, err)


def compare(net, model, outputs, shape=None, seed=0):
    """Max relative difference (caffeio.output_error) between pycaffe ``net``
    and the ONNX ``model`` (path or bytes) over ``outputs``, on the same random
    input."""
    feeds = caffeio.random_inputs(net, shape, seed)
    ref = caffeio.forward(net, feeds)
    ref.update((b, net.blobs[b].data) for b in outputs)
    return caffeio.output_error(net, ref, dict(zip(outputs, session(model).run(outputs, feeds))))


def time_onnxruntime(model_path, images, threads=None, repeat=2):
    """Seconds per image of onnxruntime's forward over ``images`` ((C, H, W) or
    (1, C, H, W) float32 arrays, the net's input as pycaffe gets it): best of
    ``repeat`` timed passes after one warm-up pass."""
    sess = session(model_path, threads)
    name = sess.get_inputs()[0].name
    feeds = [{name: np.ascontiguousarray(x.reshape((1,) * (4 - x.ndim) + x.shape),
                                         np.float32)} for x in images]

    def run():
        for f in feeds:
            sess.run(None, f)
    run()
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t)
    return best / len(feeds)
