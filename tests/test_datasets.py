"""Dataset preparation (VOC + SBD, Cityscapes) and LMDB writing, on miniature
trees with the real layouts and formats built by tests/fake_datasets.py."""
import json
import os

import cv2
import numpy as np
import pytest

import fake_datasets as fake
from fcrn import datasets
from fcrn.data.sources import META_KEY, decode_record, read_lmdb_meta
from fcrn.errors import InputError
from fcrn.lists import read_pairs as read_pair_list


@pytest.fixture
def run(script):
    return lambda name: script(name).main


# VOC train a1-a3, VOC val v1-v2; SBD train a1, s1, v1 (v1 is VOC val: must
# not reach train_aug), SBD val s2, s3.
VOC_TRAIN, VOC_VAL = ["a1", "a2", "a3"], ["v1", "v2"]
SBD_TRAIN, SBD_VAL = ["a1", "s1", "v1"], ["s2", "s3"]


@pytest.fixture
def voc_trees(tmp_path):
    voc = fake.make_voc(str(tmp_path), VOC_TRAIN, VOC_VAL)
    sbd = fake.make_sbd(str(tmp_path), SBD_TRAIN, SBD_VAL, voc_root=str(tmp_path))
    return tmp_path, voc, sbd


def list_ids(path):
    return [os.path.basename(img)[:-4] for img, _ in read_pair_list(path)]


def test_voc_sbd_splits_and_labels(voc_trees, run):
    root, voc, sbd = voc_trees
    out = root / "out"
    assert run("prepare_voc")(["--voc", str(root), "--sbd", str(root), "--out", str(out)]) == 0
    assert list_ids(out / "train_aug.txt") == ["a1", "a2", "a3", "s1", "s2", "s3"]
    assert list_ids(out / "train.txt") == VOC_TRAIN
    assert list_ids(out / "val.txt") == VOC_VAL
    manifest = json.load(open(out / "manifest.json"))
    assert manifest["counts"] == {"train_aug": 6, "train": 3, "val": 2}
    for img, lbl in read_pair_list(str(out / "train_aug.txt")) + read_pair_list(str(out / "val.txt")):
        i = os.path.basename(lbl)[:-4]
        assert img.endswith(os.path.join("VOC2012", "JPEGImages", i + ".jpg"))
        got = cv2.imread(lbl, cv2.IMREAD_UNCHANGED)
        assert got.ndim == 2 and got.dtype == np.uint8
        # VOC's own annotation (palette indices, void band kept) wins over SBD's
        np.testing.assert_array_equal(got, voc[i] if i in voc else sbd[i])
    assert (cv2.imread(str(out / "SegmentationClassAug" / "a1.png"), 0)[0] == 255).all()


def test_voc_rerun_is_noop_and_changes_redo(voc_trees, run):
    root, voc, sbd = voc_trees
    args = ["--voc", str(root / "VOCdevkit"), "--sbd", str(root / "benchmark_RELEASE"),
            "--out", str(root / "out")]
    main = run("prepare_voc")
    assert main(args) == 0
    label = root / "out" / "SegmentationClassAug" / "s1.png"
    before = os.stat(label).st_mtime_ns, os.stat(root / "out").st_ino
    assert main(args) == 0
    assert (os.stat(label).st_mtime_ns, os.stat(root / "out").st_ino) == before
    seg = sbd["s1"].copy()
    seg[:] = 7
    fake.write_sbd_mat(str(root / "benchmark_RELEASE" / "dataset" / "cls" / "s1.mat"), seg)
    assert main(args) == 0
    assert (cv2.imread(str(label), 0) == 7).all()


def test_voc_rerun_writes_again_a_list_cut_short_since(voc_trees, run, caplog):
    """The manifest said up to date over a train list emptied after the run."""
    root, _, _ = voc_trees
    args = ["--voc", str(root / "VOCdevkit"), "--out", str(root / "out")]
    main = run("prepare_voc")
    assert main(args) == 0
    listed = (root / "out" / "train.txt").read_text()
    (root / "out" / "train.txt").write_text("")
    assert main(args) == 0
    assert "train.txt no longer as written; preparing it again" in caplog.text
    assert (root / "out" / "train.txt").read_text() == listed


def test_voc_bad_files_are_all_named_and_nothing_is_written(voc_trees, caplog, run):
    root, voc, sbd = voc_trees
    voc_dir = root / "VOCdevkit" / "VOC2012"
    os.remove(voc_dir / "JPEGImages" / "a2.jpg")
    fake.write_palette_png(str(voc_dir / "SegmentationClass" / "a3.png"), voc["a3"][:-2])
    seg = sbd["s1"].copy()
    seg[3, 3] = 30  # not a VOC class, not ignore
    fake.write_sbd_mat(str(root / "benchmark_RELEASE" / "dataset" / "cls" / "s1.mat"), seg)
    (root / "benchmark_RELEASE" / "dataset" / "cls" / "s2.mat").write_bytes(b"not a mat file")
    args = ["--voc", str(root), "--sbd", str(root), "--out", str(root / "out")]
    main = run("prepare_voc")
    assert main(args) == 1
    log = caplog.text
    for bad in ("a2.jpg", "a3.png", "s1.mat", "s2.mat"):
        assert bad in log
    assert "[30]" in log and "size" in log
    assert not (root / "out").exists()
    assert not [p for p in os.listdir(root) if "partial" in p]

    caplog.clear()
    assert main(args + ["--skip-bad"]) == 0
    m = json.load(open(root / "out" / "manifest.json"))
    assert len(m["skipped"]) == 4 and "skipped 4" in caplog.text
    assert list_ids(root / "out" / "train_aug.txt") == ["a1", "s3"]


def test_voc_empty_list_and_missing_tree(voc_trees, run):
    root, _, _ = voc_trees
    with pytest.raises(InputError, match="not a VOC2012 tree"):
        from fcrn.data.voc import prepare_voc
        prepare_voc(str(root / "nowhere"), None, str(root / "out"))
    open(root / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation" / "val.txt", "w").close()
    assert run("prepare_voc")(["--voc", str(root), "--out", str(root / "out")]) == 1
    assert not (root / "out").exists()


def test_sbd_mat_reads_like_the_real_files(tmp_path):
    """The fixture's .mat is what scipy sees in SBD: a 1x1 struct GTcls."""
    import scipy.io
    from fcrn.data.voc import read_sbd_label
    seg = (np.arange(12 * 9).reshape(12, 9) % 21).astype(np.uint8)
    path = str(tmp_path / "x.mat")
    fake.write_sbd_mat(path, seg)
    raw = scipy.io.loadmat(path)["GTcls"]
    assert raw.shape == (1, 1) and {"Segmentation", "Boundaries", "CategoriesPresent"} <= set(raw.dtype.names)
    np.testing.assert_array_equal(raw[0, 0]["Segmentation"], seg)
    np.testing.assert_array_equal(read_sbd_label(path), seg)


CS_SPLITS = {"train": {"aachen": 3, "bochum": 2}, "val": {"lindau": 2}, "test": {"berlin": 2}}


def test_cityscapes_train_ids_and_lists(tmp_path, run):
    ids = fake.make_cityscapes(str(tmp_path / "cs"), CS_SPLITS)
    out = tmp_path / "out"
    assert run("prepare_cityscapes")(["--cityscapes", str(tmp_path / "cs"), "--out", str(out)]) == 0
    lut = datasets.get("cityscapes").label_to_class_lut()
    # known entries of the official table: road, car, bicycle, unlabeled, guard rail
    assert (lut[7], lut[26], lut[33], lut[0], lut[14]) == (0, 13, 18, 255, 255)
    assert sorted(set(lut[lut >= 0].tolist())) == list(range(19)) + [255]
    train = read_pair_list(str(out / "train.txt"))
    assert len(train) == 5 and len(read_pair_list(str(out / "val.txt"))) == 2
    test = read_pair_list(str(out / "test.txt"), need_label=False)
    assert len(test) == 2 and all(lbl is None for _, lbl in test)
    for img, lbl in train:
        stem = os.path.basename(img)[:-len("_leftImg8bit.png")]
        assert lbl.endswith(stem + "_gtFine_labelTrainIds.png")
        np.testing.assert_array_equal(cv2.imread(lbl, cv2.IMREAD_UNCHANGED), lut[ids[stem]])
    assert json.load(open(out / "manifest.json"))["counts"] == {"train": 5, "val": 2, "test": 2}


def test_cityscapes_bad_label_ids_named(tmp_path, caplog, run):
    ids = fake.make_cityscapes(str(tmp_path / "cs"), CS_SPLITS)
    stem = fake.cityscapes_stem("bochum", 1)
    bad = ids[stem].copy()
    bad[0, 0] = 40
    cv2.imwrite(str(tmp_path / "cs" / "gtFine" / "train" / "bochum" / (stem + "_gtFine_labelIds.png")), bad)
    assert run("prepare_cityscapes")(["--root", str(tmp_path / "cs"), "--out", str(tmp_path / "o")]) == 1
    assert stem + "_gtFine_labelIds.png" in caplog.text and "[40]" in caplog.text
    assert not (tmp_path / "o").exists()


def test_make_net_counts_the_records_of_an_lmdb_validation_set(voc_trees, run, tmp_path):
    root, _, _ = voc_trees
    from fcrn.data.voc import prepare_voc
    prepare_voc(str(root), str(root), str(root / "out"))
    db = str(root / "val.lmdb")
    assert run("make_lmdb")(["--list", str(root / "out" / "val.txt"), "--out", db]) == 0
    count = read_lmdb_meta(db)["count"]
    out = tmp_path / "net"
    assert run("make_net")(["--num-classes", "21", "--train-source", db, "--val-source", db,
                            "--out", str(out)]) == 0
    from fcrn import caffeio
    assert caffeio.read_solver(str(out / "solver.prototxt")).test_iter == [count]


def test_lmdb_records_round_trip_and_rerun_is_noop(voc_trees, run):
    import lmdb
    root, voc, sbd = voc_trees
    from fcrn.data.voc import prepare_voc
    prepare_voc(str(root), str(root), str(root / "out"))
    lst, db = str(root / "out" / "train_aug.txt"), str(root / "train.lmdb")
    main = run("make_lmdb")
    assert main(["--list", lst, "--out", db]) == 0
    meta = read_lmdb_meta(db)
    assert meta["count"] == 6 and meta["num_classes"] == 21  # from the manifest
    pairs = read_pair_list(lst)
    env = lmdb.open(db, readonly=True, lock=False)
    with env.begin() as txn:
        keys = [k for k, _ in txn.cursor() if k != META_KEY]
        assert keys == [b"%08d" % i for i in range(6)]
        for i, (img, lbl) in enumerate(pairs):
            name, ib, lb = decode_record(txn.get(b"%08d" % i))
            assert name == os.path.relpath(img, str(root / "out"))
            assert ib == open(img, "rb").read() and lb == open(lbl, "rb").read()
    env.close()
    mtime = os.stat(os.path.join(db, "data.mdb")).st_mtime_ns
    assert main(["--list", lst, "--out", db]) == 0
    assert os.stat(os.path.join(db, "data.mdb")).st_mtime_ns == mtime


def test_lmdb_bad_input_leaves_previous_output(voc_trees, caplog, run):
    root, voc, sbd = voc_trees
    from fcrn.data.voc import prepare_voc
    prepare_voc(str(root), str(root), str(root / "out"))
    lst, db = root / "out" / "train_aug.txt", str(root / "train.lmdb")
    main = run("make_lmdb")
    assert main(["--list", str(lst), "--out", db]) == 0
    with open(lst, "a") as f:
        f.write("missing.jpg SegmentationClassAug/a1.png\n")
        f.write("../VOCdevkit/VOC2012/JPEGImages/a1.jpg SegmentationClassAug/a2.png\n")
    cv2.imwrite(str(root / "out" / "SegmentationClassAug" / "a2.png"), np.full((30, 41), 3, np.uint8))
    assert main(["--list", str(lst), "--out", db]) == 1
    assert "missing.jpg" in caplog.text and "a2.png" in caplog.text
    assert read_lmdb_meta(db)["count"] == 6  # the earlier complete LMDB survives
    assert not [p for p in os.listdir(root) if "partial" in p]
    assert main(["--list", str(lst), "--out", db, "--skip-bad"]) == 0
    assert read_lmdb_meta(db)["count"] == 5  # a2 itself (wrong size now) is skipped too
    with pytest.raises(InputError, match="does not exist"):
        read_lmdb_meta(str(root / "nope.lmdb"))


def test_record_decoder_rejects_garbage():
    with pytest.raises(InputError, match="bad magic"):
        decode_record(b"\x80\x04pickle")
    from fcrn.data.sources import encode_record
    rec = encode_record("x", b"img", b"lbl")
    assert decode_record(rec) == ("x", b"img", b"lbl")
    with pytest.raises(InputError, match="truncated"):
        decode_record(rec[:-1])
