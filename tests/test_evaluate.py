"""Metrics of fcrn.evaluate against confusion matrices computed by hand, the
whole-set convention, the refusal paths of scripts/evaluate.py, and (where the
package is installed) agreement with cityscapesScripts."""
import json
import math
import os

import numpy as np
import pytest

from fcrn import datasets, evaluate as ev

CITYSCAPES = datasets.get("cityscapes")


def _write_png(path, arr, palette=True):
    from PIL import Image
    im = Image.fromarray(np.asarray(arr, np.uint8), mode="L")
    if palette:
        im = im.convert("P")
        im.putpalette([v for i in range(256) for v in (i, 255 - i, i // 2)])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    im.save(path)


# gt / pred pairs: (0,0) (0,1) (1,1) (1,2) (2,2), one ignored pixel.
GT = np.array([[0, 0, 1], [1, 2, 255]])
PRED = np.array([[0, 1, 1], [2, 2, 0]])


def test_hand_computed_matrix_and_scores():
    cm = ev.ConfusionMatrix(3).update(GT, PRED)
    np.testing.assert_array_equal(cm.hist, [[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 0]])
    s = cm.scores()
    assert s["num_pixels"] == 5
    assert s["pixel_acc"] == pytest.approx(3 / 5)
    np.testing.assert_allclose(s["class_acc"], [1 / 2, 1 / 2, 1])
    assert s["mean_acc"] == pytest.approx(2 / 3)
    # IoU = tp / (gt + pred - tp): 1/(2+1-1), 1/(2+2-1), 1/(1+2-1)
    np.testing.assert_allclose(s["class_iou"], [1 / 2, 1 / 3, 1 / 2])
    assert s["mean_iou"] == pytest.approx(4 / 9)
    # frequency-weighted: 2/5*1/2 + 2/5*1/3 + 1/5*1/2
    assert s["fw_iou"] == pytest.approx(0.2 + 2 / 15 + 0.1)


def test_class_absent_from_gt_and_prediction_is_nan_and_excluded():
    s = ev.ConfusionMatrix(4).update(GT, PRED).scores()
    assert math.isnan(s["class_iou"][3]) and math.isnan(s["class_acc"][3])
    assert s["mean_iou"] == pytest.approx(4 / 9)
    assert s["mean_acc"] == pytest.approx(2 / 3)


def test_class_absent_from_gt_but_predicted_counts_as_zero():
    pred = PRED.copy()
    pred[0, 0] = 3  # a background pixel predicted as class 3
    s = ev.ConfusionMatrix(4).update(GT, pred).scores()
    assert s["class_iou"][3] == 0.0
    assert math.isnan(s["class_acc"][3])  # no ground truth: accuracy undefined
    # class 0 lost its only true positive
    np.testing.assert_allclose(s["class_iou"][:3], [0, 1 / 3, 1 / 2])
    assert s["mean_iou"] == pytest.approx((1 / 3 + 1 / 2) / 4)


def test_ignore_label_and_out_of_range_prediction():
    gt = np.array([0, 0, 255, 255])
    pred = np.array([0, 255, 1, 0])  # 255 on a valid pixel: a miss, no false positive
    cm = ev.ConfusionMatrix(2).update(gt, pred)
    np.testing.assert_array_equal(cm.hist, [[1, 0, 1], [0, 0, 0]])
    s = cm.scores()
    assert s["pixel_acc"] == pytest.approx(0.5)
    assert s["class_iou"][0] == pytest.approx(0.5)
    assert math.isnan(s["class_iou"][1])


def test_whole_set_accumulation_is_not_mean_of_per_image_scores():
    a_gt, a_pred = np.zeros(9, int), np.zeros(9, int)  # all right, class 0 only
    b_gt, b_pred = np.array([0, 1]), np.array([1, 1])
    per_image = [ev.ConfusionMatrix(2).update(a_gt, a_pred).scores()["mean_iou"],
                 ev.ConfusionMatrix(2).update(b_gt, b_pred).scores()["mean_iou"]]
    assert per_image == [pytest.approx(1.0), pytest.approx(0.25)]
    whole = ev.ConfusionMatrix(2).update(a_gt, a_pred).update(b_gt, b_pred).scores()
    # class 0: 9 / (10 + 9 - 9); class 1: 1 / (1 + 2 - 1)
    np.testing.assert_allclose(whole["class_iou"], [0.9, 0.5])
    assert whole["mean_iou"] == pytest.approx(0.7)
    assert whole["mean_iou"] != pytest.approx(np.mean(per_image))


def test_gt_label_out_of_range_raises():
    with pytest.raises(ValueError, match="outside"):
        ev.ConfusionMatrix(2).update(np.array([0, 5]), np.array([0, 1]))


def test_label_counts_and_majority_baseline(tmp_path):
    """Pixels and images per class, counted by hand; ignore and values past
    the classes left out; the majority class is the one with most pixels."""
    _write_png(str(tmp_path / "a.png"), np.array([[0, 0, 1], [255, 1, 7]]))
    _write_png(str(tmp_path / "b.png"), np.array([[1, 1, 1], [2, 255, 255]]))
    pixels, images = ev.label_counts([str(tmp_path / "a.png"), str(tmp_path / "b.png")], 3)
    assert pixels.tolist() == [2, 5, 1] and images.tolist() == [1, 2, 1]
    cm, majority = ev.majority_baseline([str(tmp_path / "a.png"), str(tmp_path / "b.png")],
                                        [("b", str(tmp_path / "b.png"))], 3)
    assert majority == 1
    assert cm.hist.tolist() == [[0, 0, 0, 0], [0, 3, 0, 0], [0, 1, 0, 0]]


def test_script_scores_files_and_writes_reports(tmp_path, script):
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    _write_png(str(gt_dir / "a.png"), np.array([[0, 0], [1, 255]]))
    _write_png(str(gt_dir / "b.png"), np.array([[1, 1, 2]]))
    _write_png(str(pred_dir / "sub" / "a.png"), np.array([[0, 1], [1, 1]]))
    _write_png(str(pred_dir / "b.png"), np.array([[1, 2, 2]]), palette=False)
    md, js = tmp_path / "r.md", tmp_path / "r.json"
    rc = script("evaluate").main(["--dataset", "generic", "--num-classes", "3", "--gt",
                                  str(gt_dir), "--pred", str(pred_dir), "--out-md", str(md),
                                  "--out-json", str(js), "-q"])
    assert rc == 0
    r = json.loads(js.read_text())
    # pairs: (0,0) (0,1) (1,1) | (1,1) (1,2) (2,2)
    assert r["confusion_matrix"] == [[1, 1, 0, 0], [0, 2, 1, 0], [0, 0, 1, 0]]
    assert r["pixel_acc"] == pytest.approx(4 / 6)
    assert r["class_iou"]["class1"] == pytest.approx(2 / (3 + 3 - 2))
    assert r["num_images"] == 2
    text = md.read_text()
    assert "| class0 | class1 | class2 | Mean |" in text and "66.67" in text


def test_script_refuses_missing_and_wrong_size_with_a_list(tmp_path, caplog, script):
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    for k in ("a", "b", "c"):
        _write_png(str(gt_dir / (k + ".png")), np.zeros((4, 5)))
    _write_png(str(pred_dir / "a.png"), np.zeros((4, 5)))
    _write_png(str(pred_dir / "c.png"), np.zeros((5, 4)))
    out = tmp_path / "r.json"
    args = ["--gt", str(gt_dir), "--pred", str(pred_dir), "--out-json", str(out), "-q"]
    assert script("evaluate").main(args) == 1
    assert "b: no prediction" in caplog.text and not out.exists()
    _write_png(str(pred_dir / "b.png"), np.zeros((3, 5)))
    caplog.clear()
    assert script("evaluate").main(args) == 1
    assert "b: prediction is 3x5, ground truth 4x5" in caplog.text
    assert "c: prediction is 5x4" in caplog.text and not out.exists()


def test_script_list_names_ids_without_ground_truth(tmp_path, caplog, script):
    gt_dir = tmp_path / "gt"
    _write_png(str(gt_dir / "a.png"), np.zeros((2, 2)))
    lst = tmp_path / "val.txt"
    lst.write_text("a\nzzz\n")
    assert script("evaluate").main(["--gt", str(gt_dir), "--pred", str(gt_dir), "--list",
                                    str(lst), "-q"]) == 1
    assert "zzz: no ground truth" in caplog.text


def _labels(root, maps):
    for rel, value in maps.items():
        _write_png(str(root / rel), np.full((2, 3), value))


def test_files_pair_by_their_paths_in_a_prepared_list(tmp_path, script):
    # prepare_folder's split layout, and one name in two folders of a split;
    # infer.py names the predictions a.png, cam1/0001.png, cam2/0001.png
    # (their paths under the common folder of the listed images).
    _labels(tmp_path / "labels", {"train/a.png": 2, "val/a.png": 0, "val/cam1/0001.png": 1,
                                  "val/cam2/0001.png": 2, "val/IMG_7.png": 1})
    _labels(tmp_path / "pred", {"a.png": 0, "cam1/0001.png": 1, "cam2/0001.png": 2,
                                "IMG_7.png": 1})
    lst = tmp_path / "prepared" / "val.txt"
    lst.parent.mkdir()
    lst.write_text("".join("../images/val/%s ../labels/val/%s.png\n" % (name, name.split(".")[0])
                           for name in ("a.jpg", "cam1/0001.jpg", "cam2/0001.jpg", "IMG_7.JPG")))
    js = tmp_path / "r.json"
    assert script("evaluate").main(["--num-classes", "3", "--gt", str(tmp_path / "labels"),
                                    "--pred", str(tmp_path / "pred"), "--list", str(lst),
                                    "--out-json", str(js), "-q"]) == 0
    r = json.loads(js.read_text())
    assert r["num_images"] == 4 and r["pixel_acc"] == 1.0  # each with its own ground truth


def test_a_prepared_list_pairs_with_its_labels_folder_under_the_root_given(tmp_path, script):
    # prepare_voc's val.txt names the images in the VOC tree and the labels
    # in SegmentationClassAug/ beside it: --gt the prepared folder itself.
    _labels(tmp_path / "prep" / "SegmentationClassAug", {"x1.png": 1, "x2.png": 2})
    _labels(tmp_path / "pred", {"x1.png": 1, "x2.png": 2})
    (tmp_path / "pred" / "..png").write_bytes((tmp_path / "pred" / "x1.png").read_bytes())
    lst = tmp_path / "prep" / "val.txt"
    lst.write_text("".join("../VOCdevkit/VOC2012/JPEGImages/%s.jpg SegmentationClassAug/%s.png\n"
                           % (k, k) for k in ("x1", "x2")))
    js = tmp_path / "r.json"
    assert script("evaluate").main(["--num-classes", "3", "--gt", str(tmp_path / "prep"),
                                    "--pred", str(tmp_path / "pred"), "--list", str(lst),
                                    "--out-json", str(js), "-q"]) == 0
    r = json.loads(js.read_text())
    assert r["num_images"] == 2 and r["pixel_acc"] == 1.0


def test_a_folder_scored_against_itself_is_perfect(tmp_path, script):
    _labels(tmp_path / "gt", {"a.png": 0, "sub/b.png": 1})
    js = tmp_path / "r.json"
    assert script("evaluate").main(["--num-classes", "2", "--gt", str(tmp_path / "gt"),
                                    "--pred", str(tmp_path / "gt"), "--out-json", str(js),
                                    "-q"]) == 0
    assert json.loads(js.read_text())["pixel_acc"] == 1.0


def test_ambiguous_and_repeated_entries_are_refused(tmp_path, caplog, script):
    _labels(tmp_path / "gt", {"a.png": 0, "b.png": 1})
    _labels(tmp_path / "pred", {"x/a.png": 0, "y/a.png": 0, "b.png": 1})
    lst = tmp_path / "val.txt"
    lst.write_text("a\nb\nb\n")
    args = ["--num-classes", "2", "--gt", str(tmp_path / "gt"), "--pred", str(tmp_path / "pred"),
            "--list", str(lst), "-q"]
    assert script("evaluate").main(args) == 1
    assert "a: 2 predictions under %s fit it: x/a.png, y/a.png" % (tmp_path / "pred") \
        in caplog.text
    assert "b: %s is b's too; each file pairs once" % (tmp_path / "gt" / "b.png") in caplog.text


def test_pairing_and_size_problems_are_listed_together(tmp_path, caplog, script):
    _labels(tmp_path / "gt", {"a.png": 0, "b.png": 1})
    _write_png(str(tmp_path / "pred" / "a.png"), np.zeros((3, 3)))
    assert script("evaluate").main(["--num-classes", "2", "--gt", str(tmp_path / "gt"),
                                    "--pred", str(tmp_path / "pred"), "-q"]) == 1
    assert "b: no prediction b.png under" in caplog.text
    assert "a: prediction is 3x3, ground truth 2x3" in caplog.text


def test_decoded_maps_in_memory_are_bounded_by_the_threads(tmp_path, monkeypatch):
    # Decoding outran the one thread that scored, and every decoded pair
    # waited in memory (about 4 MB a Cityscapes pair).
    import threading
    import time
    import weakref
    n = 24
    _labels(tmp_path / "gt", {"%02d.png" % i: i % 3 for i in range(n)})
    _labels(tmp_path / "pred", {"%02d.png" % i: 0 for i in range(n)})
    pairs, problems = ev.pair_files(str(tmp_path / "gt"), str(tmp_path / "pred"))
    assert not problems and len(pairs) == n
    live, most, lock = set(), [0], threading.Lock()
    read = ev.imageio.read_label

    def tracked(path):
        label = read(path)
        with lock:
            live.add(id(label))
            most[0] = max(most[0], len(live))
        weakref.finalize(label, lambda key=id(label): live.discard(key))
        return label

    update = ev.ConfusionMatrix.update

    def slow(self, gt, pred):
        time.sleep(0.02)
        return update(self, gt, pred)
    monkeypatch.setattr(ev.imageio, "read_label", tracked)
    monkeypatch.setattr(ev.ConfusionMatrix, "update", slow)
    cm = ev.evaluate_pairs(pairs, 3, jobs=2)
    assert cm.hist.sum() == n * 6
    assert most[0] <= 2 * 2 + 2  # a pair per thread, and the next a thread starts


def test_cityscapes_values_that_are_no_label_id_are_refused(tmp_path, caplog, script):
    name = "city_000000_000019"
    _write_png(str(tmp_path / "gt" / "city" / (name + "_gtFine_labelIds.png")),
               np.full((2, 3), 7), palette=False)
    _write_png(str(tmp_path / "pred" / (name + "_leftImg8bit.png")),
               np.array([[7, 7, 200], [7, 34, 7]]), palette=False)
    assert script("evaluate").main(["--dataset", "cityscapes", "--gt", str(tmp_path / "gt"),
                                    "--pred", str(tmp_path / "pred"), "--pred-format",
                                    "labelid", "-q"]) == 1
    assert "labelIds [34, 200] are not in the cityscapes label table" in caplog.text


def test_cityscapes_train_id_ground_truth_has_its_own_suffix(tmp_path, script):
    # what prepare_cityscapes writes: *_gtFine_labelTrainIds.png
    name = "city_000000_000019"
    _write_png(str(tmp_path / "gt" / "city" / (name + "_gtFine_labelTrainIds.png")),
               np.full((2, 3), 13), palette=False)
    _write_png(str(tmp_path / "pred" / (name + "_leftImg8bit.png")), np.full((2, 3), 13),
               palette=False)
    js = tmp_path / "r.json"
    assert script("evaluate").main(["--dataset", "cityscapes", "--gt", str(tmp_path / "gt"),
                                    "--gt-format", "trainid", "--pred", str(tmp_path / "pred"),
                                    "--out-json", str(js), "-q"]) == 0
    assert json.loads(js.read_text())["class_iou"]["car"] == 1.0


def test_no_report_is_written_when_one_of_them_cannot_be(tmp_path, script, caplog):
    _labels(tmp_path / "gt", {"a.png": 0})
    _labels(tmp_path / "pred", {"a.png": 5})  # scoring would refuse it: named first
    (tmp_path / "afile").write_text("x")
    md = tmp_path / "new.md"
    for where in (str(tmp_path / "afile" / "r.json"), "/proc/fcrn-r.json"):
        assert script("evaluate").main(["--num-classes", "2", "--gt", str(tmp_path / "gt"),
                                        "--pred", str(tmp_path / "pred"), "--out-md", str(md),
                                        "--out-json", where, "-q"]) == 1
        assert not md.exists()
    assert "/proc/fcrn-r.json: cannot write there (" in caplog.text
    assert "prediction has values" not in caplog.text


# --- cityscapesScripts ------------------------------------------------------

def _official():
    # pip install --no-deps cityscapesscripts pyquaternion: the pixel-level
    # evaluation needs only those, numpy and PIL.
    return pytest.importorskip(
        "cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling")


def test_cityscapes_iou_equals_cityscapesscripts(tmp_path):
    cs = _official()
    rng = np.random.RandomState(0)
    to_label = CITYSCAPES.class_to_label_lut()
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    official_args = cs.args
    saved = (official_args.evalInstLevelScore, official_args.quiet)
    official_args.evalInstLevelScore, official_args.quiet = False, True
    try:
        conf = cs.generateMatrix(official_args)
        for i in range(3):
            # labelIds 0..33 (void ids included); train id 16 ("train", labelId 31)
            # never appears in ground truth or prediction, to exercise the NaN rule.
            gt = rng.randint(0, 34, size=(24, 40)).astype(np.uint8)
            gt[gt == 31] = 7
            pred_train = rng.randint(0, 19, size=gt.shape).astype(np.uint8)
            pred_train[pred_train == 16] = 0
            # where the ground truth is a class, mostly predict it right
            t = CITYSCAPES.label_to_class_lut()[gt]
            right = (t != 255) & (rng.rand(*gt.shape) < 0.6)
            pred_train[right] = t[right]
            pred_label = to_label[pred_train]
            pred_label[0, :3] = 0  # a void labelId predicted: a miss for official too
            name = "city_%06d_000019" % i
            g = str(gt_dir / (name + "_gtFine_labelIds.png"))
            p = str(pred_dir / (name + "_leftImg8bit.png"))
            _write_png(g, gt, palette=False)
            _write_png(p, pred_label, palette=False)
            cs.evaluatePair(p, g, conf, None, {}, official_args)
        official = [cs.getIouScoreForLabel(lid, conf, official_args)
                    for lid in CITYSCAPES.label_ids]
    finally:
        official_args.evalInstLevelScore, official_args.quiet = saved

    pairs, problems = ev.pair_files(str(gt_dir), str(pred_dir), "_gtFine_labelIds.png",
                                    "_leftImg8bit.png")
    assert not problems and len(pairs) == 3
    to_classes = CITYSCAPES.classes_of_label_ids
    ours = ev.evaluate_pairs(pairs, 19, gt_map=to_classes, pred_map=to_classes).scores()
    assert math.isnan(official[16]) and math.isnan(ours["class_iou"][16])
    np.testing.assert_allclose(ours["class_iou"], official, rtol=1e-12)
    assert ours["mean_iou"] == pytest.approx(cs.getScoreAverage(
        dict(zip(CITYSCAPES.classes, official)), official_args), rel=1e-12)
