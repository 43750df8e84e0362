"""In-place ReLUs applied by the layer before them (cpp/patches/0019-*).

A generated FCRN applies every ReLU of its residual units and stem inside the
LeanBatchNorm or Eltwise sum before it; its outputs and gradients must equal,
bit for bit, those of the same net with FCRN_UNFUSED_RELU set, which runs
each ReLU on its own. cpp/test/test_fused_relu_net.cpp checks which layers
fuse and the GPU.
"""
import os
import subprocess
import sys

import numpy as np

from fcrn import caffeio
caffe = caffeio.caffe()  # with the project's layers
from fcrn.net import netgen
from conftest import ROOT

SIZE = 49


def fcrn_net(path, depth=50):
    """A small generated FCRN deploy net (dilated 1/8, 3x3 classifier) that
    runs backward too."""
    proto = netgen.net(netgen.Variant(depth=depth, kernel=3, dilation=2), 'deploy')
    proto.layer[0].input_param.shape[0].dim[2:] = [SIZE, SIZE]
    proto.force_backward = True
    proto.share_memory = False  # to read every blob
    path.write_text(str(proto))
    return str(path)


def run(path, weights, image, top_diff):
    net = caffe.Net(path, weights, caffe.TRAIN)
    net.blobs['data'].data[...] = image
    net.forward()
    net.blobs['prob'].diff[...] = top_diff
    net.backward()
    return {name: (blob.data.copy(), blob.diff.copy()) for name, blob in net.blobs.items()}


def test_a_generated_net_gives_the_same_blobs_with_and_without_fusion(tmp_path, monkeypatch,
                                                                       randomise):
    path = fcrn_net(tmp_path / 'net.prototxt')
    net = caffe.Net(path, caffe.TRAIN)
    randomise(net, 0)
    rng = np.random.RandomState(0)
    weights = str(tmp_path / 'net.caffemodel')
    net.save(weights)
    image = rng.randn(1, 3, SIZE, SIZE) * 50
    top_diff = rng.randn(*net.blobs['prob'].data.shape)
    fused = run(path, weights, image, top_diff)
    monkeypatch.setenv('FCRN_UNFUSED_RELU', '1')
    unfused = run(path, weights, image, top_diff)
    assert fused.keys() == unfused.keys()
    for name in fused:
        for field, a, b in zip(('data', 'diff'), fused[name], unfused[name]):
            assert np.array_equal(a, b), (name, field)
    # The ReLUs zeroed something, and sent gradients through the rest.
    assert (fused['res5c'][0] == 0).any() and fused['data'][1].any()


def test_every_relu_of_a_generated_net_is_fused(tmp_path):
    """One ReLU in the stem, three in each residual unit: 1 + 3 * 33 in R101."""
    path = fcrn_net(tmp_path / 'net.prototxt', depth=101)
    code = 'from fcrn import caffeio; caffeio.caffe().Net(%r, 1)' % path
    env = dict(os.environ, GLOG_minloglevel='0')
    log = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         env=env, cwd=ROOT, timeout=300, check=True).stderr
    assert (tmp_path / 'net.prototxt').read_text().count('type: "ReLU"') == 100
    assert "applies 100 ReLU layers in the layer before each" in log
