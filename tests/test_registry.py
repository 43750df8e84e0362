"""The dataset registry (fcrn/datasets): the facts every other module reads,
checked against their sources (the VOC devkit's colour map, the installed
cityscapesScripts), and shipped with the package."""
import glob
import os
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from fcrn import datasets
from conftest import ROOT


def test_voc_classes_and_devkit_colours():
    voc = datasets.get("voc")
    assert voc.num_classes == 21 and voc.ignore_label == 255
    assert voc.classes[15] == "person" and voc.classes[20] == "tvmonitor"
    pal = voc.palette()
    assert pal.shape == (256, 3) and pal.dtype == np.uint8
    # VOCcolormap values quoted from the devkit's documentation
    assert tuple(pal[1]) == (128, 0, 0) and tuple(pal[15]) == (192, 128, 128)
    assert tuple(pal[20]) == (0, 64, 128) and tuple(pal[255]) == (224, 224, 192)
    assert len({tuple(p) for p in pal}) == 256
    assert dict(voc.splits) == {"train_aug": 10582, "train": 1464, "val": 1449}


def test_cityscapes_table_is_consistent_and_its_luts_invert():
    cs = datasets.get("cityscapes")
    assert cs.num_classes == 19 and cs.classes[0] == "road" and cs.classes[18] == "bicycle"
    assert tuple(cs.palette()[0]) == (128, 64, 128)
    to_class, to_label = cs.label_to_class_lut(), cs.class_to_label_lut()
    np.testing.assert_array_equal(to_class[to_label[np.arange(19)]], np.arange(19))
    assert (to_class[[0, 1, 6, 9, 10, 14, 15, 16, 18, 29, 30]] == 255).all()
    assert cs.split_size(cs.eval_split) == 500


def test_cityscapes_table_equals_cityscapesscripts():
    labels = pytest.importorskip("cityscapesscripts.helpers.labels").labels
    official = [{"id": l.id, "name": l.name, "trainId": l.trainId, "color": list(l.color)}
                for l in labels]
    assert datasets.table("cityscapes")["labels"] == official
    train = sorted((l for l in labels if 0 <= l.trainId < 255), key=lambda l: l.trainId)
    cs = datasets.get("cityscapes")
    assert cs.classes == tuple(l.name for l in train)
    assert cs.label_ids == tuple(l.id for l in train)
    assert [tuple(c) for c in cs.palette()[:19]] == [tuple(l.color) for l in train]


def test_unknown_dataset_names_the_known_ones():
    with pytest.raises(ValueError, match="unknown dataset 'ade'; known: cityscapes, voc"):
        datasets.get("ade")


def test_wheel_ships_the_registry_and_the_constraints(tmp_path):
    """A wheel built from setup.py carries the JSON files (an installed
    package, not only this checkout, finds its datasets) and requires the
    versions constraints.txt allows (a bare `pip install` must not pull a
    numpy 2 or protobuf 5 that break pycaffe). Built from a copy: setuptools
    writes its build tree into the source folder."""
    src = tmp_path / "src"
    shutil.copytree(os.path.join(ROOT, "fcrn"), str(src / "fcrn"),
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.py", "constraints.txt"):
        shutil.copy(os.path.join(ROOT, name), str(src))
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                             "--no-build-isolation", "-q", "-w", str(tmp_path), str(src)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    wheel, = glob.glob(str(tmp_path / "fcrn-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for name in datasets.names():
        assert "fcrn/datasets/%s.json" % name in names
    assert not [n for n in names if n.startswith("fcrn/demo/") and n.endswith(".json")]
    assert os.path.isfile(os.path.join(datasets.HERE, "voc.json"))
    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA")))
    required = {}
    for line in metadata.decode().splitlines():
        if line.startswith("Requires-Dist: "):
            r = Requirement(line[len("Requires-Dist: "):])
            required[r.name.lower()] = r.specifier
    with open(os.path.join(ROOT, "constraints.txt")) as f:
        pinned = [Requirement(line.split("#")[0].strip()) for line in f
                  if line.split("#")[0].strip()]
    for name in ("numpy", "protobuf", "opencv-python-headless", "onnx", "onnxruntime"):
        assert name in {r.name for r in pinned}
    for r in pinned:
        if r.name in required:
            assert required[r.name] == r.specifier, r.name
    assert required["numpy"] == SpecifierSet("<1.25")
    assert not required["numpy"].contains("2.0.0") and not required["protobuf"].contains("5.0")
