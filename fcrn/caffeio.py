"""Caffe's files and nets: reading prototxt and caffemodels with errors that
name the file, checking weights against a net before Caffe sees them, and
building nets with the project's layers loaded.

Weights are checked before anything is loaded because Caffe itself aborts
the process on a shape mismatch and silently keeps random fillers for a layer
missing from the caffemodel. Here both are refused with every offending layer
named. Blob shapes compare as Caffe compares them: a legacy (num, channels,
height, width) blob matches the expected shape padded to 4 axes with leading
ones, a shaped blob matches exactly.

Only `caffe()`, `load_net`, `net_from_param`, `set_mode` and what runs nets
import pycaffe; the readers use Caffe's protobuf module alone, so that weight
conversion and net generation run without pycaffe. Both are found where
`fcrn.paths` says when they are not importable already.
"""
import copy
import ctypes
import importlib
import importlib.util
import logging
import os
import re
import sys
import tempfile
import warnings

import numpy as np
from google.protobuf import message, text_format

from . import findable, load_layers, paths
from .errors import InputError, UsageError

log = logging.getLogger(__name__)


class CaffeNotFound(ImportError, InputError):
    """pycaffe is not where the package looked (fcrn.paths); a script says so
    in one line (exit 1)."""


class WeightsError(InputError):
    """The caffemodel does not fit the net; `problems` names every layer."""


def caffe():
    """pycaffe, with the project's layers registered (what a net needs)."""
    load_layers()
    try:
        import caffe as module
    except ModuleNotFoundError as e:
        if e.name != "caffe":
            raise
        raise CaffeNotFound("pycaffe not found: its folder comes from %s; set "
                            "FCRN_CAFFE_PREFIX, or source scripts/env.sh"
                            % paths.origin("caffe_prefix"))
    return module


def caffe_pb2():
    """Caffe's protobuf module; pycaffe's own when it is loaded, else loaded
    from its file without importing pycaffe (whose __init__ loads _caffe)."""
    if "caffe.proto.caffe_pb2" in sys.modules:
        return sys.modules["caffe.proto.caffe_pb2"]
    if "fcrn_caffe_pb2" in sys.modules:
        return sys.modules["fcrn_caffe_pb2"]
    findable()
    spec = importlib.util.find_spec("caffe")
    if spec is None or not spec.submodule_search_locations:
        raise CaffeNotFound("caffe_pb2 not found: pycaffe's folder comes from %s; set "
                            "FCRN_CAFFE_PREFIX, or source scripts/env.sh"
                            % paths.origin("caffe_prefix"))
    path = os.path.join(list(spec.submodule_search_locations)[0], "proto", "caffe_pb2.py")
    module_spec = importlib.util.spec_from_file_location("fcrn_caffe_pb2", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    sys.modules["fcrn_caffe_pb2"] = module
    return module


def _read(path, what, binary):
    try:
        with open(path, "rb" if binary else "r") as f:
            return f.read()
    except FileNotFoundError:
        raise InputError("%s: no such file (%s)" % (path, what))
    except IsADirectoryError:
        raise InputError("%s: is a folder, not a %s" % (path, what))
    except UnicodeDecodeError:
        raise InputError("%s: not a text %s" % (path, what))
    except OSError as e:
        raise InputError("%s: cannot read (%s)" % (path, e.strerror or e))


def read_text_proto(path, proto, what):
    """Merge the text-format file `path` into `proto`; InputError naming the file."""
    try:
        text_format.Merge(_read(path, what, False), proto)
    except text_format.ParseError as e:
        raise InputError("%s: not a %s (%s)" % (path, what, e))
    return proto


def read_net_param(path):
    """NetParameter of a prototxt (V1 'layers' nets are refused)."""
    net = read_text_proto(path, caffe_pb2().NetParameter(), "net prototxt")
    if len(net.layers):
        raise InputError("%s uses the V1 'layers' format; upgrade it with Caffe's "
                         "upgrade_net_proto_text first" % path)
    if not len(net.layer):
        raise InputError("%s: not a net prototxt (no layer)" % path)
    return net


def read_solver(path):
    return read_text_proto(path, caffe_pb2().SolverParameter(), "solver prototxt")


def _read_binary_proto(path, proto, what):
    """(proto parsed from the binary file `path`, its bytes); a truncated or
    foreign file is refused (protobuf's DecodeError names no file)."""
    data = _read(path, what, True)
    try:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            proto.ParseFromString(data)
    except (message.DecodeError, RuntimeError, ValueError) as e:
        raise InputError("%s: not a %s (truncated or another format: %s)" % (path, what, e))
    stopped = [w for w in seen if issubclass(w.category, RuntimeWarning)]
    if stopped:  # protobuf only warns when it stops before the end of the data
        raise InputError("%s: not a %s (truncated or another format: %s)"
                         % (path, what, stopped[0].message))
    return proto, data


def read_caffemodel(path):
    """NetParameter of a caffemodel, refusing what cannot be one: a truncated
    or foreign file and files that parse but hold no weights (an empty or
    text file parses as an empty net)."""
    model, data = _read_binary_proto(path, caffe_pb2().NetParameter(), "caffemodel")
    if not any(len(l.blobs) for l in list(model.layer) + list(model.layers)):
        raise InputError("%s: not a caffemodel (%s)" % (
            path, "empty file" if not data else "no layer holds weights"))
    return model


def read_solverstate(path):
    """SolverState of a `.solverstate` snapshot (binary; Caffe records the
    weights file it belongs to in every one)."""
    state, data = _read_binary_proto(path, caffe_pb2().SolverState(), "solverstate")
    if not state.HasField("learned_net"):
        raise InputError("%s: not a solverstate (%s)" % (
            path, "empty file" if not data else "no weights file named"))
    return state


def learnable_blobs(model):
    """How many learnable parameter blobs Caffe makes of a net (a caffemodel's
    NetParameter): every blob but those a layer shares by a param name an
    earlier layer gave (Net::AppendParam)."""
    seen, count = set(), 0
    for layer in model.layer:
        for i in range(len(layer.blobs)):
            name = layer.param[i].name if i < len(layer.param) else ""
            if not name or name not in seen:
                count += 1
            seen.add(name)
    return count


def blob_shape(blob):
    """(shape, legacy) of a BlobProto; legacy blobs carry num/channels/height/width."""
    if blob.HasField("shape"):
        return tuple(blob.shape.dim), False
    return (blob.num, blob.channels, blob.height, blob.width), True


def shape_matches(expected, blob):
    """Whether `blob` fits a parameter of shape `expected` as Caffe decides
    (None in `expected`: any size on that axis)."""
    stored, legacy = blob_shape(blob)
    if legacy:
        expected = (1,) * (4 - len(expected)) + tuple(expected)
    return len(stored) == len(expected) and all(e is None or e == s
                                                for e, s in zip(expected, stored))


def stored_blobs(model):
    """{layer name: [BlobProto]} of the layers of a caffemodel that carry any."""
    return {l.name: list(l.blobs) for l in list(model.layer) + list(model.layers) if len(l.blobs)}


def check_weights(net, caffemodel, model=None):
    """Raise WeightsError naming every layer of `net` whose weights in
    `caffemodel` (path; `model`: its NetParameter, when read already) are
    missing or of another count or shape. Returns the names of stored layers
    the net does not use (Caffe ignores those)."""
    blobs = stored_blobs(model if model is not None else read_caffemodel(caffemodel))
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
        for i, (e, g) in enumerate(zip(expected, got)):
            if not shape_matches(e, g):
                problems.append("%s: blob %d stored as %s, the net expects %s" % (
                    name, i, "x".join(map(str, blob_shape(g)[0])), "x".join(map(str, e))))
    if problems:
        raise WeightsError("%s does not fit %s (%d layer(s))"
                           % (caffemodel, "the net", len(problems)), problems)
    return sorted(set(blobs) - set(net.params.keys()))


BLOB_USES = ("computes", "owns_tops")


def layers_in_phase(param, phase):
    """The layers of NetParameter `param` that Caffe builds in `phase` ("test"
    or "train"): its include and exclude rules against the net's state, as
    Net::StateMeetsRule reads them."""
    state = param.state
    wanted = caffe_pb2().TEST if phase == "test" else caffe_pb2().TRAIN
    stages = set(state.stage)

    def meets(rule):
        return ((not rule.HasField("phase") or rule.phase == wanted)
                and (not rule.HasField("min_level") or state.level >= rule.min_level)
                and (not rule.HasField("max_level") or state.level <= rule.max_level)
                and stages.issuperset(rule.stage) and not stages.intersection(rule.not_stage))

    return [layer for layer in param.layer
            if (any(meets(r) for r in layer.include) if layer.include
                else not any(meets(r) for r in layer.exclude))]


def check_sharing(param, prototxt, phase="test"):
    """InputError, before Caffe aborts on it, for a Python layer of the net in
    `phase` whose class says a `blob_use` (fcrn.pylayer) that is none of
    BLOB_USES (Caffe refuses it whatever the net says), or, in a net that sets
    share_memory: true, does not say one."""
    shared = param.HasField("share_memory") and param.share_memory
    for layer in layers_in_phase(param, phase):
        if layer.type != "Python":
            continue
        where = "%s.%s" % (layer.python_param.module, layer.python_param.layer)
        try:
            cls = getattr(importlib.import_module(layer.python_param.module),
                          layer.python_param.layer)
        except (ImportError, AttributeError) as e:
            raise InputError("%s: Python layer '%s' (%s) cannot be loaded: %s"
                             % (prototxt, layer.name, where, e))
        use = getattr(cls, "blob_use", None)
        if use is not None and use not in BLOB_USES:
            raise InputError("%s: layer '%s' (Python, %s) says blob_use = %r, which is none "
                             "of %s (or None)" % (prototxt, layer.name, where, use,
                                                  ", ".join(BLOB_USES)))
        if use is None and shared:
            raise InputError(
                "%s: layer '%s' (Python, %s) does not declare how it uses its blobs' "
                "memory (class attribute blob_use), which share_memory: true needs; "
                "declare it, or set share_memory: false (--no-share-memory)"
                % (prototxt, layer.name, where))


def load_net(prototxt, weights=None, phase="test", share_memory=None, param=None):
    """caffe.Net of `prototxt` in TEST (or TRAIN) phase with checked weights.

    share_memory: None keeps the prototxt's choice (unset, Caffe shares blob
    memory when every layer vouches for itself: patch 0010); True or False
    overrides it. A sharing net keeps the values of its inputs and outputs
    only (pycaffe refuses to read the other blobs). param: a NetParameter to
    build instead of the file's (one derived from it, such as `up_to`'s)."""
    # A readable message rather than Caffe's abort.
    param = read_net_param(prototxt) if param is None else copy.deepcopy(param)
    both = [l.name for l in param.layer if l.include and l.exclude]
    if both:
        raise InputError("%s: layer '%s' has both include and exclude rules; Caffe takes "
                         "one or the other" % (prototxt, both[0]))
    module = caffe()
    unknown = sorted({l.type for l in layers_in_phase(param, phase)}
                     - set(module.layer_type_list()))
    if unknown:
        raise InputError("%s: layer type(s) %s unknown to this Caffe%s" % (
            prototxt, ", ".join(unknown), " (is the project's layer library built? run make)"
            if set(unknown) & {"LeanBatchNorm", "BootstrappedSoftmaxWithLoss"} else ""))
    if share_memory is not None:
        param.share_memory = share_memory
    check_sharing(param, prototxt, phase)
    return net_from_param(param, phase, weights)


def net_from_param(param, phase="test", weights=None):
    """caffe.Net of a NetParameter in TEST (or TRAIN) phase, with the checked
    `weights` (a caffemodel) copied in: every net the project builds comes
    from here (Caffe reads a definition from a file only)."""
    if phase not in ("test", "train"):
        raise ValueError("phase must be 'test' or 'train', not %r" % (phase,))
    # Read first: a bad file is named before Caffe builds (and prints) the net.
    model = read_caffemodel(weights) if weights else None
    module = caffe()
    with tempfile.TemporaryDirectory(prefix="fcrn-net.") as folder:
        path = os.path.join(folder, "net.prototxt")
        with open(path, "w") as f:
            f.write(text_format.MessageToString(param))
        net = module.Net(path, module.TEST if phase == "test" else module.TRAIN)
    if weights:
        unused = check_weights(net, weights, model)
        del model  # copy_from reads the file itself: not two copies at once
        if unused:
            log.info("%d stored layer(s) not in the net, ignored: %s", len(unused),
                     ", ".join(unused[:8]) + (" ..." if len(unused) > 8 else ""))
        net.copy_from(weights)
    return net


def up_to(param, blob, where=None):
    """`param` without the layers after the last one that writes `blob`, so
    that `blob` is an output of the net (a net that shares memory keeps its
    outputs' values only). UsageError, naming `where` (the prototxt), when
    no layer writes it."""
    last = max((i for i, layer in enumerate(param.layer) if blob in layer.top), default=None)
    if last is None:
        raise UsageError("%s: net has no blob %r" % (where or param.name or "the net", blob))
    trimmed = copy.deepcopy(param)
    del trimmed.layer[last + 1:]
    return trimmed


def _mapped(pattern):
    """Path of the first library mapped into this process whose name matches
    `pattern`, or None."""
    try:
        with open("/proc/self/maps") as f:
            m = re.search(r"(/\S*(?:%s)\S*)" % pattern, f.read())
    except OSError:
        return None
    return m.group(1) if m else None


def gpu_build():
    """Whether the loaded libcaffe was built with CUDA (it then maps libcudart)."""
    caffe()
    return _mapped("libcudart|libcublas") is not None


def gpu_count():
    """CUDA devices the loaded Caffe can use: 0 on a CPU-only build or where
    the runtime finds no usable GPU (Caffe itself aborts on a missing one)."""
    caffe()
    path = _mapped("libcudart")
    if path is None:
        return 0
    count = ctypes.c_int(0)
    if ctypes.CDLL(path).cudaGetDeviceCount(ctypes.byref(count)) != 0:
        return 0
    return count.value


def require_gpu(what, remedy="make CUDA=1", device=None):
    """UsageError "`what`: this Caffe is a CPU-only build (`remedy`)" unless
    the loaded Caffe can run on a GPU, and one naming the GPUs there are
    when `device` is not one of them."""
    if not gpu_build():
        raise UsageError("%s: this Caffe is a CPU-only build (%s)" % (what, remedy))
    if device is not None:
        count = gpu_count()
        if device >= count:
            raise UsageError("%s: no GPU %d here (%d usable)" % (what, device, count))


def set_mode(gpu=None):
    """CPU mode, or GPU `gpu` (UsageError on a CPU-only build or a GPU that
    is not there)."""
    module = caffe()
    if gpu is None:
        module.set_mode_cpu()
        return
    require_gpu("--gpu %d" % gpu, device=gpu)
    module.set_mode_gpu()
    module.set_device(gpu)


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
    names += [b for b in softmax_inputs(net).values() if b not in names]
    return {n: net.blobs[n].data.copy() for n in names}


def softmax_inputs(net):
    """{output blob: input blob} of the Softmax layers of pycaffe `net`."""
    return {net.top_names[name][0]: net.bottom_names[name][0]
            for name, layer in net.layer_dict.items() if layer.type == "Softmax"}


def relative_error(ref, other, scale=None):
    """max |ref - other| / max |scale| (default: ref): one number for a whole
    score map."""
    scale = ref if scale is None else scale
    return float(np.abs(ref - other).max() / max(float(np.abs(scale).max()), 1e-30))


def output_error(net, ref, other):
    """The largest relative_error over the blobs of `other` ({blob: array})
    against `ref` ({blob: array}, holding the inputs of the Softmax layers of
    pycaffe `net` too, as forward() returns them). A Softmax's output is
    measured against its input's size: it moves by at most half as much as
    its input, and relative to itself (at most 1) a correct net's error would
    grow with its scores."""
    inputs = softmax_inputs(net)
    return max(relative_error(ref[b], y, ref[inputs[b]] if b in inputs else None)
               for b, y in other.items())
