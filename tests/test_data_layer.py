"""SegDataLayer through a real caffe.Net, on colour-coded images: R encodes
the label of each pixel, B a horizontal ramp (so mirroring and scale can be
read back from a crop), G a vertical ramp."""
import json
import os
import re

import cv2
import numpy as np
import pytest

import caffe
import fake_datasets as fake
import fcrn_data

MEAN = np.array([104.008, 116.669, 122.675], np.float32)
NUM_CLASSES = 5


@pytest.fixture(autouse=True)
def stop_workers():
    yield
    fcrn_data.close_all()


@pytest.fixture
def coded(tmp_path):
    path, arrays = fake.write_coded_list(str(tmp_path / "d"), 10, size=(40, 50),
                                         num_classes=NUM_CLASSES)
    return path, arrays


def make_net(tmp_path, phase=caffe.TRAIN, tops=("data", "label"), **params):
    proto = tmp_path / ("net%d.prototxt" % len(os.listdir(tmp_path)))
    proto.write_text(
        'layer { name: "data" type: "Python" %s\n'
        '  python_param { module: "fcrn_data" layer: "SegDataLayer" param_str: %s } }\n'
        % (" ".join('top: "%s"' % t for t in tops), json.dumps(json.dumps(params))))
    return caffe.Net(str(proto), phase)


def batches(net, n):
    out = []
    for _ in range(n):
        net.forward()
        out.append({k: net.blobs[k].data.copy() for k in net.blobs})
    return out


def interior(lbl):
    """Pixels whose 3x3 neighbourhood has one label (not ignore): there the
    bilinearly resized image has no blend of two classes."""
    k = np.ones((3, 3), np.uint8)
    l8 = lbl.astype(np.uint8)
    inner = (cv2.erode(l8, k) == cv2.dilate(l8, k)) & (l8 != 255)
    inner[[0, -1], :] = inner[:, [0, -1]] = False  # neighbours beyond the crop are unknown
    return inner


def test_alignment_under_every_augmentation(tmp_path, coded):
    path, _ = coded
    net = make_net(tmp_path, source=path, batch_size=4, crop_size=[48, 56],
                   scale=[0.5, 2.0], mirror=True, seed=3, num_classes=NUM_CLASSES)
    signs, slopes, padded = set(), [], 0
    for b in batches(net, 8):
        data, label = b["data"], b["label"]
        assert data.shape == (4, 3, 48, 56) and label.shape == (4, 1, 48, 56)
        assert data.dtype == np.float32 and label.dtype == np.float32
        for img, lbl in zip(data, label[:, 0]):
            bgr = img + MEAN[:, None, None]
            pad = lbl == 255  # the coded labels have no ignore: 255 is padding only
            padded += pad.sum()
            assert np.all(img[:, pad] == 0), "image padding must be the mean"
            inner = interior(lbl)
            assert inner.sum() > 0.3 * (~pad).sum()
            # R carries the label: image and label agree wherever it is defined
            assert np.abs(bgr[2][inner] - (20 + 10 * lbl[inner])).max() <= 1.0
            # B ramp: sign tells the mirror, |slope| = 2 / scale
            ramp = np.diff(bgr[0], axis=1)[inner[:, 1:] & inner[:, :-1]]
            slope = np.median(ramp)
            signs.add(np.sign(slope))
            slopes.append(abs(slope))
    assert signs == {-1.0, 1.0}, "both mirrored and plain crops expected"
    assert min(slopes) < 2 / 1.4 and max(slopes) > 2 / 0.7, "scales should span [0.5, 2]"
    assert padded > 0


def test_test_phase_is_deterministic_unaugmented_padded(tmp_path, coded):
    path, arrays = coded
    kw = dict(source=path, batch_size=3, crop_size=[44, 36], scale=[0.5, 2.0], mirror=True)
    a = batches(make_net(tmp_path, caffe.TEST, **kw), 5)
    b = batches(make_net(tmp_path, caffe.TEST, **kw), 5)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x["data"], y["data"])
        np.testing.assert_array_equal(x["label"], y["label"])
    # item k of the stream is list item k mod 10: height padded 40 -> 44 at
    # the bottom, width centre-cropped 50 -> 36
    for k in range(15):
        img, lbl = arrays[k % 10]
        got_img, got_lbl = a[k // 3]["data"][k % 3], a[k // 3]["label"][k % 3, 0]
        want = img[:, 7:43].astype(np.float32) - MEAN
        np.testing.assert_allclose(got_img[:, :40].transpose(1, 2, 0), want, atol=1e-4)
        np.testing.assert_array_equal(got_lbl[:40], lbl[:, 7:43])
        assert (got_lbl[40:] == 255).all() and (got_img[:, 40:] == 0).all()


def test_seeded_stream_is_reproducible_and_independent_of_workers(tmp_path, coded):
    path, _ = coded
    kw = dict(source=path, batch_size=2, crop_size=32, seed=11)
    ref = batches(make_net(tmp_path, workers=0, **kw), 7)  # 14 > 10 items: crosses an epoch
    for other in (batches(make_net(tmp_path, workers=2, prefetch=3, **kw), 7),
                  batches(make_net(tmp_path, workers=3, **kw), 7)):
        for x, y in zip(ref, other):
            np.testing.assert_array_equal(x["data"], y["data"])
            np.testing.assert_array_equal(x["label"], y["label"])
    diff = batches(make_net(tmp_path, workers=0, **dict(kw, seed=12)), 7)
    assert any(not np.array_equal(x["data"], y["data"]) for x, y in zip(ref, diff))


@pytest.mark.parametrize("workers", [0, 2, 3])
def test_a_resumed_train_net_continues_the_stream(tmp_path, coded, monkeypatch, workers):
    """FCRN_DATA_RESUME (the forwards done, which train.py sets when it
    resumes) starts the stream there, mid-batch of a multi-pass net too."""
    path, _ = coded
    kw = dict(source=path, batch_size=2, crop_size=32, seed=11, passes=3, workers=workers)
    tops = ("data", "label", "pass")
    ref = batches(make_net(tmp_path, tops=tops, **dict(kw, workers=0)), 20)
    monkeypatch.setenv("FCRN_DATA_RESUME", "7")  # batch 2, its second pass
    resumed = batches(make_net(tmp_path, tops=tops, **kw), 13)
    for x, y in zip(ref[7:], resumed):
        for blob in tops:
            np.testing.assert_array_equal(x[blob], y[blob])
    test_net = batches(make_net(tmp_path, caffe.TEST, tops=tops, **kw), 1)  # TEST: from 0
    np.testing.assert_array_equal(test_net[0]["pass"], [0])


def test_a_resume_position_that_is_no_number_is_named(tmp_path, coded, monkeypatch):
    monkeypatch.setenv("FCRN_DATA_RESUME", "x")
    with pytest.raises(Exception, match="FCRN_DATA_RESUME must be a number of forwards, not 'x'"):
        make_net(tmp_path, source=coded[0])


def identify(img, arrays):
    bgr = np.rint(img + MEAN[:, None, None]).transpose(1, 2, 0)
    hits = [k for k, (a, _) in enumerate(arrays) if np.abs(bgr - a).max() <= 0.5]
    assert len(hits) == 1
    return hits[0]


def test_shards_are_disjoint_and_cover_the_list(tmp_path, coded):
    path, arrays = coded
    count = 3
    seen = []
    caffe.set_multiprocess(True)  # what Caffe's python/train.py sets per GPU process
    caffe.set_solver_count(count)
    try:
        for rank in range(count):
            caffe.set_solver_rank(rank)
            net = make_net(tmp_path, source=path, crop_size=[40, 50], scale=[1, 1],
                           mirror=False, seed=5)
            shard = len(range(rank, 10, count))
            ids = [identify(b["data"][0], arrays) for b in batches(net, 2 * shard)]
            # one epoch covers the shard once, the next again (reshuffled)
            assert sorted(ids[:shard]) == sorted(ids[shard:])
            assert len(set(ids[:shard])) == shard
            seen.append(set(ids))
    finally:
        caffe.set_solver_rank(0)
        caffe.set_solver_count(1)
        caffe.set_multiprocess(False)
    assert sum(len(s) for s in seen) == 10 and set().union(*seen) == set(range(10))


def test_passes_serve_each_batch_p_times(tmp_path, coded):
    path, _ = coded
    net = make_net(tmp_path, tops=("data", "label", "pass"), source=path, batch_size=2,
                   crop_size=24, passes=3, seed=1)
    assert net.blobs["pass"].data.shape == (1,)
    out = batches(net, 9)
    assert [float(b["pass"][0]) for b in out] == [0, 1, 2] * 3
    for g in range(3):
        for k in (1, 2):
            np.testing.assert_array_equal(out[3 * g]["data"], out[3 * g + k]["data"])
            np.testing.assert_array_equal(out[3 * g]["label"], out[3 * g + k]["label"])
    assert not np.array_equal(out[0]["data"], out[3]["data"])
    with pytest.raises(Exception, match="pass"):
        make_net(tmp_path, source=path, passes=2)  # P > 1 needs the pass top


def test_lmdb_source_serves_what_the_list_serves(tmp_path, coded):
    from fcrn.data.sources import write_lmdb
    path, _ = coded
    db = str(tmp_path / "d.lmdb")
    write_lmdb(path, db, num_classes=NUM_CLASSES)
    kw = dict(batch_size=4, crop_size=30, seed=9)
    for phase, workers in ((caffe.TRAIN, 2), (caffe.TEST, 0), (caffe.TEST, 0)):
        # twice in-process: one LMDB read by several layers of one process
        a = batches(make_net(tmp_path, phase, source=path, **kw), 3)
        b = batches(make_net(tmp_path, phase, source=db, workers=workers, **kw), 3)
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x["data"], y["data"])
            np.testing.assert_array_equal(x["label"], y["label"])


def test_a_truncated_lmdb_is_refused_not_a_crash(tmp_path, coded):
    """An LMDB cut short (an interrupted copy, a full disk) killed the
    process with SIGBUS at its first read, in the data layer and in a rerun
    of make_lmdb; both name it now, and --force writes it again."""
    import subprocess
    import sys
    from fcrn.data.sources import read_lmdb_meta, write_lmdb
    path, _ = coded
    db = str(tmp_path / "d.lmdb")
    write_lmdb(path, db, num_classes=NUM_CLASSES)
    data = os.path.join(db, "data.mdb")
    size = os.path.getsize(data)
    os.truncate(data, size // 2)
    # in a child: on a crash it dies, not pytest
    for code in ("from fcrn.data.sources import read_lmdb_meta as f; f(%r)" % db,
                 "from fcrn.data.sources import write_lmdb as f; f(%r, %r, num_classes=%d)"
                 % (path, db, NUM_CLASSES)):
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 1, (result.returncode, result.stderr[-2000:])
        assert result.stderr.strip().splitlines()[-1].endswith(
            "%s: LMDB truncated (data.mdb holds %d bytes of the %d its pages take): "
            "copy it again, or write it again with make_lmdb.py --force"
            % (db, size // 2, size)), result.stderr[-2000:]
    write_lmdb(path, db, num_classes=NUM_CLASSES, force=True)
    assert read_lmdb_meta(db)["count"] == 10


def test_make_lmdb_reruns_as_a_no_op_whatever_the_root_is_spelt(tmp_path, coded, monkeypatch):
    from fcrn.data.sources import write_lmdb
    path, _ = coded
    db = str(tmp_path / "d.lmdb")
    write_lmdb(path, db, root=str(tmp_path / "d"), num_classes=NUM_CLASSES)
    written = os.stat(os.path.join(db, "data.mdb")).st_mtime_ns
    monkeypatch.chdir(tmp_path)
    for root in ("d", "./d/", str(tmp_path / "d" / ".." / "d")):
        write_lmdb(path, db, root=root, num_classes=NUM_CLASSES)
        assert os.stat(os.path.join(db, "data.mdb")).st_mtime_ns == written, root


def test_params_from_yaml_and_unknown_keys_rejected(tmp_path, coded):
    path, _ = coded
    proto = tmp_path / "y.prototxt"
    proto.write_text('layer { name: "d" type: "Python" top: "data" top: "label"\n'
                     '  python_param { module: "fcrn_data" layer: "SegDataLayer"\n'
                     '    param_str: "source: %s\\ncrop_size: [20, 30]\\nbatch_size: 2" } }' % path)
    net = caffe.Net(str(proto), caffe.TEST)
    assert net.blobs["data"].data.shape == (2, 3, 20, 30)
    with pytest.raises(Exception, match=r"SegDataLayer.*unknown.*'crop'"):
        make_net(tmp_path, source=path, crop=3)
    with pytest.raises(Exception, match="SegDataLayer.*scale"):
        make_net(tmp_path, source=path, scale=[2, 1])
    assert fcrn_data.parse_params('{"source": "x"}')["mean"] == [104.008, 116.669, 122.675]


@pytest.mark.parametrize("case", ["no_list", "no_lmdb", "empty", "missing_file", "not_lmdb"])
def test_bad_sources_fail_at_setup_naming_the_source(tmp_path, coded, case):
    path, _ = coded
    if case == "no_list":
        src = str(tmp_path / "nope.txt")
    elif case == "no_lmdb":
        src = str(tmp_path / "nope.lmdb")
    elif case == "not_lmdb":
        src = str(tmp_path / "d")
    elif case == "empty":
        src = str(tmp_path / "empty.txt")
        open(src, "w").close()
    else:
        src = str(tmp_path / "d" / "broken.txt")
        with open(src, "w") as f:
            f.write("img/000.png lbl/000.png\nimg/missing.png lbl/001.png\n")
    with pytest.raises(Exception, match=re.escape("SegDataLayer(source=%s)" % src)):
        make_net(tmp_path, source=src)


def test_bad_label_values_fail_with_the_file_named(tmp_path, coded):
    path, _ = coded
    net = make_net(tmp_path, caffe.TEST, source=path, num_classes=3, workers=1)
    with pytest.raises(Exception, match=r"SegDataLayer.*lbl/000\.png.*outside \[0, 3\)"):
        net.forward()


def test_workers_run_after_the_trainer_used_opencv_threads(tmp_path, coded):
    """Forked workers must not hang when the trainer's OpenCV thread pool is
    already running (cv2.setNumThreads in such a child waits forever); run in
    a subprocess so that a regression fails by timeout instead of hanging."""
    import subprocess
    import sys
    path, _ = coded
    code = (
        "import cv2, numpy as np, caffe, fcrn_data\n"
        "a = np.zeros((1200, 1200, 3), np.uint8)\n"
        "for _ in range(3): cv2.resize(a, (1700, 1700))\n"
        "net = caffe.Net(%r, caffe.TRAIN)\n"
        "net.forward(); net.forward()\n"
        "print('ok', net.blobs['data'].data.shape)\n")
    proto = tmp_path / "fork.prototxt"
    proto.write_text(
        'layer { name: "data" type: "Python" top: "data" top: "label"\n'
        '  python_param { module: "fcrn_data" layer: "SegDataLayer" param_str: %s } }\n'
        % json.dumps(json.dumps(dict(source=path, crop_size=24, workers=2))))
    env = dict(os.environ, GLOG_minloglevel="2")
    out = subprocess.run([sys.executable, "-c", code % str(proto)], env=env, timeout=60,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "ok (1, 3, 24, 24)" in out.stdout
