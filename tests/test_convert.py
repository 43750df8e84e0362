"""Weight conversion (fcrn/net/convert.py, scripts/convert_weights.py)."""
import os
import subprocess
import sys

import numpy as np
import pytest
from google.protobuf import text_format

import caffe
from caffe.proto import caffe_pb2
from fcrn import caffeio
from conftest import ROOT
from fcrn.net import convert, netgen, resnet

SCRIPT = os.path.join(ROOT, 'scripts', 'convert_weights.py')


@pytest.fixture(scope='module')
def imagenet(tmp_path_factory, randomise):
    """A ResNet-50 ImageNet classifier in the released format, random weights."""
    folder = tmp_path_factory.mktemp('imagenet')
    prototxt = str(folder / 'resnet50.prototxt')
    proto = resnet.imagenet_resnet(50)
    proto.share_memory = False  # the features below are intermediate blobs
    with open(prototxt, 'w') as f:
        f.write(text_format.MessageToString(proto))
    net = caffe.Net(prototxt, caffe.TEST)
    randomise(net, seed=3)
    model = str(folder / 'resnet50.caffemodel')
    net.save(model)
    image = np.random.RandomState(4).randn(1, 3, 224, 224).astype(np.float32) * 50
    net.blobs['data'].data[...] = image
    net.forward()
    features = {name: net.blobs[name].data.copy() for name in ('res3d', 'res4f', 'res5c')}
    return dict(model=model, image=image, features=features, folder=folder)


def fcrn_prototxt(folder, batch_norm, depth=50):
    path = str(folder / ('fcrn_%d_%s.prototxt' % (depth, batch_norm)))
    variant = netgen.Variant(depth=depth, resolution=16, kernel=3, dilation=6,
                             batch_norm=batch_norm, crop=224,
                             share_memory=False)  # intermediate blobs are compared
    with open(path, 'w') as f:
        f.write(netgen.net_text(netgen.net(variant, 'deploy')))
    return path


def run_script(*args):
    return subprocess.run([sys.executable, SCRIPT] + list(args), capture_output=True, text=True)


@pytest.mark.parametrize('batch_norm', resnet.BATCH_NORMS)
def test_converted_fcrn_computes_the_imagenet_features(imagenet, batch_norm):
    target = fcrn_prototxt(imagenet['folder'], batch_norm)
    output = str(imagenet['folder'] / ('init_%s.caffemodel' % batch_norm))
    result = run_script(imagenet['model'], target, output)
    assert result.returncode == 0, result.stderr
    assert 'skipped fc1000' in result.stderr and 'new score' in result.stderr
    if batch_norm == 'lean':  # the Scale layers were folded into LeanBatchNorm
        assert 'skipped scale_conv1' not in result.stderr

    net = caffe.Net(target, output, caffe.TEST)
    net.blobs['data'].data[...] = imagenet['image']
    net.forward()
    expected = imagenet['features']
    tolerance = lambda x: 1e-5 * np.abs(x).max()  # noqa: E731
    # res3, res4 keep their strides at 1/16: same maps
    for name in ('res3d', 'res4f'):
        assert np.abs(net.blobs[name].data - expected[name]).max() < tolerance(expected[name])
    # res5 lost its stride for dilation 2: its even phase is the ImageNet res5
    got = net.blobs['res5c'].data[:, :, ::2, ::2]
    assert got.shape == expected['res5c'].shape
    assert np.abs(got - expected['res5c']).max() < tolerance(expected['res5c'])


def test_lean_batch_norm_gets_batchnorm_then_scale_blobs(imagenet):
    source = caffeio.read_caffemodel(imagenet['model'])
    target = caffeio.read_net_param(fcrn_prototxt(imagenet['folder'], 'lean'))
    weights, report = convert.convert(source, target)
    assert report.problems == []
    assert ('bn4c_branch2b', ['bn4c_branch2b', 'scale4c_branch2b']) in report.copied
    blobs = {layer.name: layer for layer in source.layer}
    lean = {layer.name: layer for layer in weights.layer}['bn4c_branch2b']
    want = list(blobs['bn4c_branch2b'].blobs) + list(blobs['scale4c_branch2b'].blobs)
    assert len(lean.blobs) == 5
    for got, blob in zip(lean.blobs, want):
        np.testing.assert_array_equal(got.data, blob.data)
    assert list(lean.blobs[2].shape.dim) == [1]


def test_refuses_a_deeper_net_listing_the_uninitialised_layers(imagenet, tmp_path):
    target = fcrn_prototxt(tmp_path, 'lean', depth=101)
    output = str(tmp_path / 'out.caffemodel')
    result = run_script(imagenet['model'], target, output)
    assert result.returncode == 1
    assert 'res4b22_branch2a (Convolution): no weights in the source model' in result.stderr
    # ResNet-50's conv1 has a bias, ResNet-101's has none
    assert 'conv1: shape mismatch, the net needs (64,3,7,7), conv1 has (64,3,7,7) (64)' \
        in result.stderr
    assert not os.path.exists(output)


def with_layer(model, like, name, shape=None):
    """The caffemodel `model` (NetParameter) with a copy of layer `like` named
    `name`, its first blob reshaped to `shape` (zeros) if given."""
    layer = model.layer.add()
    layer.CopyFrom(next(layer for layer in model.layer if layer.name == like))
    layer.name = name
    if shape:
        del layer.blobs[:]
        for dims in (shape, shape[:1]):
            blob = layer.blobs.add()
            blob.shape.dim.extend(dims)
            blob.data.extend([0.0] * int(np.prod(dims)))
    return model


def test_refuses_a_deeper_source_naming_the_layers_it_would_leave_out(imagenet):
    """ResNet-152's weights into an FCRN-101 copied every layer of the net and
    left out the source's extra blocks (res3b4-b7, res4b23-b35) with an INFO
    line: the result matched neither net."""
    source = with_layer(caffeio.read_caffemodel(imagenet['model']), 'res4f_branch2a',
                        'res4g_branch2a')
    target = caffeio.read_net_param(fcrn_prototxt(imagenet['folder'], 'lean'))
    _, report = convert.convert(source, target)
    assert report.problems == ['res4g_branch2a (Convolution): in the source model, not in '
                               'the net (is the source deeper?)']
    assert report.skipped == ['fc1000']   # the ImageNet classifier is left out


def test_a_classifier_of_other_classes_starts_from_its_filler(imagenet):
    """A model trained for 19 classes initialises a 21-class net but for its
    classifier (a declared new layer), which is not listed as skipped."""
    source = with_layer(caffeio.read_caffemodel(imagenet['model']), 'conv1', 'score',
                        shape=[19, 2048, 3, 3])
    target = caffeio.read_net_param(fcrn_prototxt(imagenet['folder'], 'lean'))
    weights, report = convert.convert(source, target)
    assert report.problems == [] and report.new == ['score']
    assert report.skipped == ['fc1000']
    assert 'score' not in [layer.name for layer in weights.layer]


def test_refuses_a_shape_mismatch_naming_the_layer(imagenet, tmp_path):
    source = caffeio.read_caffemodel(imagenet['model'])
    layer = next(layer for layer in source.layer if layer.name == 'res3a_branch2b')
    del layer.blobs[0].shape.dim[:]
    layer.blobs[0].shape.dim.extend([128, 64, 3, 3])   # half the input channels
    del layer.blobs[0].data[128 * 64 * 9:]
    broken = str(tmp_path / 'broken.caffemodel')
    with open(broken, 'wb') as f:
        f.write(source.SerializeToString())
    result = run_script(broken, fcrn_prototxt(tmp_path, 'lean'), str(tmp_path / 'o.caffemodel'))
    assert result.returncode == 1
    assert 'res3a_branch2b: shape mismatch, the net needs (128,128,3,3)' in result.stderr
    assert not os.path.exists(str(tmp_path / 'o.caffemodel'))


def test_blob_shapes_compare_as_caffe_compares_them():
    """Legacy (num, channels, height, width) blobs match the expected shape
    padded with leading 1s; shaped blobs match exactly; None is any size."""
    legacy = caffe_pb2.BlobProto(num=1, channels=1, height=1, width=64)
    assert caffeio.blob_shape(legacy) == ((1, 1, 1, 64), True)
    assert caffeio.shape_matches((64,), legacy) and caffeio.shape_matches((1, 64), legacy)
    assert not caffeio.shape_matches((32,), legacy)
    shaped = caffe_pb2.BlobProto()
    shaped.shape.dim.extend([64, 3, 7, 7])
    assert caffeio.shape_matches((64, 3, 7, 7), shaped)
    assert caffeio.shape_matches((64, None, 7, 7), shaped)
    assert not caffeio.shape_matches((1, 64, 3, 7, 7), shaped)
    assert not caffeio.shape_matches((64, 3, 5, 5), shaped)


def test_script_converts_without_pycaffe(imagenet, tmp_path):
    """The whole conversion, not just --help, runs without importing pycaffe."""
    output = str(tmp_path / 'init.caffemodel')
    code = ('import sys, runpy\n'
            'sys.argv = ["x", %r, %r, %r]\n'
            'try:\n    runpy.run_path(%r, run_name="__main__")\n'
            'except SystemExit as e:\n    assert e.code == 0, e.code\n'
            'assert "caffe._caffe" not in sys.modules, "pycaffe was imported"\n'
            % (imagenet['model'], fcrn_prototxt(tmp_path, 'lean'), output, SCRIPT))
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert os.path.getsize(output) > 1e6
