"""What the tests share: pycaffe with the project's layers, the scripts as
modules, nets written from prototxt text, random weights of sane magnitude."""
import importlib.util
import os
import tempfile

import fcrn  # first: it names OpenBLAS's kernels before numpy loads it (fcrn/blas.py)
import numpy as np
import pytest

# The checkout under test (the package itself may be installed elsewhere).
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = os.path.join(ROOT, "scripts")
os.environ.setdefault("GLOG_minloglevel", "2")  # pycaffe's INFO lines would bury test output
# glog would leave a file per Caffe process and level in /tmp.
os.environ.setdefault("GLOG_logtostderr", "1")

# Tests create caffe.Net themselves, as pycaffe users do after load_layers();
# the library's own loading is tested in test_package.py, in a fresh process.
fcrn.load_layers()


def load_script(name):
    """scripts/<name>.py, executed afresh as module `<name>_script`."""
    spec = importlib.util.spec_from_file_location(name + "_script",
                                                  os.path.join(SCRIPTS, name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def script():
    """load_script, for tests that call a script's main() in-process."""
    return load_script


def net_from_text(text, phase="test"):
    """caffe.Net of prototxt text (a temporary file, removed once loaded)."""
    import caffe
    with tempfile.NamedTemporaryFile("w", suffix=".prototxt", delete=False) as f:
        f.write(text)
    try:
        return caffe.Net(f.name, caffe.TEST if phase == "test" else caffe.TRAIN)
    finally:
        os.unlink(f.name)


@pytest.fixture(scope="session")
def text_net():
    return net_from_text


def randomise_net(net, seed):
    """Random weights of sane magnitude; BN statistics with positive variance."""
    rng = np.random.RandomState(seed)
    for layer in net.layers:
        blobs = layer.blobs
        if layer.type in ('BatchNorm', 'LeanBatchNorm'):
            channels = blobs[0].data.shape
            blobs[0].data[...] = rng.uniform(-0.1, 0.1, channels)
            blobs[1].data[...] = rng.uniform(0.5, 1.5, channels)
            blobs[2].data[...] = 1
            for blob in blobs[3:]:         # lean: gamma, beta
                blob.data[...] = rng.uniform(0.5, 1.0, channels)
        elif layer.type == 'Scale':
            for blob in blobs:
                blob.data[...] = rng.uniform(0.5, 1.0, blob.data.shape)
        elif layer.type == 'Convolution':
            weights = blobs[0].data
            weights[...] = rng.randn(*weights.shape) / np.sqrt(weights[0].size)
            for blob in blobs[1:]:
                blob.data[...] = rng.uniform(-0.1, 0.1, blob.data.shape)


@pytest.fixture(scope="session")
def randomise():
    return randomise_net
