"""Miniature dataset trees with the real layouts and file formats, built by
the tests themselves (nothing is downloaded):

- VOCdevkit/VOC2012: JPEGImages/*.jpg, SegmentationClass/*.png as palette
  ("P") PNGs with the VOC colormap and a 255 void band, ImageSets/Segmentation;
- benchmark_RELEASE/dataset: img/*.jpg, cls/*.mat holding the MATLAB struct
  GTcls (Segmentation, Boundaries, CategoriesPresent) written by scipy,
  train.txt, val.txt;
- Cityscapes: leftImg8bit/<split>/<city>/*_leftImg8bit.png and
  gtFine/<split>/<city>/*_gtFine_{labelIds,color,instanceIds}.png, *_polygons.json;
- colour-coded pairs for the data layer (see `coded_pair`).
"""
import json
import os

import cv2
import numpy as np

from fcrn import datasets


def _blocks(rng, h, w, values, block=8):
    """A label map of constant blocks drawn from `values`."""
    small = rng.choice(values, size=(-(-h // block), -(-w // block)))
    return np.kron(small, np.ones((block, block), np.int64))[:h, :w].astype(np.uint8)


def _jpeg(path, rng, h, w):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    cv2.imwrite(path, rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def write_palette_png(path, lbl):
    from PIL import Image
    im = Image.fromarray(lbl, mode="P")
    im.putpalette(datasets.get("voc").palette().ravel().tolist())
    os.makedirs(os.path.dirname(path), exist_ok=True)
    im.save(path)


def write_sbd_mat(path, seg):
    import scipy.io
    os.makedirs(os.path.dirname(path), exist_ok=True)
    present = np.unique(seg[(seg > 0) & (seg < 255)]).astype(np.uint8).reshape(-1, 1)
    boundaries = np.empty((20, 1), dtype=object)
    for k in range(20):
        boundaries[k, 0] = np.zeros(seg.shape, np.uint8)
    scipy.io.savemat(path, {"GTcls": {"Segmentation": seg, "Boundaries": boundaries,
                                      "CategoriesPresent": present}},
                     do_compression=True)


def make_voc(root, train, val, seed=0, size=(30, 40)):
    """VOCdevkit/VOC2012 under root; returns {id: label array}."""
    rng = np.random.default_rng(seed)
    voc = os.path.join(root, "VOCdevkit", "VOC2012")
    labels = {}
    for i in sorted(set(train) | set(val)):
        h, w = size
        _jpeg(os.path.join(voc, "JPEGImages", i + ".jpg"), rng, h, w)
        lbl = _blocks(rng, h, w, np.arange(21))
        lbl[0, :] = 255  # the void band
        write_palette_png(os.path.join(voc, "SegmentationClass", i + ".png"), lbl)
        labels[i] = lbl
    sets = os.path.join(voc, "ImageSets", "Segmentation")
    os.makedirs(sets, exist_ok=True)
    for name, ids in (("train", train), ("val", val), ("trainval", list(train) + list(val))):
        with open(os.path.join(sets, name + ".txt"), "w") as f:
            f.write("".join(i + "\n" for i in ids))
    return labels


def make_sbd(root, train, val, seed=1, size=(30, 40), voc_root=None):
    """benchmark_RELEASE/dataset under root; returns {id: Segmentation}.
    Images also go into the VOC tree's JPEGImages when voc_root is given, as
    on the real data (SBD images are VOC images)."""
    rng = np.random.default_rng(seed)
    ds = os.path.join(root, "benchmark_RELEASE", "dataset")
    labels = {}
    for i in sorted(set(train) | set(val)):
        h, w = size
        _jpeg(os.path.join(ds, "img", i + ".jpg"), rng, h, w)
        if voc_root is not None:
            dst = os.path.join(voc_root, "VOCdevkit", "VOC2012", "JPEGImages", i + ".jpg")
            if not os.path.exists(dst):
                _jpeg(dst, rng, h, w)
        seg = _blocks(rng, h, w, np.arange(21))
        write_sbd_mat(os.path.join(ds, "cls", i + ".mat"), seg)
        labels[i] = seg
    for name, ids in (("train", train), ("val", val)):
        with open(os.path.join(ds, name + ".txt"), "w") as f:
            f.write("".join(i + "\n" for i in ids))
    return labels


def cityscapes_stem(city, k):
    return "%s_%06d_%06d" % (city, k, 19)


def make_cityscapes(root, splits, seed=2, size=(16, 32)):
    """splits: {split: {city: count}}; labels only for train and val.
    Returns {stem: labelIds array}."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, cities in splits.items():
        for city, n in cities.items():
            for k in range(n):
                stem = cityscapes_stem(city, k)
                h, w = size
                img = os.path.join(root, "leftImg8bit", split, city, stem + "_leftImg8bit.png")
                os.makedirs(os.path.dirname(img), exist_ok=True)
                cv2.imwrite(img, rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
                if split == "test":
                    continue
                gt = os.path.join(root, "gtFine", split, city, stem)
                os.makedirs(os.path.dirname(gt), exist_ok=True)
                ids = _blocks(rng, h, w, np.arange(34), block=4)
                cv2.imwrite(gt + "_gtFine_labelIds.png", ids)
                cv2.imwrite(gt + "_gtFine_color.png", np.dstack([ids] * 3))
                cv2.imwrite(gt + "_gtFine_instanceIds.png", ids.astype(np.uint16) * 1000)
                with open(gt + "_gtFine_polygons.json", "w") as f:
                    json.dump({"imgHeight": h, "imgWidth": w, "objects": []}, f)
                out[stem] = ids
    return out


# ------------------------------------------------ colour-coded data for the layer

def class_value(c):
    """Red channel value that encodes label c (distinct, well separated)."""
    return 20 + 10 * int(c)


def coded_pair(rng, h, w, num_classes, block=16):
    """An image whose pixels say where they come from and what they are:
    B = 2 * (x mod 128) (a horizontal ramp: shows mirroring and scale),
    G = 2 * (y mod 128), R = class_value(label); label = constant blocks."""
    lbl = _blocks(rng, h, w, np.arange(num_classes), block)
    y, x = np.mgrid[0:h, 0:w]
    img = np.dstack([2 * (x % 128), 2 * (y % 128), 20 + 10 * lbl.astype(np.int64)]).astype(np.uint8)
    return img, lbl


def write_coded_list(root, n, size=(40, 50), num_classes=5, seed=3, name="list.txt",
                     sizes=None):
    """n coded PNG pairs (random labels, so each pair is distinct) under root
    and a list file; returns (list path, [(image, label)] arrays)."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "img"), exist_ok=True)
    os.makedirs(os.path.join(root, "lbl"), exist_ok=True)
    lines, arrays = [], []
    for k in range(n):
        h, w = sizes[k] if sizes else size
        img, lbl = coded_pair(rng, h, w, num_classes)
        cv2.imwrite(os.path.join(root, "img", "%03d.png" % k), img)
        cv2.imwrite(os.path.join(root, "lbl", "%03d.png" % k), lbl)
        lines.append("img/%03d.png lbl/%03d.png\n" % (k, k))
        arrays.append((img, lbl))
    path = os.path.join(root, name)
    with open(path, "w") as f:
        f.writelines(lines)
    return path, arrays


# ------------------------------------------------ one's own dataset (generic)

# Three classes, one name with a blank (quoted in the file), colours given.
FOLDER_CLASSES = [("background", (0, 0, 0)), ("red disc", (220, 20, 60)),
                  ("square", (0, 0, 255))]


def shapes_pair(rng, h, w):
    """A textured image with a disc (class 1) and a square (class 2) of their
    own colours, and its label map; its top row is 255 (not scored)."""
    img = rng.integers(60, 120, (h, w, 3)).astype(np.uint8)
    lbl = np.zeros((h, w), np.uint8)
    y, x = np.mgrid[0:h, 0:w]
    cy, cx, r = rng.integers(h // 4, 3 * h // 4), rng.integers(w // 4, w // 2), h // 5
    disc = (y - cy) ** 2 + (x - cx) ** 2 <= r * r
    sy, sx, s = rng.integers(0, h - h // 3), rng.integers(w // 2, w - w // 4), h // 3
    square = (y >= sy) & (y < sy + s) & (x >= sx) & (x < sx + s)
    img[disc], lbl[disc] = (60, 20, 220), 1
    img[square], lbl[square] = (255, 0, 0), 2
    lbl[0] = 255
    return img, lbl


def make_folder(root, names, seed=4, size=(40, 48), layout="side-by-side"):
    """One's own dataset under root: images and label PNGs, with
    layout "side-by-side" (images/NAME.jpg beside images/NAME_mask.png, one
    folder) or "split" (images/{train,val}/NAME.jpg, labels/{train,val}/NAME.png;
    `names` is then {split: [names]}), and classes.txt. Returns {name: label}."""
    rng = np.random.default_rng(seed)
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "classes.txt"), "w") as f:
        f.write("".join("%s %d %d %d\n" % (("'%s'" % n) if " " in n else n, *rgb)
                        for n, rgb in FOLDER_CLASSES))
    items = [(split, n) for split, ns in names.items() for n in ns] \
        if layout == "split" else [("", n) for n in names]
    labels = {}
    for split, name in items:
        img, lbl = shapes_pair(rng, *size)
        if layout == "split":
            image = os.path.join(root, "images", split, name + ".jpg")
            label = os.path.join(root, "labels", split, name + ".png")
        else:
            image = os.path.join(root, "images", name + ".jpg")
            label = os.path.join(root, "images", name + "_mask.png")
        os.makedirs(os.path.dirname(image), exist_ok=True)
        os.makedirs(os.path.dirname(label), exist_ok=True)
        cv2.imwrite(image, img, [cv2.IMWRITE_JPEG_QUALITY, 95])
        cv2.imwrite(label, lbl)
        labels[name] = lbl
    return labels
