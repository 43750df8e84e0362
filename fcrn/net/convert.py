"""Pretrained ImageNet ResNet weights -> initial weights of a generated FCRN.

Protobuf only: the released models store a BatchNorm (mean, variance,
moving-average factor) and a Scale (gamma, beta) per convolution; the
FCRN's LeanBatchNorm `bn{x}` carries exactly those five blobs, so it gets
`bn{x}`'s blobs 0-2 followed by `scale{x}`'s 0-1. Every other layer with
parameters is copied by name. Expected parameter shapes are inferred from the
target prototxt (channels flow from Input/data layers through the net), and
any mismatch, a layer with parameters that gets no weights, or a source layer
with parameters that the net leaves out (a deeper source), is a problem:
nothing is written then. Only the source's fully connected classifier is left
out, and only a declared new layer (the classifier) starts from its filler,
also where the source's has other classes.
"""
import collections
import logging

from .. import caffeio, fileio
from ..errors import InputError

log = logging.getLogger(__name__)

# The project's data layer's tops and their channels.
DATA_CHANNELS = {'data': 3, 'label': 1, 'pass': None}
NEW_LAYERS = ('score',)

Report = collections.namedtuple('Report', 'copied skipped new problems')


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
        raise InputError('the source model uses the V1 `layers` format; upgrade it with '
                         'Caffe\'s upgrade_net_proto_binary first')
    blobs = {layer.name: (layer.type, list(layer.blobs)) for layer in source.layer if layer.blobs}
    shapes = expected_shapes(target)
    out = caffeio.caffe_pb2().NetParameter(name=target.name)
    copied, new, problems, wanted = [], [], [], set()
    for layer in target.layer:
        if layer.name not in shapes:
            continue
        names = _sources(layer.name, layer.type, blobs)
        wanted.update(names)
        if not all(name in blobs for name in names):
            if layer.name in new_layers:
                new.append(layer.name)
            else:
                problems.append('%s (%s): no weights in the source model (looked for %s)'
                                % (layer.name, layer.type, ', '.join(names)))
            continue
        found = [blob for name in names for blob in blobs[name][1]]
        expected = shapes[layer.name]
        if len(found) != len(expected) or not all(map(caffeio.shape_matches, expected, found)):
            has = _format(caffeio.blob_shape(blob)[0] for blob in found)
            if layer.name in new_layers:  # another task's classifier
                log.info('%s: the source\'s has %s, the net needs %s', layer.name, has,
                         _format(expected))
                new.append(layer.name)
                continue
            problems.append('%s: shape mismatch, the net needs %s, %s has %s' % (
                layer.name, _format(expected), '+'.join(names), has))
            continue
        copy = out.layer.add(name=layer.name, type=layer.type)
        for blob, shape in zip(found, expected):
            target_blob = copy.blobs.add()
            target_blob.data.extend(blob.data)
            stored = caffeio.blob_shape(blob)[0]
            stored = stored[len(stored) - len(shape):]  # legacy blobs pad with leading 1s
            target_blob.shape.dim.extend(s if s is not None else g for s, g in zip(shape, stored))
        copied.append((layer.name, names))
    left = [name for name in blobs if name not in wanted]
    skipped = [name for name in left if blobs[name][0] == 'InnerProduct']
    problems += ['%s (%s): in the source model, not in the net (is the source deeper?)'
                 % (name, blobs[name][0]) for name in left if name not in skipped]
    return out, Report(copied, skipped, new, problems)


def _format(shapes):
    return ' '.join('(%s)' % ','.join('?' if d is None else str(d) for d in s) for s in shapes)


def convert_files(source, target, output, new_layers=NEW_LAYERS, force=False):
    """Convert the caffemodel `source` for the prototxt `target` into the
    caffemodel `output` (written atomically; an existing one only with
    `force`), logging every copied, skipped and new layer. On any problem
    every one is logged and InputError raised: nothing is written. Returns
    the Report."""
    fileio.check_targets([output], [source, target], force)
    weights, report = convert(caffeio.read_caffemodel(source), caffeio.read_net_param(target),
                              new_layers)
    for name, sources in report.copied:
        log.debug('copied %s <- %s', name, ' + '.join(sources))
    log.info('copied %d layers', len(report.copied))
    for name in report.skipped:
        log.info('skipped %s (not in the target net)', name)
    for name in report.new:
        log.info('new %s (left to its filler)', name)
    for problem in report.problems:
        log.error('%s', problem)
    if report.problems:
        raise InputError('%d problems; nothing written' % len(report.problems))
    fileio.atomic_write(output, weights.SerializeToString())
    log.info('wrote %s', output)
    return report
