"""BN folding (fcrn.fold, scripts/fold_bn.py): the folded net computes what the
original computes, in pycaffe and in OpenCV's independent Caffe reader; bad
weights and unfoldable nets are refused with the layers named."""
import logging
import os

os.environ.setdefault("GLOG_minloglevel", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import caffe  # noqa: E402
from caffe import layers as L  # noqa: E402
from fcrn import caffeio, fold  # noqa: E402

SHAPE = (1, 3, 21, 26)


def _bn(n, name, bottom, lean=False, scale=True, in_place=True, global_stats=None):
    """BN(+Scale) or LeanBatchNorm on ``bottom``; returns the output top."""
    bnp = {"eps": 1e-3}
    if global_stats is not None:
        bnp["use_global_stats"] = global_stats
    if lean:
        top = L.LeanBatchNorm(bottom, batch_norm_param=bnp, in_place=in_place)
        setattr(n, "bn_" + name, top)
        return top
    top = L.BatchNorm(bottom, batch_norm_param=bnp, in_place=in_place)
    setattr(n, "bn_" + name, top)
    if scale:
        top = L.Scale(top, bias_term=True, in_place=in_place)
        setattr(n, "scale_" + name, top)
    return top


def small_net(lean=False, kernel2=3, global_stats=None):
    """A few convs with stride, dilation, groups and a residual sum, exercising
    every folding case: in place and not, BN without Scale, conv with and without
    bias, BN after an Eltwise (not foldable into a conv: becomes Scale), and a
    conv whose output is also read elsewhere (must not be folded into)."""
    n = caffe.NetSpec()
    n.data = L.Input(shape={"dim": list(SHAPE)})
    n.conv1 = L.Convolution(n.data, num_output=8, kernel_size=3, pad=1, stride=2,
                            bias_term=False, weight_filler={"type": "gaussian", "std": 0.1})
    x = _bn(n, "1", n.conv1, lean, global_stats=global_stats)
    n.relu1 = L.ReLU(x, in_place=True)
    n.conv2 = L.Convolution(n.relu1, num_output=8, kernel_size=kernel2, pad=kernel2 - 1,
                            dilation=2, group=2, weight_filler={"type": "gaussian", "std": 0.1},
                            bias_filler={"type": "gaussian", "std": 1})
    a = _bn(n, "2", n.conv2, lean, in_place=False)
    n.conv3 = L.Convolution(n.relu1, num_output=8, kernel_size=1, bias_term=False,
                            weight_filler={"type": "gaussian", "std": 0.1})
    b = _bn(n, "3", n.conv3, lean, scale=False)
    n.sum = L.Eltwise(a, b)
    c = _bn(n, "4", n.sum, lean)
    # conv5's output feeds BN 5 and the sum below: BN 5 must not change conv5.
    n.conv5 = L.Convolution(c, num_output=8, kernel_size=3, pad=1,
                            weight_filler={"type": "gaussian", "std": 0.1})
    d = _bn(n, "5", n.conv5, lean, in_place=False)
    n.sum2 = L.Eltwise(d, n.conv5)
    n.score = L.Convolution(n.sum2, num_output=5, kernel_size=1,
                            weight_filler={"type": "gaussian", "std": 0.1})
    return n.to_proto()


def _randomise_bn(net, rng):
    for name, params in net.params.items():
        if name.startswith("bn_"):
            c = params[0].data.size
            params[0].data[...] = rng.randn(c) * 3          # mean (times factor)
            params[1].data[...] = rng.rand(c) * 4 + 0.1      # variance (times factor)
            params[2].data[...] = 0.5                        # moving-average factor
            if len(params) == 5:                             # LeanBatchNorm gamma, beta
                params[3].data[...] = rng.randn(c)
                params[4].data[...] = rng.randn(c)
        elif name.startswith("scale_"):
            for p in params:
                p.data[...] = rng.randn(*p.data.shape)


def make_model(tmp_path, proto, tag="net"):
    path = str(tmp_path / (tag + ".prototxt"))
    with open(path, "w") as f:
        f.write(str(proto))
    net = caffe.Net(path, caffe.TEST)
    _randomise_bn(net, np.random.RandomState(1))
    weights = str(tmp_path / (tag + ".caffemodel"))
    net.save(weights)
    return path, weights


def _outputs(prototxt, weights, x):
    net = caffe.Net(prototxt, caffe.TEST, weights=weights)
    return caffeio.forward(net, {"data": x})["score"]


def test_the_check_measures_probabilities_against_their_scores(tmp_path):
    """Scores near 60 off by 2e-5 relative: the probabilities move by 2e-4,
    which relative to themselves (at most 1) failed a 1e-4 check that a
    correct fold of a net with confident scores does not pass either. Against
    the scores' size they pass; a real difference still fails."""
    n = caffe.NetSpec()
    n.data = L.Input(shape={"dim": [1, 2, 3, 3]})
    n.score = L.Convolution(n.data, num_output=5, kernel_size=1)
    n.prob = L.Softmax(n.score)
    proto = n.to_proto()
    proto.share_memory = False  # verify reads the scores
    nets = [make_model(tmp_path, proto, tag) for tag in ("a", "b")]
    nets = [caffe.Net(p, caffe.TEST, weights=w) for p, w in nets]
    for net in nets:
        net.params["score"][0].data[...] = 0
        net.params["score"][1].data[...] = 60 + 0.1 * np.arange(5)
    nets[1].params["score"][1].data[0] *= 1 + 2e-5
    assert fold.verify(*nets) < 1e-4
    nets[1].params["score"][1].data[0] *= 1 + 2e-3
    assert fold.verify(*nets) > 1e-4


def _export(tmp_path, lean=False):
    proto, weights = make_model(tmp_path, small_net(lean))
    out_p, out_w = str(tmp_path / "out" / "f.prototxt"), str(tmp_path / "out" / "f.caffemodel")
    folds, err = fold.export(proto, weights, out_p, out_w)
    return proto, weights, out_p, out_w, folds, err


def _check_equivalence(proto, weights, out_p, out_w, folds):
    # conv1, conv2, conv3 fold (BN 1-3); BN 4 follows an Eltwise and BN 5 follows
    # a conv whose output is read twice: both become Scale layers.
    assert sorted(f["conv"] is not None for f in folds) == [False, False, True, True, True]
    types = [l.type for l in caffeio.read_net_param(out_p).layer]
    assert "BatchNorm" not in types and "LeanBatchNorm" not in types
    assert types.count("Scale") == 2
    x = np.random.RandomState(7).uniform(-128, 128, (2, 3, 33, 27)).astype(np.float32)
    ref, got = _outputs(proto, weights, x), _outputs(out_p, out_w, x)
    assert np.abs(ref).max() > 1  # the check compares something
    assert caffeio.relative_error(ref, got) < 1e-4
    return x, got


def test_fold_batchnorm_scale_equals_original(tmp_path):
    proto, weights, out_p, out_w, folds, err = _export(tmp_path)
    assert err < 1e-4
    _check_equivalence(proto, weights, out_p, out_w, folds)


def test_folding_does_change_the_convolutions(tmp_path):
    """Guards the test above: the export must not just copy conv weights."""
    proto, weights, out_p, out_w, folds, _ = _export(tmp_path)
    a = caffe.Net(proto, caffe.TEST, weights=weights)
    b = caffe.Net(out_p, caffe.TEST, weights=out_w)
    assert not np.allclose(a.params["conv1"][0].data, b.params["conv1"][0].data)
    assert len(b.params["conv1"]) == 2  # bias added
    np.testing.assert_array_equal(a.params["conv5"][0].data, b.params["conv5"][0].data)
    np.testing.assert_array_equal(a.params["score"][1].data, b.params["score"][1].data)


def test_opencv_dnn_reads_folded_net_and_agrees(tmp_path):
    cv2 = pytest.importorskip("cv2")
    proto, weights, out_p, out_w, folds, _ = _export(tmp_path)
    x, caffe_out = _check_equivalence(proto, weights, out_p, out_w, folds)
    net = cv2.dnn.readNetFromCaffe(out_p, out_w)
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setInput(x)
    got = net.forward("score")
    assert got.shape == caffe_out.shape
    assert caffeio.relative_error(caffe_out, got) < 1e-4


def _has_lean():
    return "LeanBatchNorm" in caffe.layer_type_list()


@pytest.mark.skipif(not _has_lean(), reason="LeanBatchNorm not built (build/libfcrn_layers.so)")
def test_fold_lean_batchnorm_equals_original(tmp_path):
    proto, weights, out_p, out_w, folds, err = _export(tmp_path, lean=True)
    assert err < 1e-4
    _check_equivalence(proto, weights, out_p, out_w, folds)
    cv2 = pytest.importorskip("cv2")
    cv2.dnn.readNetFromCaffe(out_p, out_w)  # stock layers only: loads


def test_mismatched_weights_refused_with_layer_names(tmp_path):
    _, weights = make_model(tmp_path, small_net(), "good")
    proto, _ = make_model(tmp_path, small_net(kernel2=5), "other")
    out_p, out_w = str(tmp_path / "o.prototxt"), str(tmp_path / "o.caffemodel")
    with pytest.raises(caffeio.WeightsError) as e:
        fold.export(proto, weights, out_p, out_w)
    msg = str(e.value)
    assert "conv2: blob 0 stored as 8x4x3x3, the net expects 8x4x5x5" in msg
    assert "(1 layer(s))" in msg
    assert not os.path.exists(out_p) and not os.path.exists(out_w)
    assert sorted(os.listdir(tmp_path)) == sorted(
        ["good.prototxt", "good.caffemodel", "other.prototxt", "other.caffemodel"])


def test_missing_layer_weights_refused(tmp_path):
    proto, weights = make_model(tmp_path, small_net())
    n = small_net()
    last = n.layer[-1]
    extra = n.layer.add()
    extra.CopyFrom(last)
    extra.name, extra.top[0] = "score_extra", "score_extra"
    other = str(tmp_path / "extra.prototxt")
    with open(other, "w") as f:
        f.write(str(n))
    with pytest.raises(caffeio.WeightsError, match="score_extra: no weights"):
        fold.export(other, weights, str(tmp_path / "o.prototxt"), str(tmp_path / "o.caffemodel"))


def test_batch_statistics_refused(tmp_path):
    proto, weights = make_model(tmp_path, small_net(global_stats=False))
    with pytest.raises(fold.FoldError, match="bn_1: use_global_stats is false"):
        fold.export(proto, weights, str(tmp_path / "o.prototxt"), str(tmp_path / "o.caffemodel"))


def test_script_exit_codes(tmp_path, caplog, script):
    caplog.set_level(logging.INFO)
    proto, weights = make_model(tmp_path, small_net())
    out = ["--out-net", str(tmp_path / "f.prototxt"), "--out-weights", str(tmp_path / "f.cm")]
    fold_bn = script("fold_bn").main
    assert fold_bn(["--net", proto, "--weights", weights] + out) == 0
    assert "3 BN layer(s) into convolutions, 2 into stock Scale" in caplog.text
    other, _ = make_model(tmp_path, small_net(kernel2=5), "other")
    assert fold_bn(["--net", other, "--weights", weights, "--force"] + out) == 1
    assert "conv2: blob 0" in caplog.text
    assert fold_bn(["--net", proto, "--weights", weights] + out) == 2  # outputs exist
    assert "use --force" in caplog.text
