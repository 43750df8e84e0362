"""Inference (fcrn.infer, scripts/infer.py) on tiny nets built here.

The nets are "pickers": every convolution has a single centre tap, so score
cell j of class c is exactly input channel c at pixel stride * j + offset. With
a ground truth whose class boundaries lie half-way between two cell centres, a
correctly aligned bilinear upsampling reproduces the ground truth exactly;
a grid off by one pixel, a wrong flip or pass interleaving, or misplaced tiles
does not.
"""
import logging
import os

os.environ.setdefault("GLOG_minloglevel", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import caffe  # noqa: E402
from caffe import layers as L  # noqa: E402
from fcrn import caffeio, fileio, infer  # noqa: E402
from fcrn.infer import geometry  # noqa: E402

C = 3  # classes


def picker_net(shift=False, stem_pool=False, bias=False):
    """conv 7x7/2 pad 3 -> conv 3x3/2 pad 0 -> [shift] -> conv 1x1/2: picks
    input pixel 8j + 2, the ResNet stem's grid (conv1, pool1, res3a)."""
    n = caffe.NetSpec()
    if shift:
        n.data, n.pass_ = L.Input(ntop=2, shape=[{"dim": [1, C, 32, 32]}, {"dim": [1]}])
    else:
        n.data = L.Input(shape={"dim": [1, C, 32, 32]})
    n.conv1 = L.Convolution(n.data, num_output=C, kernel_size=7, stride=2, pad=3,
                            bias_term=False)
    if stem_pool:
        n.pool1 = L.Pooling(n.conv1, kernel_size=3, stride=2, pool=0)
    else:
        n.pool1 = L.Convolution(n.conv1, num_output=C, kernel_size=3, stride=2,
                                bias_term=False)
    x = n.pool1
    if shift:
        n.shift = L.Python(x, n.pass_, python_param={"module": "fcrn_shift",
                                                     "layer": "ShiftLayer"})
        x = n.shift
    n.score = L.Convolution(x, num_output=C, kernel_size=1, stride=2, bias_term=bias)
    text = str(n.to_proto()).replace('"pass_"', '"pass"')
    return text


def make_picker(tmp_path, shift=False, bias=None):
    """bias: the score's bias per class (None: no bias), which is all that
    cells seeing only padding score."""
    proto = str(tmp_path / ("picker%d.prototxt" % shift))
    with open(proto, "w") as f:
        f.write(picker_net(shift, bias=bias is not None))
    net = caffe.Net(proto, caffe.TEST)
    for name in ("conv1", "pool1", "score"):
        w = net.params[name][0].data
        w[...] = 0
        k = w.shape[2] // 2
        for c in range(C):
            w[c, c, k, k] = 1
    if bias is not None:
        net.params["score"][1].data[...] = bias
    weights = str(tmp_path / ("picker%d.caffemodel" % shift))
    net.save(weights)
    return proto, weights


def segmenter(proto, weights, **kw):
    return infer.load_segmenter(proto, weights, mean=(0, 0, 0), **kw)


def truth_map(h, w, stride, offset=2, seed=0, axis=1):
    """Random classes on stripes along ``axis`` (1: vertical stripes) whose
    boundaries lie half-way between cell centres offset + stride * j: the pixel
    exactly half-way is a tie between the two stripes' classes, which argmax
    gives to the lower class index; every other pixel is its stripe's class.
    (Stripes, not blocks: with four different cells around a pixel, bilinear
    one-hot scores can outvote the nearest cell.) Cells centred beyond the image
    see only padding, zeros for the picker: the last stripe runs to the edge."""
    rng = np.random.RandomState(seed)
    n = w if axis == 1 else h
    mid = np.arange(offset + stride // 2, n - stride // 2, stride)
    stripe = np.searchsorted(mid + 1, np.arange(n), side="right")
    classes = rng.randint(0, C, size=stripe.max() + 2)
    line = classes[stripe]
    tie = mid[mid < n]
    line[tie] = np.minimum(classes[stripe[tie]], classes[stripe[tie] + 1])
    line = line.astype(np.uint8)
    return np.tile(line, (h, 1)) if axis == 1 else np.tile(line[:, None], (1, w))


def image_of(truth):
    """BGR image whose channel c is 100 where the class is c."""
    return (np.eye(C, dtype=np.uint8)[truth] * 100).astype(np.uint8)


def test_trace_geometry_matches_caffe(tmp_path):
    from caffe.proto import caffe_pb2
    from google.protobuf import text_format
    for pool in (False, True):
        p = caffe_pb2.NetParameter()
        text_format.Merge(picker_net(stem_pool=pool), p)
        assert geometry.trace_geometry(p, "score") == (8, 2.0)
    # and Caffe agrees: on a ramp image the picker returns the traced pixel
    proto, weights = make_picker(tmp_path)
    net = caffeio.load_net(proto, weights)
    ramp = np.tile(np.arange(61, dtype=np.float32), (C, 45, 1))[None]
    out = caffeio.forward(net, {"data": ramp})["score"][0, 0]
    np.testing.assert_array_equal(out[0], 8 * np.arange(out.shape[1]) + 2)


@pytest.mark.parametrize("size", [(45, 61), (40, 48), (9, 13)])
@pytest.mark.parametrize("axis", [0, 1])
def test_whole_image_alignment_is_exact(tmp_path, size, axis):
    proto, weights = make_picker(tmp_path)
    truth = truth_map(*size, stride=8, axis=axis)
    label = segmenter(proto, weights).predict([image_of(truth)])[0]
    assert label.shape == size and label.dtype == np.uint8
    np.testing.assert_array_equal(label, truth)


def test_a_grid_off_by_one_pixel_is_detected(tmp_path):
    """The exact-equality test above can fail: offset 3 instead of 2 breaks it."""
    proto, weights = make_picker(tmp_path)
    truth = truth_map(45, 61, stride=8)
    label = segmenter(proto, weights, offset=3).predict([image_of(truth)])[0]
    assert (label != truth).any()


def test_tiles_and_batches_equal_whole_image(tmp_path):
    proto, weights = make_picker(tmp_path)
    truths = [truth_map(77, 90, 8, seed=s, axis=s % 2) for s in range(3)]
    images = [image_of(t) for t in truths]
    tiled = segmenter(proto, weights, tile=(24, 30), overlap=0.5, batch_size=4)
    labels = tiled.predict(images)
    for label, truth in zip(labels, truths):
        np.testing.assert_array_equal(label, truth)
    assert tiled.tile == (24, 32)  # rounded up to the stride
    # padded to 80 x 96; steps: 12 -> 8 rows, 16 cols (multiples of the stride);
    # 8 x 5 tiles for each of 3 images, in batches of 4: 30 forwards
    assert geometry.tiles((80, 96), tiled.tile, tiled.overlap, tiled.stride)[-1] == \
        (56, 64, 24, 32)
    assert tiled.forwards == 30


@pytest.mark.parametrize("tile", [(64, 72), (16, 200), (200, 16)])
def test_a_tile_larger_than_the_image_is_cut_to_it(tmp_path, tile):
    """A view is not padded beyond the stride to fit a tile: cells centred in
    such padding, here scoring class 2 (the bias), took part in the last
    pixels' interpolation (48 x 64: the last 5 rows and columns)."""
    proto, weights = make_picker(tmp_path, bias=[0, 0, 70])
    for axis in (0, 1):
        image = image_of(truth_map(48, 64, stride=8, axis=axis))
        whole = segmenter(proto, weights).predict([image])[0]
        tiled = segmenter(proto, weights, tile=tile).predict([image])[0]
        np.testing.assert_array_equal(tiled, whole)
    assert geometry.tiles((48, 64), (64, 72), 0.5, 8) == [(0, 0, 48, 64)]


def test_flip_view_maps_back(tmp_path):
    proto, weights = make_picker(tmp_path)
    # width 61: the mirrored grid (60 - (8j + 2)) coincides with the grid, so the
    # flipped view alone must give the ground truth exactly.
    truth = truth_map(45, 61, stride=8)
    seg = segmenter(proto, weights)
    seg.views = [geometry.View(1.0, flip=True)]
    np.testing.assert_array_equal(seg.predict([image_of(truth)])[0], truth)


def test_multi_scale_and_flip_average(tmp_path):
    proto, weights = make_picker(tmp_path)
    truth = truth_map(90, 122, stride=8)
    label = segmenter(proto, weights, scales=(1.0, 2.0), flip=True).predict(
        [image_of(truth)])[0]
    assert label.shape == truth.shape
    # Views disagree only close to block boundaries.
    assert (label == truth).mean() > 0.9


@pytest.mark.parametrize("axis", [0, 1])
def test_four_pass_shifted_test_doubles_resolution(tmp_path, axis):
    proto, weights = make_picker(tmp_path, shift=True)
    truth = truth_map(45, 61, stride=4, axis=axis)  # boundaries of the 1/4 grid
    seg4 = segmenter(proto, weights)
    assert seg4.passes == 4
    label = seg4.predict([image_of(truth)])[0]
    np.testing.assert_array_equal(label, truth)
    assert seg4.forwards == 4
    one = segmenter(proto, weights, passes=1).predict([image_of(truth)])[0]
    assert (one != truth).any()  # the 1/8 grid cannot place these boundaries
    tiled = segmenter(proto, weights, tile=(24, 32)).predict([image_of(truth)])[0]
    np.testing.assert_array_equal(tiled, truth)


def test_script_reads_odd_images_skips_bad_ones_and_keeps_outputs(tmp_path, caplog, script):
    import cv2
    from PIL import Image
    caplog.set_level(logging.INFO)
    proto, weights = make_picker(tmp_path)
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    truth = truth_map(45, 61, stride=8)
    img = image_of(truth)
    cv2.imwrite(str(src / "a.png"), img)
    cv2.imwrite(str(src / "sub" / "b.jpg"), np.zeros((20, 30, 3), np.uint8))
    cv2.imwrite(str(src / "gray16.png"), (np.arange(33 * 17).reshape(33, 17) * 100).astype(np.uint16))
    cv2.imwrite(str(src / "rgba.png"), np.dstack([img, np.full(truth.shape, 7, np.uint8)]))
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out, ov = tmp_path / "out", tmp_path / "overlay"
    args = [str(src), str(tmp_path / "missing.jpg"), "--net", proto, "--weights", weights,
            "--out", str(out), "--overlay", str(ov), "--mean", "0", "0", "0", "-q",
            "--batch", "2"]
    assert script("infer").main(args) == 1
    assert "broken.png: not a readable image" in caplog.text
    assert "missing.jpg: no such file" in caplog.text
    assert "2 of 6 input(s) failed" in caplog.text
    with Image.open(str(out / "a.png")) as im:
        assert im.mode == "P" and im.getpalette()[3:6] == [128, 0, 0]
        np.testing.assert_array_equal(np.array(im), truth)
    with Image.open(str(out / "rgba.png")) as im:
        np.testing.assert_array_equal(np.array(im), truth)  # alpha dropped
    assert np.array(Image.open(str(out / "gray16.png"))).shape == (33, 17)
    assert np.array(Image.open(str(out / "sub" / "b.png"))).shape == (20, 30)
    assert cv2.imread(str(ov / "a.jpg")).shape == (45, 61, 3)
    leftovers = [f for d, _, fs in os.walk(str(tmp_path)) for f in fs
                 if f.startswith(".") and f != fileio.MARK]
    assert leftovers == []


def test_float_and_signed_pixels_are_refused(tmp_path):
    """A float TIFF in [0, 1] was clipped to 0 and 1 (and a signed one's
    negative values to 0): no one scale to 8 bits is right for them."""
    import cv2
    from fcrn import imageio
    from fcrn.errors import InputError
    picture = np.random.default_rng(0).random((6, 8, 3))
    for name, pixels, kind in (("f.tif", picture.astype(np.float32), "float32"),
                               ("s.tif", (picture * 2000 - 1000).astype(np.int16), "int16")):
        path = str(tmp_path / name)
        assert cv2.imwrite(path, pixels)
        with pytest.raises(InputError, match="%s: %s pixels; give 8- or 16-bit unsigned images"
                           % (path, kind)):
            imageio.read_image(path)


def test_script_cityscapes_labelids_and_weight_mismatch(tmp_path, caplog, script):
    import cv2
    from PIL import Image
    proto, weights = make_picker(tmp_path)
    truth = truth_map(45, 61, stride=8)
    path = str(tmp_path / "x_leftImg8bit.png")
    cv2.imwrite(path, image_of(truth))
    common = ["--weights", weights, "--out", str(tmp_path / "o"), "--mean", "0", "0", "0", "-q"]
    assert script("infer").main([path, "--net", proto, "--dataset", "cityscapes", "--labelids",
                                 str(tmp_path / "ids")] + common) == 0
    ids = np.array(Image.open(str(tmp_path / "ids" / "x_leftImg8bit.png")))
    np.testing.assert_array_equal(ids, np.array([7, 8, 11])[truth])  # road, sidewalk, building
    other = str(tmp_path / "other.prototxt")
    with open(other, "w") as f:
        f.write(picker_net(stem_pool=False).replace("kernel_size: 7", "kernel_size: 5"))
    assert script("infer").main([path, "--net", other] + common) == 1
    assert "conv1: blob 0 stored as 3x3x7x7, the net expects 3x3x5x5" in caplog.text


def test_exif_orientation_is_applied_as_training_applies_it(tmp_path, script):
    """A photo stored 40x80 with EXIF orientation 6 (rotate 90) is 80x40 to
    viewers; training (the data layer's decoder) and inference read it so,
    and the label map has that size."""
    import io
    from PIL import Image
    from fcrn.imageio import decode_image
    pixels = np.zeros((40, 80, 3), np.uint8)
    pixels[:, :10] = 255
    im = Image.fromarray(pixels)
    exif = im.getexif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    im.save(buf, format="JPEG", exif=exif.tobytes())
    (tmp_path / "photo.jpg").write_bytes(buf.getvalue())
    decoded = decode_image(buf.getvalue(), "photo.jpg")
    assert decoded.shape == (80, 40, 3) and decoded[:10].mean() > 200  # the white band on top
    proto, weights = make_picker(tmp_path)
    assert script("infer").main([str(tmp_path / "photo.jpg"), "--net", proto, "--weights",
                                 weights, "--out", str(tmp_path / "o"), "-q"]) == 0
    with Image.open(str(tmp_path / "o" / "photo.png")) as label:
        assert label.size == (40, 80)  # width, height


# --- output folders: built beside, swapped in whole --------------------------------

def _tree(root):
    """{relative path: bytes} of every file under `root`."""
    files = {}
    for folder, _, names in os.walk(str(root)):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                files[os.path.relpath(path, str(root))] = f.read()
    return files


def _two_images(tmp_path):
    import cv2
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    cv2.imwrite(str(src / "a.png"), image_of(truth_map(45, 61, stride=8)))
    cv2.imwrite(str(src / "sub" / "b.png"), image_of(truth_map(20, 30, stride=8, seed=1)))
    return src


def _earlier_run(tmp_path, script):
    """(input folder, --out, --overlay, the options naming them and the net)
    after a complete run on _two_images."""
    proto, weights = make_picker(tmp_path)
    src = _two_images(tmp_path)
    out, ov = tmp_path / "out", tmp_path / "ov"
    common = ["--net", proto, "--weights", weights, "--out", str(out), "--overlay", str(ov),
              "--mean", "0", "0", "0", "-q"]
    assert script("infer").main([str(src)] + common) == 0
    return src, out, ov, common


def test_a_failed_rerun_leaves_the_earlier_output_as_it_was(tmp_path, script, caplog):
    """An unreadable image after a good one: the earlier complete outputs
    (--out and --overlay) stay byte for byte, with no temporary beside them."""
    src, out, ov, common = _earlier_run(tmp_path, script)
    before = _tree(out), _tree(ov)
    assert "a.png" in before[0] and os.path.join("sub", "b.png") in before[0]
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with open(str(tmp_path / "list.txt"), "w") as f:
        f.write("in/a.png\nbroken.png\nin/sub/b.png\n")
    # another palette: every file this run writes differs from the earlier one's
    assert script("infer").main(["--list", str(tmp_path / "list.txt"), "--dataset",
                                 "cityscapes"] + common) == 1
    assert "broken.png: not a readable image" in caplog.text
    assert (_tree(out), _tree(ov)) == before
    assert sorted(p for p in os.listdir(str(tmp_path)) if p.startswith(".")) == []


def test_a_complete_rerun_replaces_the_output_whole(tmp_path, script):
    src, out, ov, common = _earlier_run(tmp_path, script)
    first = _tree(out)
    assert script("infer").main([str(src / "a.png"), "--dataset", "cityscapes"] + common) == 0
    assert sorted(_tree(out)) == sorted(["a.png", fileio.MARK])  # sub/b.png is gone
    assert _tree(out)["a.png"] != first["a.png"]
    assert sorted(_tree(ov)) == sorted(["a.jpg", fileio.MARK])
    assert sorted(p for p in os.listdir(str(tmp_path)) if p.startswith(".")) == []


def test_a_run_is_built_beside_its_output_until_it_completes(tmp_path, script, monkeypatch):
    """While the net computes, --out holds the earlier output only; the new
    one grows in a marked temporary folder beside it."""
    proto, weights = make_picker(tmp_path)
    src = _two_images(tmp_path)
    out = tmp_path / "out"
    common = ["--net", proto, "--weights", weights, "--out", str(out), "-q", "--jobs", "1"]
    assert script("infer").main([str(src)] + common) == 0
    before = _tree(out)
    seen = []
    from fcrn.infer import segmenter as seg_module
    predict = seg_module.Segmenter.predict

    def spy(self, images):
        seen.append((_tree(out), [p for p in os.listdir(str(tmp_path)) if ".partial-" in p]))
        return predict(self, images)
    monkeypatch.setattr(seg_module.Segmenter, "predict", spy)
    assert script("infer").main([str(src), "--dataset", "cityscapes"] + common) == 0
    assert len(seen) == 2 and all(tree == before and partial for tree, partial in seen)
    assert _tree(out) != before


def test_an_input_failing_in_a_fresh_folder_keeps_the_others(tmp_path, script):
    """With no earlier output to keep, the predictions of the readable
    inputs are swapped in (exit status 1 names the failures)."""
    proto, weights = make_picker(tmp_path)
    src = _two_images(tmp_path)
    (src / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    assert script("infer").main([str(src), "--net", proto, "--weights", weights, "--out",
                                 str(out), "-q"]) == 1
    assert sorted(_tree(out)) == sorted(["a.png", os.path.join("sub", "b.png"), fileio.MARK])


def test_nested_output_folders_are_refused(tmp_path, script, caplog):
    """Swapping --out in whole would drop an --overlay built inside it."""
    proto, weights = make_picker(tmp_path)
    src = _two_images(tmp_path)
    out = tmp_path / "out"
    assert script("infer").main([str(src), "--net", proto, "--weights", weights, "--out",
                                 str(out), "--overlay", str(out / "ov"), "-q"]) == 2
    assert "--overlay %s lies inside --out %s" % (out / "ov", out) in caplog.text
    assert not out.exists()


# --- usage errors --------------------------------------------------------------------

@pytest.mark.parametrize("option, values, message", [
    # Caffe aborts on a blob beyond INT_MAX elements (issue: exit 134, stack trace)
    ("--tile", ["10", "10000000"], "argument --tile: must be in [1, 2048], not 10000000"),
    ("--tile", ["0", "8"], "argument --tile: must be in [1, 2048], not 0"),
    ("--scales", ["1", "1000"], "argument --scales: must be in (0, 4], not 1000"),
    ("--stride", ["10000000"], "argument --stride: must be in [1, 2048], not 10000000"),
])
def test_sizes_beyond_caffes_blobs_are_usage_errors(tmp_path, script, capsys, option, values,
                                                   message):
    proto, weights = make_picker(tmp_path)
    src = _two_images(tmp_path)
    with pytest.raises(SystemExit) as e:
        script("infer").main([str(src), "--net", proto, "--weights", weights, "--out",
                              str(tmp_path / "out"), option] + values)
    assert e.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_no_inputs_is_a_usage_error(tmp_path, script, caplog):
    proto, weights = make_picker(tmp_path)
    assert script("infer").main(["--net", proto, "--weights", weights, "--out",
                                 str(tmp_path / "out"), "-q"]) == 2
    assert "no inputs: name image files or folders, or --list LIST" in caplog.text
    assert not (tmp_path / "out").exists()


def test_an_output_of_more_channels_than_a_label_map_holds_is_refused(tmp_path):
    """Class 299 came out as 43 (uint8), silently."""
    from fcrn.errors import UsageError
    n = caffe.NetSpec()
    n.data = L.Input(shape={"dim": [1, 3, 16, 16]})
    n.score = L.Convolution(n.data, num_output=300, kernel_size=1)
    proto = str(tmp_path / "wide.prototxt")
    with open(proto, "w") as f:
        f.write(str(n.to_proto()))
    weights = str(tmp_path / "wide.caffemodel")
    caffe.Net(proto, caffe.TEST).save(weights)
    with pytest.raises(UsageError, match=r"wide.prototxt: output 'score' has 300 channels, and a "
                       r"label map holds at most 255 classes \(0..254; 255 is the ignore label\)"):
        segmenter(proto, weights)
