"""The C++ layers through pycaffe and through the `caffe` tool.

LeanBatchNorm is compared with Caffe's own BatchNorm + Scale, and
BootstrappedSoftmaxWithLoss with an independent numpy version of the paper's
equation (1); the C++ suites (ctest) hold the gradient checks.
"""
import os
import re
import subprocess
import textwrap

import numpy as np
import pytest

from conftest import ROOT
import caffe
from caffe import layers as L, params as P

CAFFE = os.path.join(ROOT, "build", "bin", "caffe")


def make_net(tmp_path, netspec, phase=caffe.TRAIN, name="net.prototxt"):
    proto = netspec.to_proto()
    proto.force_backward = True  # Input blobs get gradients too
    path = tmp_path / name
    path.write_text(str(proto))
    return caffe.Net(str(path), phase)


def relative_error(a, b):
    return np.abs(a - b).max() / max(np.abs(b).max(), 1e-12)


@pytest.mark.parametrize("use_global_stats", [True, False])
@pytest.mark.parametrize("in_place", [True, False])
def test_lean_batch_norm_equals_batch_norm_scale(tmp_path, use_global_stats, in_place):
    shape = (2, 8, 7, 9)
    n = caffe.NetSpec()
    # Two copies of the input, so that in-place layers start from equal data,
    # and random weights w: the loss sum(w * y) gives each output gradient w.
    n.x1, n.x2, n.w = L.Input(shape=[dict(dim=list(shape))] * 3, ntop=3)
    bn_param = dict(use_global_stats=use_global_stats)
    n.lean = L.LeanBatchNorm(n.x1, batch_norm_param=bn_param, in_place=in_place)
    n.bn = L.BatchNorm(n.x2, batch_norm_param=bn_param, in_place=in_place)
    n.scale = L.Scale(n.bn, scale_param=dict(bias_term=True), in_place=in_place)
    n.weighted1 = L.Eltwise(n.lean, n.w, operation=P.Eltwise.PROD)
    n.weighted2 = L.Eltwise(n.scale, n.w, operation=P.Eltwise.PROD)
    n.loss1 = L.Reduction(n.weighted1, loss_weight=1)
    n.loss2 = L.Reduction(n.weighted2, loss_weight=1)
    net = make_net(tmp_path, n)

    rng = np.random.RandomState(0)
    x = rng.randn(*shape) * 3 + 1
    net.blobs["x1"].data[...] = x
    net.blobs["x2"].data[...] = x
    net.blobs["w"].data[...] = rng.randn(*shape)
    stats = [rng.rand(8) * 4, rng.rand(8) * 4 + 0.5, np.array([2.0])]
    affine = [rng.rand(8) + 0.5, rng.randn(8)]
    for i, value in enumerate(stats):
        net.params["lean"][i].data[...] = value
        net.params["bn"][i].data[...] = value
    for i, value in enumerate(affine):
        net.params["lean"][3 + i].data[...] = value
        net.params["scale"][i].data[...] = value

    net.forward()
    top_lean = net.blobs["x1" if in_place else "lean"].data.copy()
    top_stock = net.blobs["x2" if in_place else "scale"].data.copy()
    assert relative_error(top_lean, top_stock) < 1e-5
    net.backward()
    assert relative_error(net.blobs["x1"].diff, net.blobs["x2"].diff) < 1e-5
    for i in range(2):
        assert relative_error(net.params["lean"][3 + i].diff,
                              net.params["scale"][i].diff) < 1e-5
    if not use_global_stats:  # the moving averages are BatchNorm's too
        for i in range(3):
            assert relative_error(net.params["lean"][i].data,
                                  net.params["bn"][i].data) < 1e-5


def numpy_bootstrapped_loss(scores, labels, min_kept, threshold, ignore_label=255):
    """Equation (1), per image, normalised by the kept pixels of the batch.

    Returns the loss, the gradient with respect to the scores and the mask."""
    num, channels = scores.shape[:2]
    flat = scores.reshape(num, channels, -1).astype(np.float64)
    prob = np.exp(flat - flat.max(axis=1, keepdims=True))
    prob /= prob.sum(axis=1, keepdims=True)
    labels = labels.reshape(num, -1).astype(int)
    mask = np.zeros(labels.shape, bool)
    for i in range(num):
        valid = np.flatnonzero(labels[i] != ignore_label)
        p = prob[i, labels[i, valid], valid]
        order = np.lexsort((valid, p))          # by p, ties by pixel index
        keep = p < threshold
        keep[order[:min_kept]] = True
        mask[i, valid[keep]] = True
    n_kept = max(mask.sum(), 1)
    rows, cols = np.nonzero(mask)
    true_prob = prob[rows, labels[rows, cols], cols]
    loss = -np.log(np.maximum(true_prob, np.finfo(np.float32).tiny)).sum() / n_kept
    grad = prob.copy()
    grad[rows, labels[rows, cols], cols] -= 1
    grad *= mask[:, None, :]
    return loss, (grad / n_kept).reshape(scores.shape), mask.reshape(labels.shape)


@pytest.mark.parametrize("min_kept,threshold", [(64, 0.0), (0, 0.4), (50, 0.3), (10000, 0.0)])
def test_bootstrapped_loss_equals_numpy(tmp_path, min_kept, threshold):
    shape = (3, 21, 13, 17)
    n = caffe.NetSpec()
    n.score, n.label = L.Input(shape=[dict(dim=list(shape)),
                                      dict(dim=[shape[0], 1] + list(shape[2:]))], ntop=2)
    n.loss, n.mask = L.BootstrappedSoftmaxWithLoss(
        n.score, n.label, loss_param=dict(ignore_label=255),
        bootstrap_param=dict(min_kept=min_kept, threshold=threshold), ntop=2)
    net = make_net(tmp_path, n)
    rng = np.random.RandomState(1)
    scores = rng.randn(*shape) * 3
    labels = rng.randint(0, 21, (shape[0], 1) + shape[2:]).astype(float)
    labels[rng.rand(*labels.shape) < 0.2] = 255
    net.blobs["score"].data[...] = scores
    net.blobs["label"].data[...] = labels
    net.forward()
    net.backward()
    loss, grad, mask = numpy_bootstrapped_loss(
        net.blobs["score"].data, labels, min_kept, threshold)
    assert net.blobs["loss"].data == pytest.approx(loss, rel=1e-5)
    np.testing.assert_array_equal(net.blobs["mask"].data.reshape(mask.shape), mask)
    np.testing.assert_allclose(net.blobs["score"].diff, grad, rtol=1e-4, atol=1e-8)


def run_caffe(*args, **env):
    env = dict(os.environ, GLOG_minloglevel="0", **env)  # the checks read the log
    return subprocess.run([CAFFE] + list(args), capture_output=True, text=True,
                          env=env, timeout=300)


def write_solver(tmp_path, net_path, max_iter=3):
    solver = tmp_path / "solver.prototxt"
    solver.write_text(textwrap.dedent("""\
        net: "{net}"
        base_lr: 0.01
        lr_policy: "fixed"
        max_iter: {max_iter}
        display: 1
        snapshot_after_train: false
        solver_mode: CPU
        """).format(net=net_path, max_iter=max_iter))
    return solver


def test_caffe_tool_trains_with_both_layers(tmp_path):
    n = caffe.NetSpec()
    n.data, n.label = L.DummyData(
        shape=[dict(dim=[2, 3, 12, 12]), dict(dim=[2, 1, 12, 12])],
        data_filler=[dict(type="gaussian", std=1), dict(type="constant", value=1)],
        ntop=2)
    n.conv = L.Convolution(n.data, num_output=4, kernel_size=3, pad=1, bias_term=False,
                           weight_filler=dict(type="msra"))
    n.bn = L.LeanBatchNorm(n.conv, in_place=True)
    n.loss = L.BootstrappedSoftmaxWithLoss(n.bn, n.label, bootstrap_param=dict(min_kept=50))
    net_path = tmp_path / "train.prototxt"
    net_path.write_text(str(n.to_proto()))
    result = run_caffe("train", "-solver", str(write_solver(tmp_path, net_path)))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Iteration 3, loss = " in result.stderr
    assert "Optimization Done." in result.stderr


def test_caffe_tool_runs_a_python_layer(tmp_path):
    (tmp_path / "scale_by_two.py").write_text(textwrap.dedent("""\
        import caffe

        class ScaleByTwo(caffe.Layer):
            def setup(self, bottom, top):
                pass

            def reshape(self, bottom, top):
                top[0].reshape(*bottom[0].data.shape)

            def forward(self, bottom, top):
                top[0].data[...] = 2 * bottom[0].data

            def backward(self, top, propagate_down, bottom):
                bottom[0].diff[...] = 2 * top[0].diff
        """))
    n = caffe.NetSpec()
    n.data = L.DummyData(shape=dict(dim=[1, 2, 3, 3]),
                         data_filler=dict(type="constant", value=1.5))
    n.doubled = L.Python(n.data, python_param=dict(module="scale_by_two", layer="ScaleByTwo"))
    n.total = L.Reduction(n.doubled, loss_weight=1)
    net_path = tmp_path / "train.prototxt"
    net_path.write_text(str(n.to_proto()))
    result = run_caffe("train", "-solver", str(write_solver(tmp_path, net_path, 1)),
                       PYTHONPATH=str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Train net output #0: total = 54" in result.stderr  # 2 * 1.5 * 18


def test_caffe_tool_reports_bad_labels(tmp_path):
    n = caffe.NetSpec()
    n.data, n.label = L.DummyData(
        shape=[dict(dim=[1, 3, 4, 4]), dict(dim=[1, 1, 4, 4])],
        data_filler=[dict(type="gaussian"), dict(type="constant", value=7)], ntop=2)
    n.loss = L.BootstrappedSoftmaxWithLoss(n.data, n.label, loss_param=dict(ignore_label=255),
                                           name="my_loss")
    net_path = tmp_path / "net.prototxt"
    net_path.write_text(str(n.to_proto()))
    result = run_caffe("time", "-model", str(net_path), "-iterations", "1")
    assert result.returncode != 0
    assert ("my_loss: label 7 of image 0, pixel 0 is outside [0, 3) and is not the "
            "ignore_label") in result.stderr


IM2COL_CHILD = """
import json, re, sys
import numpy as np
import caffe
from caffe import layers as L, params as P
n = caffe.NetSpec()
n.data = L.Input(shape=dict(dim=[1, 64, 96, 96]))
n.c1 = L.Convolution(n.data, num_output=64, kernel_size=3, pad=1)
n.c2 = L.Convolution(n.c1, num_output=64, kernel_size=3, dilation=2, pad=2)
n.c3 = L.Convolution(n.c2, num_output=64, kernel_size=1, stride=2)
n.c4 = L.Convolution(n.c3, num_output=5, kernel_size=5, dilation=3, pad=6)
n.loss = L.Reduction(n.c4, operation=P.Reduction.SUMSQ, loss_weight=1)
proto = n.to_proto()
proto.force_backward = True
open(sys.argv[1], 'w').write(str(proto))
net = caffe.Net(sys.argv[1], caffe.TRAIN)
weights = np.random.RandomState(4)  # the same weights in both processes
for name in net.params:
    for blob in net.params[name]:
        blob.data[...] = weights.randn(*blob.data.shape) * 0.1
net.blobs['data'].data[...] = np.random.RandomState(3).randn(1, 64, 96, 96)
def peak_kb():  # this process image's own peak (ru_maxrss keeps the parent's across exec)
    return int(re.search(r'VmHWM:\\s+(\\d+) kB', open('/proc/self/status').read()).group(1))
before = peak_kb()
net.forward()
net.backward()
grown = peak_kb() - before
np.savez(sys.argv[2], out=net.blobs['c4'].data, data_diff=net.blobs['data'].diff,
         **{name: net.params[name][0].diff for name in net.params})
print(json.dumps({'grown_kb': grown}))
"""


def test_shared_im2col_buffer_equals_private_buffers(tmp_path):
    """The Caffe patch that shares one im2col buffer between convolutions
    gives the results of upstream's per-layer buffers, forward and backward,
    through convolutions of every kind (k x k, 1x1 strided, dilated); and
    FCRN_PRIVATE_IM2COL=1 really restores the per-layer buffers: a fresh
    process then grows by the columns of every convolution, not of the
    largest alone. Each side runs in its own process (the buffers live as
    long as the process)."""
    import json
    import sys
    # im2col columns (floats) of c1, c2 (64*9 x 96*96), c3 (64 x 48*48), c4 (64*25 x 48*48)
    columns = [64 * 9 * 96 * 96, 64 * 9 * 96 * 96, 64 * 48 * 48, 64 * 25 * 48 * 48]
    extra_kb = (sum(columns) - max(columns)) * 4 / 1024
    results = {}
    for private in (True, False):
        # Every convolution through im2col: oneDNN (patch 0013) would take
        # them all, kn2row (patch 0012) the classifier-like c4, out of the
        # comparison.
        env = dict(os.environ, GLOG_minloglevel="2", FCRN_NO_DNNL="1", FCRN_NO_KN2ROW="1")
        env.pop("FCRN_PRIVATE_IM2COL", None)
        if private:
            env["FCRN_PRIVATE_IM2COL"] = "1"
        out = subprocess.run([sys.executable, "-c", IM2COL_CHILD, str(tmp_path / "net.prototxt"),
                              str(tmp_path / ("r%d.npz" % private))], env=env,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        results[private] = (json.loads(out.stdout.splitlines()[-1])["grown_kb"],
                            np.load(str(tmp_path / ("r%d.npz" % private))))
    (private_kb, private), (shared_kb, shared) = results[True], results[False]
    assert sorted(private.files) == sorted(shared.files) and len(private.files) == 6
    for name in private.files:
        np.testing.assert_array_equal(private[name], shared[name], err_msg=name)
    assert np.abs(private["out"]).max() > 0 and np.abs(private["c1"]).max() > 0
    assert private_kb - shared_kb > 0.7 * extra_kb, (private_kb, shared_kb, extra_kb)


def test_caffe_tool_stops_on_a_non_finite_loss(tmp_path):
    """The project's solver patch: a NaN loss stops training with a message
    naming the iteration, before the update spreads it into the weights."""
    n = caffe.NetSpec()
    n.data, n.label = L.DummyData(
        shape=[dict(dim=[1, 3, 4, 4]), dict(dim=[1, 1, 4, 4])],
        data_filler=[dict(type="gaussian"), dict(type="constant", value=0)], ntop=2)
    n.conv = L.Convolution(n.data, num_output=3, kernel_size=1,
                           weight_filler=dict(type="gaussian", std=0.1))
    n.bad = L.Power(n.conv, power=0.5, shift=-1e6)  # square roots of negatives
    n.loss = L.SoftmaxWithLoss(n.bad, n.label)
    net_path = tmp_path / "train.prototxt"
    net_path.write_text(str(n.to_proto()))
    result = run_caffe("train", "-solver", str(write_solver(tmp_path, net_path)))
    assert result.returncode != 0
    assert re.search(r"Iteration 0: the loss is -?nan; stopping before the update",
                     result.stderr)
