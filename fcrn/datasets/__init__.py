"""The dataset registry: what the project knows about each dataset, in one
JSON file per dataset beside this module (voc.json, cityscapes.json).

The generator (classes, default crop and lists, validation size), the data
layer and the preparation scripts (ignore label, Cityscapes id mapping,
expected split sizes), inference (palettes), evaluation (class names) and the
demo all read it from here. A file holds:

  name, title, source    what it is and where the facts come from
  ignore_label           the label of pixels that are not scored (255)
  classes                class names in label order (or derived from labels)
  colours                RGB per class (optional; default: `colormap`)
  labels                 Cityscapes-style table {id, name, trainId, color}:
                         classes and colours are the rows with a train id
  splits                 image count of each split of the full dataset
  eval_split             the split the paper scores (its size is the test_iter)
  crop                   the default training crop
  lists                  default train/val lists (scripts/prepare_*.py --out data/...)

A dataset of one's own is `generic` (`generic()`, `resolve()`): its classes
come from a classes file (`read_classes`: one class per line in label order,
`name` or `name R G B`) or are only counted (`class0`, `class1`, ...); its
colours default to `colormap`; scripts/prepare_folder.py writes its lists.
"""
import dataclasses
import functools
import json
import os
from typing import Optional

import numpy as np

from .. import lists
from ..errors import InputError, UsageError

# BGR mean that FCN and DeepLab subtract (ILSVRC's, as in the VGG nets), the
# input normalisation of every net here: within about one level per channel
# of He et al.'s ResNet_mean.binaryproto, which the paper does not name.
MEAN_BGR = (104.008, 116.669, 122.675)
# Label of pixels that are not scored (VOC's void band, Cityscapes' unused ids).
IGNORE_LABEL = 255

HERE = os.path.dirname(os.path.abspath(__file__))
GENERIC = "generic"
# Default training crop of a generic dataset: VOC's, a photo's size.
GENERIC_CROP = 500


def colormap(n=256):
    """The PASCAL VOC devkit colour map (RGB rows): the bits of the label
    spread over R, G, B from the most significant bit down (1 = dark red,
    255 = cream). The default palette of any dataset without colours."""
    pal = np.zeros((n, 3), np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal[i] = r, g, b
    return pal


@dataclasses.dataclass(frozen=True)
class Dataset:
    name: str
    classes: tuple
    ignore_label: int = IGNORE_LABEL
    colours: Optional[tuple] = None
    label_ids: Optional[tuple] = None   # labelId of each class (Cityscapes train ids)
    table_ids: tuple = ()               # every labelId of its label table
    splits: tuple = ()                  # ((split, images), ...) of the full dataset
    eval_split: Optional[str] = None
    crop: Optional[int] = None
    lists: tuple = ()                   # ((split, path), ...)
    title: str = ""

    @property
    def num_classes(self):
        return len(self.classes)

    def split_size(self, split):
        return dict(self.splits).get(split)

    def default_list(self, split):
        return dict(self.lists)[split]

    def palette(self):
        """256 x 3 uint8 RGB palette: the class colours, `colormap` elsewhere."""
        pal = colormap(256)
        if self.colours:
            pal[:len(self.colours)] = self.colours
        return pal

    def label_to_class_lut(self):
        """256-entry lookup labelId -> class index (int16): ignore_label for
        the label table's ids that are not a class, -1 for ids it has not;
        only for datasets with a label table."""
        lut = np.full(256, -1, np.int16)
        lut[list(self.table_ids)] = self.ignore_label
        lut[list(self.label_ids)] = np.arange(self.num_classes)
        return lut

    def classes_of_label_ids(self, label_ids, what):
        """The class indices (uint8) of a labelIds map; InputError naming
        `what` for ids that are not in the label table (another label set),
        which would otherwise pass for ignored pixels."""
        lut = np.full(max(256, int(label_ids.max(initial=0)) + 1), -1, np.int16)
        lut[:256] = self.label_to_class_lut()  # 16-bit maps may hold any id
        out = lut[label_ids]
        if (out < 0).any():
            raise InputError("%s: labelIds %s are not in the %s label table"
                             % (what, np.unique(label_ids[out < 0])[:10].tolist(), self.name))
        return out.astype(np.uint8)

    def class_to_label_lut(self):
        """256-entry lookup class index -> labelId, for submissions (0 elsewhere)."""
        lut = np.zeros(256, np.uint8)
        lut[:self.num_classes] = self.label_ids
        return lut


def names():
    """Names of the datasets in the registry."""
    return sorted(f[:-len(".json")] for f in os.listdir(HERE) if f.endswith(".json"))


def table(name):
    """The raw JSON of a dataset (e.g. Cityscapes' full label table)."""
    if name not in names():
        raise ValueError("unknown dataset %r; known: %s" % (name, ", ".join(names())))
    with open(os.path.join(HERE, name + ".json")) as f:
        return json.load(f)


@functools.lru_cache(maxsize=None)
def get(name):
    """The Dataset called `name` (ValueError naming the known ones otherwise)."""
    raw = table(name)
    fields = dict(name=raw["name"], title=raw.get("title", ""),
                  ignore_label=raw.get("ignore_label", IGNORE_LABEL),
                  splits=tuple(raw.get("splits", {}).items()),
                  eval_split=raw.get("eval_split"), crop=raw.get("crop"),
                  lists=tuple(raw.get("lists", {}).items()))
    if "labels" in raw:
        rows = sorted((l for l in raw["labels"] if 0 <= l["trainId"] < fields["ignore_label"]),
                      key=lambda l: l["trainId"])
        if [l["trainId"] for l in rows] != list(range(len(rows))):
            raise ValueError("%s.json: train ids are not 0..%d" % (name, len(rows) - 1))
        fields.update(classes=tuple(l["name"] for l in rows),
                      colours=tuple(tuple(l["color"]) for l in rows),
                      label_ids=tuple(l["id"] for l in rows),
                      table_ids=tuple(l["id"] for l in raw["labels"] if 0 <= l["id"] < 256))
    else:
        fields.update(classes=tuple(raw["classes"]),
                      colours=tuple(map(tuple, raw["colours"])) if "colours" in raw else None)
    return Dataset(**fields)


# --------------------------------------------------------------------- generic

def read_classes(path):
    """(names, colours) of a classes file: one class per line in label
    order, `name` or `name R G B` (0..255; a name with blanks quoted as a
    shell word, as in the project's lists). `colours` is None when no line
    has one; a line without one takes `colormap`'s colour. InputError naming
    the line otherwise."""
    rows = lists.read(path, 1, 4, "classes")
    if not rows:
        raise InputError("%s: no class in the file" % path)
    names, colours, default = [], [], colormap(len(rows))
    for n, row in enumerate(rows):
        if len(row) not in (1, 4):
            raise InputError("%s: class %d (%s): expected a name, or a name and R G B"
                             % (path, n, " ".join(row)))
        rgb = tuple(int(v) if v.isdigit() else -1 for v in row[1:])
        if not all(0 <= v <= 255 for v in rgb):
            raise InputError("%s: class %d (%s): colour %s is not three integers in 0..255"
                             % (path, n, row[0], " ".join(row[1:])))
        names.append(row[0])
        colours.append(rgb or tuple(int(v) for v in default[n]))
    twice = sorted({x for x in names if names.count(x) > 1})
    if twice:
        raise InputError("%s: class names given twice: %s" % (path, ", ".join(twice)))
    if len(names) > IGNORE_LABEL:
        raise InputError("%s: %d classes; labels are 8-bit with %d ignored, so at most %d"
                         % (path, len(names), IGNORE_LABEL, IGNORE_LABEL))
    given = any(len(r) == 4 for r in rows)
    return tuple(names), tuple(colours) if given else None


def write_classes(path, names, colours=None):
    """A classes file that `read_classes` reads back as (names, colours)."""
    lists.write(path, [[name] + ([str(v) for v in colours[i]] if colours else [])
                       for i, name in enumerate(names)])


def generic(num_classes=None, classes_file=None):
    """The Dataset of one's own data: classes from `classes_file`, else
    `num_classes` of them named class0, class1, ..."""
    if classes_file:
        names, colours = read_classes(classes_file)
        if num_classes and num_classes != len(names):
            raise UsageError("--num-classes %d contradicts the %d classes of %s"
                             % (num_classes, len(names), classes_file))
    elif num_classes:
        names, colours = tuple("class%d" % i for i in range(num_classes)), None
    else:
        raise UsageError("a generic dataset needs --classes FILE or --num-classes N")
    return Dataset(name=GENERIC, classes=names, colours=colours, eval_split="val",
                   crop=GENERIC_CROP, title="own dataset")


def resolve(name=None, num_classes=None, classes_file=None):
    """The Dataset a command line names: a registry dataset, or `generic`
    (the default when `num_classes` or `classes_file` is given, else voc)."""
    if name is None:
        name = GENERIC if num_classes or classes_file else "voc"
    if name == GENERIC:
        return generic(num_classes, classes_file)
    try:
        data = get(name)
    except ValueError as e:
        raise UsageError(str(e))
    if classes_file or (num_classes and num_classes != data.num_classes):
        raise UsageError("%s has its own %d classes; --classes and --num-classes are for "
                         "--dataset generic" % (name, data.num_classes))
    return data


def choices():
    """What --dataset accepts: the registry's datasets and `generic`."""
    return names() + [GENERIC]
