"""One's own dataset (`generic`): scripts/prepare_folder.py on fabricated
3-class folders in both layouts, the classes file, and the whole way from a
folder of images and label PNGs to a trained, evaluated and exported net
through the scripts, each reading what the previous one wrote."""
import hashlib
import json
import logging
import os
import shutil

import numpy as np
import pytest
from PIL import Image

import fake_datasets as fake
from fcrn import datasets, imageio, lists
from fcrn.errors import InputError, UsageError

NAMES = ["img%02d" % i for i in range(10)]


def pairs(path):
    return lists.read_pairs(str(path), need_label=False)


def test_classes_file_round_trip_and_defaults(tmp_path):
    path = str(tmp_path / "c.txt")
    datasets.write_classes(path, ["sky", "red car", "road"], [(1, 2, 3), (4, 5, 6), (7, 8, 9)])
    assert open(path).read().splitlines()[1] == "'red car' 4 5 6"
    assert datasets.read_classes(path) == (("sky", "red car", "road"),
                                           ((1, 2, 3), (4, 5, 6), (7, 8, 9)))
    with open(path, "w") as f:
        f.write("a\nb 10 20 30\nc\n")
    data = datasets.generic(classes_file=path)
    # a line without a colour takes the default map's (VOC's) colour of its index
    assert data.palette()[:3].tolist() == [[0, 0, 0], [10, 20, 30], [0, 128, 0]]
    assert datasets.generic(4).classes == ("class0", "class1", "class2", "class3")
    assert (datasets.generic(4).palette() == datasets.colormap(256)).all()
    with pytest.raises(UsageError, match="--num-classes 2 contradicts the 3 classes"):
        datasets.generic(2, path)
    for text, message in (("a 1 2\n", "expected a name, or a name and R G B"),
                          ("a 1 2 300\n", "colour 1 2 300 is not three integers"),
                          ("a\na\n", "class names given twice: a"), ("", "no class")):
        with open(path, "w") as f:
            f.write(text)
        with pytest.raises(InputError, match=message):
            datasets.read_classes(path)


def test_side_by_side_folder_holds_out_a_reproducible_val(tmp_path, script, caplog):
    labels = fake.make_folder(str(tmp_path / "mine"), NAMES)
    images = str(tmp_path / "mine" / "images")
    argv = ["--images", images, "--labels", images, "--label-suffix", "_mask.png",
            "--classes", str(tmp_path / "mine" / "classes.txt"), "--val-fraction", "0.5",
            "--out", str(tmp_path / "prep")]
    assert script("prepare_folder").main(argv) == 0
    train, val = pairs(tmp_path / "prep" / "train.txt"), pairs(tmp_path / "prep" / "val.txt")
    # the masks are labels, not images; val is about half (by hashes, not counted)
    assert len(train) + len(val) == 10 and 2 <= len(val) <= 8
    for image, label in train + val:
        name = os.path.basename(image)[:-len(".jpg")]
        assert os.path.normpath(label) == os.path.join(images, name + "_mask.png")
        np.testing.assert_array_equal(imageio.read_label(label), labels[name])
    manifest = json.load(open(str(tmp_path / "prep" / "manifest.json")))
    assert manifest["num_classes"] == 3
    assert manifest["counts"] == {"train": len(train), "val": len(val)}
    assert datasets.read_classes(str(tmp_path / "prep" / "classes.txt")) == (
        tuple(n for n, _ in fake.FOLDER_CLASSES), tuple(c for _, c in fake.FOLDER_CLASSES))
    caplog.clear()
    caplog.set_level(logging.INFO)
    assert script("prepare_folder").main(argv) == 0
    assert "is up to date" in caplog.text
    # More images: the val images chosen before stay val (chosen by path hashes).
    fake.make_folder(str(tmp_path / "mine"), ["new%02d" % i for i in range(10)], seed=5)
    assert script("prepare_folder").main(argv) == 0
    assert set(val) <= set(pairs(tmp_path / "prep" / "val.txt"))
    assert set(train) <= set(pairs(tmp_path / "prep" / "train.txt"))


def test_train_and_val_folders_are_the_splits(tmp_path, script):
    split = {"train": NAMES[:6], "val": NAMES[6:9], "test": NAMES[9:]}
    fake.make_folder(str(tmp_path / "mine"), split, layout="split")
    root = tmp_path / "mine"
    shutil.rmtree(str(root / "labels" / "test"))  # test images without labels
    assert script("prepare_folder").main(
        ["--images", str(root / "images"), "--labels", str(root / "labels"),
         "--num-classes", "3", "--out", str(tmp_path / "prep")]) == 0
    for name, names in split.items():
        got = pairs(tmp_path / "prep" / (name + ".txt"))
        assert [os.path.basename(i)[:-4] for i, _ in got] == names
        assert all((lbl is None) == (name == "test") for _, lbl in got)
    assert datasets.read_classes(str(tmp_path / "prep" / "classes.txt")) == (
        ("class0", "class1", "class2"), None)


def test_bad_pairs_are_all_named_and_nothing_is_written(tmp_path, script, caplog):
    fake.make_folder(str(tmp_path / "mine"), NAMES)
    images = tmp_path / "mine" / "images"
    Image.fromarray(np.full((40, 48), 3, np.uint8)).save(str(images / "img01_mask.png"))
    os.remove(str(images / "img02_mask.png"))
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(str(images / "img03_mask.png"))
    out = tmp_path / "prep"
    assert script("prepare_folder").main(
        ["--images", str(images), "--labels", str(images), "--label-suffix", "_mask.png",
         "--num-classes", "3", "--out", str(out)]) == 1
    for message in ("3 bad input file(s)", "img01_mask.png: label values [3] outside [0, 3)",
                    "img02.jpg: no label (looked for %s)" % (images / "img02_mask.png"),
                    "img03_mask.png: label size 10x10 differs from image"):
        assert message in caplog.text
    assert not out.exists()


def test_own_dataset_from_folder_to_trained_evaluated_exported_net(tmp_path, script,
                                                                   monkeypatch):
    """prepare_folder -> make_net --classes -> train -> infer --classes --list
    -> evaluate --classes --list -> export_onnx, each on what the previous wrote,
    run as the README's walkthrough runs them (from one working folder)."""
    monkeypatch.chdir(tmp_path)
    fake.make_folder("mine", NAMES, size=(48, 56))
    assert script("prepare_folder").main(
        ["--images", "mine/images", "--labels", "mine/images", "--label-suffix", "_mask.png",
         "--classes", "mine/classes.txt", "--val-fraction", "0.2", "--out", "data/mine"]) == 0
    assert script("make_net").main(
        ["--classes", "data/mine/classes.txt", "--train-source", "data/mine/train.txt",
         "--val-source", "data/mine/val.txt", "--depth", "50", "--kernel", "3",
         "--dilation", "2", "--bn-stats", "batch", "--crop", "48", "--iter-size", "1",
         "--base-lr", "0.01", "--max-iter", "12", "--snapshot", "12", "--test-interval", "6",
         "--display", "1", "--random-seed", "1", "--snapshot-prefix", "snap/mine",
         "--out", "nets/mine"]) == 0
    with open("nets/mine/solver.prototxt") as f:
        solver = f.read()
    from fcrn import caffeio
    assert "solver_mode: %s" % ("GPU" if caffeio.gpu_count() else "CPU") in solver
    val = pairs("data/mine/val.txt")
    assert "test_iter: %d\n" % len(val) in solver   # counted from the val list
    deploy = caffeio.read_net_param("nets/mine/deploy.prototxt")
    assert [l.convolution_param.num_output for l in deploy.layer if l.name == "score"] == [3]
    os.makedirs("snap")
    assert script("train").main(["--solver", "nets/mine/solver.prototxt", "-q"]) == 0
    weights = "snap/mine_iter_12.caffemodel"
    log = json.load(open("snap/mine.json"))
    assert [i for i, _ in log["train_loss"]] == list(range(13))
    assert np.isfinite([v for _, v in log["train_loss"]]).all()
    assert [i for i, _ in log["test"]["accuracy"]] == [6, 12]

    assert script("infer").main(["--net", "nets/mine/deploy.prototxt", "--weights", weights,
                                 "--classes", "data/mine/classes.txt", "--list",
                                 "data/mine/val.txt", "--out", "out/val", "-q"]) == 0
    for image, _ in val:
        with Image.open(os.path.join("out/val", os.path.basename(image)[:-4] + ".png")) as im:
            assert im.mode == "P" and im.size == (56, 48)
            assert np.array(im).max() < 3
            assert im.getpalette()[:9] == [v for _, c in fake.FOLDER_CLASSES for v in c]

    assert script("evaluate").main(["--classes", "data/mine/classes.txt", "--gt",
                                    "mine/images", "--gt-suffix", "_mask.png", "--pred",
                                    "out/val", "--list", "data/mine/val.txt", "--out-json",
                                    "val.json", "-q"]) == 0
    report = json.load(open("val.json"))
    assert report["classes"] == ["background", "red disc", "square"]
    assert report["num_images"] == len(val)
    valid = sum(int((imageio.read_label(lbl) != 255).sum()) for _, lbl in val)
    assert report["num_pixels"] == valid == np.sum(report["confusion_matrix"])

    assert script("export_onnx").main(["--net", "nets/mine/deploy.prototxt", "--weights",
                                       weights, "--out", "mine.onnx", "--argmax"]) == 0
    import onnx
    assert [o.name for o in onnx.load("mine.onnx").graph.output] == ["score", "label"]


def test_lists_name_the_files_when_the_output_is_reached_through_a_link(tmp_path, script):
    """--out under a symbolic link to another folder: a list's relative paths
    are opened from where the list really lies, so they must be counted
    from there."""
    fake.make_folder(str(tmp_path / "mine"), NAMES)
    (tmp_path / "elsewhere" / "deep").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere" / "deep")
    images = str(tmp_path / "mine" / "images")
    assert script("prepare_folder").main(
        ["--images", images, "--labels", images, "--label-suffix", "_mask.png",
         "--num-classes", "3", "--out", str(tmp_path / "link" / "prep")]) == 0
    for image, label in pairs(tmp_path / "link" / "prep" / "train.txt"):
        assert os.path.isfile(image) and os.path.isfile(label), image


def prepare(script, root, *options):
    return script("prepare_folder").main(
        ["--images", str(root / "images"), "--labels", str(root / "labels"),
         "--num-classes", "3", "--out", str(root / "prep")] + list(options))


def split_names(root, split):
    return [os.path.basename(i)[:-4] for i, _ in pairs(root / "prep" / (split + ".txt"))]


def test_split_folders_by_other_names_or_without_val(tmp_path, script, caplog):
    """ADE20K's training/validation are the splits (they were pooled and
    split again by hash, val images trained on); a train folder with only
    test beside it gives val from train alone (test images were pooled)."""
    ade = tmp_path / "ade"
    fake.make_folder(str(ade), {"training": NAMES[:6], "validation": NAMES[6:]}, layout="split")
    assert prepare(script, ade) == 0
    assert split_names(ade, "train") == NAMES[:6] and split_names(ade, "val") == NAMES[6:]

    # Any case; the labels may lie inside the images folder, at any depth.
    cased = tmp_path / "cased"
    fake.make_folder(str(cased), {"Train": NAMES[:6], "VAL": NAMES[6:]}, layout="split")
    os.makedirs(str(cased / "images" / "gt"))
    os.rename(str(cased / "labels"), str(cased / "images" / "gt" / "semantic"))
    assert script("prepare_folder").main(
        ["--images", str(cased / "images"), "--labels", str(cased / "images" / "gt" / "semantic"),
         "--num-classes", "3", "--out", str(cased / "prep")]) == 0
    assert split_names(cased, "train") == NAMES[:6] and split_names(cased, "val") == NAMES[6:]

    # Val held out of train, by the same hashes as when every image was pooled
    # (paths relative to the images folder), so that an image keeps its split.
    mm = tmp_path / "mm"
    fake.make_folder(str(mm), {"train": NAMES[:8], "test": NAMES[8:]}, layout="split")
    assert prepare(script, mm, "--val-fraction", "0.3") == 0
    train, val = split_names(mm, "train"), split_names(mm, "val")
    share = {n: int.from_bytes(hashlib.sha1(("train/%s.jpg" % n).encode()).digest()[:8], "big")
             / 2.0 ** 64 for n in NAMES[:8]}
    assert val == sorted(n for n in NAMES[:8] if share[n] < 0.3)
    assert sorted(train + val) == NAMES[:8]
    assert split_names(mm, "test") == NAMES[8:]
    assert json.load(open(str(mm / "prep" / "manifest.json")))["splits"] == \
        "folders, val fraction 0.3 of train"

    for layout, message in (
            ({"val": NAMES[:3], "test": NAMES[3:]}, "split folder(s) test, val but no train "
                                                    "folder (train or training)"),
            ({"train": NAMES[:3], "Training": NAMES[3:]}, "folders Training, train each "
                                                          "name the train split")):
        root = tmp_path / ("bad%d" % len(caplog.records))
        fake.make_folder(str(root), layout, layout="split")
        caplog.clear()
        assert prepare(script, root) == 1
        assert message in caplog.text and not (root / "prep").exists()

    # An image beside the split folders would be in no split.
    shutil.copy(str(ade / "images" / "training" / "img00.jpg"), str(ade / "images" / "x.jpg"))
    caplog.clear()
    assert prepare(script, ade) == 1
    assert "1 image(s) outside the split folders training, validation" in caplog.text
    assert str(ade / "images" / "x.jpg") in caplog.text


def test_a_label_named_by_two_images_is_refused(tmp_path, script, caplog):
    """a.jpg and a.png (two pictures) both took labels/a.png, and could land
    in different splits."""
    root = tmp_path / "mine"
    fake.make_folder(str(root), {"": NAMES[:4]}, layout="split")
    shutil.copy(str(root / "images" / "img01.jpg"), str(root / "images" / "img01.png"))
    assert prepare(script, root) == 1
    assert "1 label(s) named by more than one image" in caplog.text
    assert "%s: label of %s, %s" % (root / "labels" / "img01.png", root / "images" / "img01.jpg",
                                    root / "images" / "img01.png") in caplog.text


def linked_store(tmp_path):
    """(root, store): root's images and labels (3 pairs) each with a link
    `more` to store's (3 more)."""
    root, store = tmp_path / "mine", tmp_path / "store"
    fake.make_folder(str(root), {"": NAMES[:3]}, layout="split")
    fake.make_folder(str(store), {"": NAMES[3:6]}, layout="split")
    for kind in ("images", "labels"):
        (root / kind / "more").symlink_to(store / kind)
    return root, store


def test_linked_folders_are_followed_once(tmp_path, script):
    """Images in a linked sub-folder were left out by prepare_folder, infer
    and evaluate alike; a link back to an ancestor adds nothing."""
    root, store = linked_store(tmp_path)
    for kind in ("images", "labels"):
        (root / kind / "loop").symlink_to(root / kind)
    # A link to a folder inside, sorting before it, adds nothing: its files
    # keep their own paths (their labels are found, their split is kept).
    (root / "images" / "batch").mkdir()
    (root / "labels" / "batch").mkdir()
    for kind, ext in (("images", ".jpg"), ("labels", ".png")):
        os.rename(str(root / kind / ("img00" + ext)), str(root / kind / "batch" / ("img00" + ext)))
    (root / "images" / "alias").symlink_to("batch")
    # One mask for two exposures, through a link: two paths, one file.
    shutil.copy(str(root / "images" / "img01.jpg"), str(root / "images" / "img01_dark.jpg"))
    (root / "labels" / "img01_dark.png").symlink_to("img01.png")
    assert prepare(script, root, "--val-fraction", "0.3") == 0
    found = [os.path.realpath(i) for split in ("train", "val")
             for i, _ in pairs(root / "prep" / (split + ".txt"))]
    assert sorted(found) == sorted(
        [str(root / "images" / n) for n in ("batch/img00.jpg", "img01.jpg", "img01_dark.jpg",
                                            "img02.jpg")] +
        [str(store / "images" / (n + ".jpg")) for n in NAMES[3:6]])

    from fcrn import evaluate
    from fcrn.infer import naming
    index = evaluate.FileIndex(str(root / "labels"), ".png", "ground truth")
    assert sorted(parts[-1] for parts in index.ids()) == sorted(NAMES[:6] + ["img01_dark"])
    items, _ = naming.list_inputs([str(root / "images")])
    assert sorted(name for _, name in items) == \
        ["batch/img00", "img01", "img01_dark", "img02"] + ["more/" + n for n in NAMES[3:6]]


def test_images_reached_through_links_are_inputs(tmp_path, script, caplog):
    """--out over a folder that a link makes part of the images was replaced
    with --force (the images deleted); a link from one split's folder into
    another's put images in both."""
    root, store = linked_store(tmp_path)
    assert script("prepare_folder").main(
        ["--images", str(root / "images"), "--labels", str(root / "labels"), "--num-classes",
         "3", "--out", str(store), "--force"]) == 2
    assert "refusing to write over an input (even with --force)" in caplog.text
    assert sorted(os.listdir(str(store / "images"))) == [n + ".jpg" for n in NAMES[3:6]]

    split = tmp_path / "split"
    fake.make_folder(str(split), {"train": NAMES[:3], "val": NAMES[3:6]}, layout="split")
    for kind in ("images", "labels"):
        (split / kind / "train" / "extra").symlink_to(split / kind / "val")
    caplog.clear()
    assert prepare(script, split) == 1
    assert "3 image(s) in more than one split" in caplog.text
    assert "%s: in train and val" % (split / "images" / "val" / "img03.jpg") in caplog.text


def test_class_pixels_counted_and_absent_classes_named(tmp_path, script, caplog):
    """Binary masks saved as 0/255 with 2 classes: the foreground was 'not
    scored' without a word, and all-255 labels trained on nothing."""
    root = tmp_path / "masks"
    for i, name in enumerate(NAMES[:4]):
        os.makedirs(str(root / "labels"), exist_ok=True)
        os.makedirs(str(root / "images"), exist_ok=True)
        mask = np.zeros((8, 10), np.uint8)
        mask[:, :3 + i] = 255
        Image.fromarray(mask).save(str(root / "labels" / (name + ".png")))
        Image.fromarray(np.full((8, 10, 3), 9 * i, np.uint8)).save(
            str(root / "images" / (name + ".png")))
    argv = ["--images", str(root / "images"), "--labels", str(root / "labels"),
            "--num-classes", "2", "--val-fraction", "0.5", "--out", str(root / "prep")]
    assert script("prepare_folder").main(argv) == 0
    assert "class(es) with no pixel in the train split: class1; the labels hold only 0 and " \
           "255, which marks pixels not scored: binary masks saved as 0/255 need their " \
           "foreground as 1" in caplog.text
    pixels = json.load(open(str(root / "prep" / "manifest.json")))["pixels"]
    for split in ("train", "val"):
        masks = [imageio.read_label(lbl) for _, lbl in pairs(root / "prep" / (split + ".txt"))]
        assert pixels[split] == {"classes": [sum(int((m == 0).sum()) for m in masks), 0],
                                 "ignored": sum(int((m == 255).sum()) for m in masks)}
    for name in NAMES[:4]:
        Image.fromarray(np.full((8, 10), 255, np.uint8)).save(
            str(root / "labels" / (name + ".png")))
    caplog.clear()
    assert script("prepare_folder").main(argv) == 1
    assert "train split: no labelled pixel (every label pixel is 255, not scored)" in caplog.text


def test_images_turned_by_their_exif_orientation_are_named(tmp_path, script, caplog):
    """Decoding turns a JPEG by its EXIF orientation (as viewers show it,
    as training reads it), and not its label: a square one's label drawn on
    the stored pixels fitted silently; a non-square one's was refused for its
    size alone."""
    root = tmp_path / "photos"
    for kind in ("images", "labels"):
        (root / kind).mkdir(parents=True)

    def photo(name, height, width, orientation, ext=".jpg"):
        pixels = np.zeros((height, width, 3), np.uint8)
        pixels[:, :width // 4] = 255  # a left edge, which a turn moves
        im = Image.fromarray(pixels)
        exif = im.getexif()
        if orientation:
            exif[0x0112] = orientation
        im.save(str(root / "images" / (name + ext)), exif=exif)
        Image.fromarray(np.ones((height, width), np.uint8)).save(
            str(root / "labels" / (name + ".png")))
    photo("square", 40, 40, 6)
    photo("plain", 40, 40, 1)
    photo("other", 40, 40, None)
    photo("drawn", 40, 40, 6, ".png")  # OpenCV turns PNGs by their eXIf chunk too
    assert prepare(script, root) == 0
    assert "2 image(s) turned by their EXIF orientation" in caplog.text
    for name in ("drawn.png", "square.jpg"):
        assert "%s (orientation 6)" % (root / "images" / name) in caplog.text
    assert "plain.jpg" not in caplog.text and "other.jpg" not in caplog.text

    photo("wide", 40, 80, 6)
    caplog.clear()
    assert prepare(script, root) == 1
    assert "wide.png: label size 80x40 differs from image %s (40x80); the image is turned by " \
           "its EXIF orientation 6, as viewers show it: draw the label on the turned image" \
           % (root / "images" / "wide.jpg") in caplog.text


def test_outputs_of_earlier_checks_are_prepared_again(tmp_path, script, monkeypatch, caplog):
    """An output made before the checks it now passes (the format is the
    same, so it stays the tool's own) is not taken as up to date."""
    from fcrn.data import folder
    root = tmp_path / "mine"
    fake.make_folder(str(root), {"": NAMES[:4]}, layout="split")
    caplog.set_level(logging.INFO)
    monkeypatch.setattr(folder, "CHECKS", folder.CHECKS - 1)
    assert prepare(script, root) == 0
    monkeypatch.undo()
    caplog.clear()
    assert prepare(script, root) == 0
    assert "is up to date" not in caplog.text
    assert prepare(script, root) == 0
    assert "is up to date" in caplog.text


def test_skipping_every_train_pair_names_the_split(tmp_path, script, caplog):
    root = tmp_path / "mine"
    fake.make_folder(str(root), {"train": NAMES[:3], "val": NAMES[3:5]}, layout="split")
    for name in NAMES[:3]:
        Image.fromarray(np.full((40, 48), 7, np.uint8)).save(
            str(root / "labels" / "train" / (name + ".png")))
    assert prepare(script, root, "--skip-bad") == 1
    assert "split train: no usable image" in caplog.text


def test_macos_metadata_files_are_not_images(tmp_path, script, caplog):
    """A folder unzipped from macOS holds ._NAME beside each file (and
    __MACOSX/): they were taken for images and refused as unreadable, and
    for labels without an image."""
    root = tmp_path / "mine"
    fake.make_folder(str(root), {"": NAMES[:4]}, layout="split")
    for folder in (root / "images", root / "images" / "__MACOSX", root / "labels"):
        folder.mkdir(exist_ok=True)
        for name in NAMES[:4]:
            for ext in (".jpg", ".png"):
                (folder / ("._" + name + ext)).write_bytes(b"\x00\x05\x16\x07 Mac OS X")
    assert prepare(script, root) == 0
    assert "label(s) with no image" not in caplog.text
    found = pairs(root / "prep" / "train.txt") + pairs(root / "prep" / "val.txt")
    assert sorted(os.path.basename(i) for i, _ in found) == [n + ".jpg" for n in NAMES[:4]]
    from fcrn import evaluate
    from fcrn.infer import naming
    items, _ = naming.list_inputs([str(root / "images")])
    assert sorted(name for _, name in items) == NAMES[:4]
    index = evaluate.FileIndex(str(root / "labels"), ".png", "ground truth")
    assert sorted(parts[-1] for parts in index.ids()) == NAMES[:4]
