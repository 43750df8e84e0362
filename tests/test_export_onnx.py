"""ONNX export (fcrn.onnx_export, scripts/export_onnx.py): onnxruntime computes
what pycaffe computes on the original, unfolded net, for the paper's 1/8 and 1/16
nets and a net with every exported layer kind, at several odd and even input
sizes from one dynamic-size model; Caffe's pooling sizes hold where ONNX's ceil
mode gives another; nothing is written when the check fails. Bad input is in
the table of tests/test_bad_inputs.py."""
import logging
import os

import numpy as np
import onnx
import pytest

import caffe
from caffe import layers as L, params as P
from conftest import ROOT
from fcrn import caffeio, onnx_export

TOL = 1e-4


def small_net():
    """Every exported layer kind and the cases where Caffe and ONNX part ways:
    a 2x2/2 max pool with pad 1 (Caffe drops the last window on odd inputs, ONNX's
    ceil formula keeps it), a padded average pool (Caffe counts the padding but
    not the ceil overhang), floor rounding, Eltwise coefficients, a dilated
    grouped convolution, BN with and without a preceding convolution, in-place
    chains, a leaky ReLU, and global average and max pooling."""
    n = caffe.NetSpec()
    n.data = L.Input(shape={"dim": [1, 3, 21, 26]})
    filler = {"type": "gaussian", "std": 0.3}
    n.conv1 = L.Convolution(n.data, num_output=8, kernel_size=3, pad=1, stride=2,
                            bias_term=False, weight_filler=filler)
    n.bn1 = L.BatchNorm(n.conv1, in_place=True)
    n.scale1 = L.Scale(n.conv1, bias_term=True, in_place=True)
    n.relu1 = L.ReLU(n.conv1, negative_slope=0.1, in_place=True)
    n.pool_max = L.Pooling(n.conv1, pool=P.Pooling.MAX, kernel_size=2, stride=2, pad=1)
    n.pool_ave = L.Pooling(n.conv1, pool=P.Pooling.AVE, kernel_size=2, stride=2, pad=1)
    n.sum = L.Eltwise(n.pool_max, n.pool_ave, coeff=[0.5, -2.0])
    n.conv2 = L.Convolution(n.sum, num_output=8, kernel_size=3, pad=2, dilation=2, group=2,
                            weight_filler=filler, bias_filler=filler)
    n.bn2 = L.BatchNorm(n.conv2)  # not in place
    n.relu2 = L.ReLU(n.bn2, in_place=True)
    n.scaled = L.Scale(n.bn2, bias_term=True, filler=filler, bias_filler=filler)
    n.prod = L.Eltwise(n.scaled, n.sum, operation=P.Eltwise.PROD)
    n.max = L.Eltwise(n.prod, n.sum, operation=P.Eltwise.MAX)
    n.bn3 = L.BatchNorm(n.max)  # after an Eltwise: becomes a Scale layer
    n.pool_floor = L.Pooling(n.bn3, pool=P.Pooling.MAX, kernel_size=3, stride=2, pad=1,
                             round_mode=P.Pooling.FLOOR)
    n.pool_hw = L.Pooling(n.pool_floor, pool=P.Pooling.AVE, kernel_h=2, kernel_w=3,
                          stride_h=1, stride_w=2)
    n.score = L.Convolution(n.pool_hw, num_output=5, kernel_size=1, weight_filler=filler)
    n.prob = L.Softmax(n.score)
    n.pool_ave3 = L.Pooling(n.max, pool=P.Pooling.AVE, kernel_size=3, stride=2, pad=1)  # a branch
    n.global_ave = L.Pooling(n.max, pool=P.Pooling.AVE, global_pooling=True)
    n.global_max = L.Pooling(n.bn3, pool=P.Pooling.MAX, global_pooling=True)
    return n.to_proto()


@pytest.fixture
def save_model(tmp_path, randomise):
    """save_model(proto, tag): prototxt and random weights (BN statistics
    included) saved by pycaffe in tmp_path."""
    def save(proto, tag="net"):
        path = str(tmp_path / (tag + ".prototxt"))
        with open(path, "w") as f:
            f.write(str(proto) if not isinstance(proto, str) else proto)
        net = caffe.Net(path, caffe.TEST)
        randomise(net, 1)
        weights = str(tmp_path / (tag + ".caffemodel"))
        net.save(weights)
        return path, weights
    return save


def caffe_outputs(prototxt, weights, x, blobs):
    # Unshared: `blobs` need not be outputs.
    net = caffeio.load_net(prototxt, weights, share_memory=False)
    caffeio.forward(net, {"data": x})
    return {b: net.blobs[b].data.copy() for b in blobs}


def onnx_outputs(model, x, names):
    return dict(zip(names, onnx_export.session(model).run(names, {"data": x})))


def image(shape, seed=7):
    return np.random.RandomState(seed).uniform(-128, 128, shape).astype(np.float32)


def test_small_net_equals_pycaffe_at_odd_and_even_sizes(save_model, tmp_path):
    proto, weights = save_model(small_net())
    out = str(tmp_path / "net.onnx")
    # conv1: rewritten in place; pool_ave3: a branch that score does not need
    blobs = ["score", "prob", "conv1", "pool_max", "pool_ave", "pool_ave3", "global_ave",
             "global_max"]
    onnx_export.export(proto, weights, out, outputs=blobs, argmax=True)
    pooled = set()
    for h, w in ((21, 26), (24, 24), (17, 31), (40, 9)):
        x = image((2, 3, h, w))
        ref = caffe_outputs(proto, weights, x, blobs)
        got = onnx_outputs(out, x, blobs + ["label"])
        for b in blobs:
            assert got[b].shape == ref[b].shape, (b, h, w)
            assert np.abs(ref[b]).max() > 0.1, b  # compares something
            assert caffeio.relative_error(ref[b], got[b]) < TOL, (b, h, w)
        np.testing.assert_array_equal(got["label"][:, 0], got["score"].argmax(1))
        # ONNX's ceil-mode size, ceil((n + 2p - k) / s) + 1, against Caffe's
        n = ref["conv1"].shape[2]
        pooled.add(-(-(n + 2 - 2) // 2) + 1 - ref["pool_max"].shape[2])
    assert pooled == {0, 1}  # the sizes include Caffe's dropped last window


def test_fixed_size_model_declares_caffe_shapes(save_model, tmp_path):
    """With --size, ONNX's own shape inference (the spec's arithmetic, not a
    runtime's) gives every blob the shape Caffe gives it."""
    proto, weights = save_model(small_net())
    out = str(tmp_path / "fixed.onnx")
    onnx_export.export(proto, weights, out, size=(21, 26))
    inferred = onnx.shape_inference.infer_shapes(onnx.load(out)).graph
    dims = {v.name: [d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim]
            for v in list(inferred.value_info) + list(inferred.input)}
    net = caffe.Net(proto, caffe.TEST)
    assert dims["data"] == ["batch", 3, 21, 26]
    for b in ("pool_max", "pool_ave", "sum", "pool_floor", "pool_hw"):
        assert dims[b] == ["batch"] + list(net.blobs[b].shape)[1:], b
    x = image((1, 3, 21, 26))
    assert caffeio.relative_error(caffe_outputs(proto, weights, x, ["score"])["score"],
                               onnx_outputs(out, x, ["score"])["score"]) < TOL


def test_opencv_reads_the_model_and_agrees(save_model, tmp_path):
    """A second, independent ONNX reader (OpenCV's DNN importer) computes the
    same at a size where Caffe drops the last pooling window."""
    cv2 = pytest.importorskip("cv2")
    proto, weights = save_model(small_net())
    out = str(tmp_path / "net.onnx")
    blobs = ["score", "pool_max", "pool_ave", "pool_ave3"]
    onnx_export.export(proto, weights, out, outputs=blobs)
    x = image((1, 3, 21, 26))
    ref = caffe_outputs(proto, weights, x, blobs)
    net = cv2.dnn.readNetFromONNX(out)
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setInput(x)
    for b, got in zip(blobs, net.forward(blobs)):
        assert got.shape == ref[b].shape, b
        assert caffeio.relative_error(ref[b], got) < TOL, b


@pytest.mark.skipif("LeanBatchNorm" not in caffe.layer_type_list(),
                    reason="LeanBatchNorm not built (build/libfcrn_layers.so)")
@pytest.mark.parametrize("variant", ["r50_s8_k3_d12", "r50_s16_k3_d6"])
def test_paper_variant_equals_pycaffe_on_an_odd_input(save_model, tmp_path, variant):
    """The committed deploy nets (LeanBatchNorm, dilated res4/res5 and
    classifier, ceil-mode pool1) at 67x53, exported once with dynamic size."""
    src = os.path.join(ROOT, "prototxt", "voc", variant, "deploy.prototxt")
    with open(src) as f:
        proto, weights = save_model(f.read(), variant)
    out = str(tmp_path / "fcrn.onnx")
    result = onnx_export.export(proto, weights, out, argmax=True, verify_size=(33, 45))
    assert result.outputs == ["score", "label"] and result.relative_error < TOL
    x = image((1, 3, 67, 53))
    ref = caffe_outputs(proto, weights, x, ["score"])["score"]
    got = onnx_outputs(out, x, ["score", "label"])
    # 67x53 -> conv1 34x27 -> pool1 (ceil) 17x13 -> 9x7 at 1/8, 5x4 at 1/16
    assert ref.shape == got["score"].shape == (1, 21) + {"r50_s8_k3_d12": (9, 7),
                                                         "r50_s16_k3_d6": (5, 4)}[variant]
    assert ref.std() > 0
    assert caffeio.relative_error(ref, got["score"]) < TOL
    assert (got["label"][:, 0] == ref.argmax(1)).mean() > 0.99


def test_time_onnxruntime_is_seconds_per_image_of_the_best_pass(monkeypatch):
    """A clock that advances 1 s per forward: the warm-up pass is not timed,
    each timed pass runs every image once (made 4-D), and the result is the
    best pass over the number of images."""
    clock, shapes = [0.0], []

    class Session:
        def get_inputs(self):
            return [type("Input", (), {"name": "data"})()]

        def run(self, outputs, feeds):
            shapes.append(feeds["data"].shape)
            clock[0] += 1.0 if len(shapes) != 5 else 3.0   # the second timed pass is slow

    monkeypatch.setattr(onnx_export, "session", lambda path, threads: Session())
    monkeypatch.setattr(onnx_export.time, "perf_counter", lambda: clock[0])
    t = onnx_export.time_onnxruntime("model.onnx", [image((3, 21, 26)), image((1, 3, 30, 30))],
                                     repeat=3)
    assert shapes == [(1, 3, 21, 26), (1, 3, 30, 30)] * 4
    assert t == 1.0


def test_script_writes_a_checked_model(save_model, tmp_path, script, caplog):
    caplog.set_level(logging.INFO)
    proto, weights = save_model(small_net())
    out = tmp_path / "m.onnx"
    assert script("export_onnx").main(["--net", proto, "--weights", weights,
                                       "--out", str(out)]) == 0
    assert "2 BN layer(s) into convolutions, 1 into Scale" in caplog.text
    assert "onnxruntime and pycaffe agree" in caplog.text
    assert [o.name for o in onnx.load(str(out)).graph.output] == ["score"]
    assert sorted(os.listdir(tmp_path)) == ["m.onnx", "net.caffemodel", "net.prototxt"]


def test_model_that_disagrees_is_not_written(save_model, tmp_path, script, monkeypatch,
                                             caplog):
    proto, weights = save_model(small_net())
    out = tmp_path / "m.onnx"
    monkeypatch.setattr(onnx_export, "compare", lambda *a, **k: 0.5)
    assert script("export_onnx").main(["--net", proto, "--weights", weights,
                                       "--out", str(out)]) == 1
    assert "differs from the Caffe net: relative error 0.5" in caplog.text
    assert sorted(os.listdir(tmp_path)) == ["net.caffemodel", "net.prototxt"]
