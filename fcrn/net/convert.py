"""Pretrained ImageNet ResNet weights -> initial weights of a generated FCRN.

Protobuf only: the released models store a BatchNorm (mean, variance,
moving-average factor) and a Scale (gamma, beta) per convolution; the
FCRN's LeanBatchNorm `bn{x}` carries exactly those five blobs, so it gets
`bn{x}`'s blobs 0-2 followed by `scale{x}`'s 0-1. Every other layer with
parameters is copied by name. Expected parameter shapes are inferred from the
target prototxt (channels flow from Input/data layers through the net), and
any mismatch, or a layer with parameters that gets no weights and is not a
declared new layer (the classifier), is a problem: nothing is written then.
"""
import collections
import importlib.util
import os
import sys

from google.protobuf import text_format


def _caffe_pb2():
    """caffe_pb2 without importing pycaffe (caffe/__init__ loads _caffe)."""
    spec = importlib.util.find_spec('caffe')
    if spec is None or not spec.submodule_search_locations:
        raise ImportError('caffe_pb2 not found: put Caffe\'s python folder on PYTHONPATH')
    path = os.path.join(list(spec.submodule_search_locations)[0], 'proto', 'caffe_pb2.py')
    module_spec = importlib.util.spec_from_file_location('fcrn_caffe_pb2', path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


try:  # the same module object as pycaffe's, when pycaffe is already loaded
    caffe_pb2 = sys.modules['caffe.proto.caffe_pb2']
except KeyError:
    caffe_pb2 = _caffe_pb2()

# The project's data layer's tops and their channels.
DATA_CHANNELS = {'data': 3, 'label': 1, 'pass': None}
NEW_LAYERS = ('score',)

Report = collections.namedtuple('Report', 'copied skipped new problems')


def blob_shape(blob):
    """Shape of a BlobProto, legacy 4-d (num, channels, height, width) or not,
    with leading 1s dropped so that both spellings compare equal."""
    dims = list(blob.shape.dim) if blob.HasField('shape') else \
        [blob.num, blob.channels, blob.height, blob.width]
    while dims and dims[0] == 1:
        dims.pop(0)
    return tuple(dims)


def _squeeze(shape):
    shape = list(shape)
    while shape and shape[0] == 1:
        shape.pop(0)
    return tuple(shape)


def expected_shapes(net):
    """{layer name: [blob shape, ...]} for the layers with parameters, from the
    prototxt alone. None stands for a dimension that cannot be inferred."""
    channels, shapes = {}, {}
    for layer in net.layer:
        inp = channels.get(layer.bottom[0]) if layer.bottom else None
        out = inp
        if layer.type == 'Input':
            for i, top in enumerate(layer.top):
                shape = layer.input_param.shape[min(i, len(layer.input_param.shape) - 1)]
                channels[top] = shape.dim[1] if len(shape.dim) > 1 else None
            continue
        if layer.type == 'Python' and not layer.bottom:
            for top in layer.top:
                channels[top] = DATA_CHANNELS.get(top)
            continue
        if layer.type in ('Convolution', 'Deconvolution'):
            p = layer.convolution_param
            out = p.num_output
            kh = p.kernel_h or (p.kernel_size[0] if p.kernel_size else 1)
            kw = p.kernel_w or (p.kernel_size[-1] if p.kernel_size else 1)
            cin = inp // p.group if inp is not None else None
            shapes[layer.name] = [(out, cin, kh, kw)] + ([(out,)] if p.bias_term else [])
        elif layer.type == 'InnerProduct':
            p = layer.inner_product_param
            out = p.num_output
            shapes[layer.name] = [(out, None)] + ([(out,)] if p.bias_term else [])
        elif layer.type == 'BatchNorm':
            shapes[layer.name] = [(inp,), (inp,), (1,)]
        elif layer.type == 'LeanBatchNorm':
            shapes[layer.name] = [(inp,), (inp,), (1,), (inp,), (inp,)]
        elif layer.type == 'Scale':
            shapes[layer.name] = [(inp,)] + ([(inp,)] if layer.scale_param.bias_term else [])
        for top in layer.top:
            channels[top] = out
    return shapes


def _matches(expected, got):
    expected, got = _squeeze(expected), _squeeze(got)
    return len(expected) == len(got) and all(e is None or e == g for e, g in zip(expected, got))


def _sources(name, type_, source):
    """Source layer names whose blobs, concatenated, initialise target `name`."""
    if type_ == 'LeanBatchNorm' and source.get(name, (None,))[0] == 'BatchNorm' \
            and name.startswith('bn'):
        return [name, 'scale' + name[2:]]
    return [name]


def convert(source, target, new_layers=NEW_LAYERS):
    """Weights for `target` (NetParameter, prototxt) from `source` (NetParameter,
    caffemodel). Returns (NetParameter of weights, Report)."""
    if len(source.layers):
        raise ValueError('the source model uses the V1 `layers` format; upgrade it with '
                         'Caffe\'s upgrade_net_proto_binary first')
    blobs = {layer.name: (layer.type, list(layer.blobs)) for layer in source.layer if layer.blobs}
    shapes = expected_shapes(target)
    out = caffe_pb2.NetParameter(name=target.name)
    copied, new, problems, used = [], [], [], set()
    for layer in target.layer:
        if layer.name not in shapes:
            continue
        names = _sources(layer.name, layer.type, blobs)
        if not all(name in blobs for name in names):
            if layer.name in new_layers:
                new.append(layer.name)
            else:
                problems.append('%s (%s): no weights in the source model (looked for %s)'
                                % (layer.name, layer.type, ', '.join(names)))
            continue
        found = [blob for name in names for blob in blobs[name][1]]
        expected = shapes[layer.name]
        got = [blob_shape(blob) for blob in found]
        if len(got) != len(expected) or not all(map(_matches, expected, got)):
            problems.append('%s: shape mismatch, the net needs %s, %s has %s' % (
                layer.name, _format(expected), '+'.join(names), _format(got)))
            continue
        copy = out.layer.add(name=layer.name, type=layer.type)
        for blob, shape in zip(found, expected):
            target_blob = copy.blobs.add()
            target_blob.data.extend(blob.data)
            target_blob.shape.dim.extend(s if s is not None else g for s, g in
                                         zip(shape, _pad(blob_shape(blob), len(shape))))
        used.update(names)
        copied.append((layer.name, names))
    skipped = [name for name in blobs if name not in used]
    return out, Report(copied, skipped, new, problems)


def _pad(shape, length):
    return (1,) * (length - len(shape)) + tuple(shape)


def _format(shapes):
    return ' '.join('(%s)' % ','.join('?' if d is None else str(d) for d in s) for s in shapes)


def read(path, binary):
    net = caffe_pb2.NetParameter()
    with open(path, 'rb' if binary else 'r') as f:
        if binary:
            net.ParseFromString(f.read())
        else:
            text_format.Merge(f.read(), net)
    return net
