"""Bad and unusual inputs to every tool, one row each (issue 14).

A row runs one of the project's tools as a user would (a script's main() on
an argv, or the `caffe` tool), on a fresh small world of inputs built in a
temporary folder, and checks:

- the exit status (0 success, 1 bad input, 2 usage; "crash" for the caffe
  tool, which aborts) and that no Python traceback escaped;
- that the output names what was wrong: every listed fragment appears;
- that nothing was lost: every file that existed before the run has the
  same content afterwards (outputs go to new paths or to the tool's own);
- the row's own extra check, if it has one.

A watchdog turns a hang into a failure. The next bad input is one more row.
"""
import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import traceback

import cv2
import numpy as np
import pytest

import fake_datasets as fake
from conftest import ROOT

CAFFE = os.path.join(ROOT, "build", "bin", "caffe")

TINY_NET = """name: "tiny"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 16 dim: 16 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 stride: 2 } }
layer { name: "bn1" type: "LeanBatchNorm" bottom: "conv1" top: "conv1" }
layer { name: "score" type: "Convolution" bottom: "conv1" top: "score"
  convolution_param { num_output: 3 kernel_size: 1 } }
"""

TOY_NET = """name: "toy"
layer { name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } shape { dim: 1 dim: 1 dim: 8 dim: 8 }
    data_filler { type: "gaussian" std: 1 } data_filler { type: "constant" value: 1 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "score"
  convolution_param { num_output: 3 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss" }
"""
TOY_SOLVER = """net: "%s" base_lr: 0.01 lr_policy: "fixed" momentum: 0.9
max_iter: 4 snapshot: 2 snapshot_prefix: "%s" display: 1 solver_mode: CPU random_seed: 1
"""


class World(dict):
    """Paths of the inputs a row names as {placeholders}; each is made the
    first time a row asks for it."""

    def __init__(self, root):
        super().__init__(tmp=root)
        self.root = root

    def __missing__(self, key):
        make = getattr(self, "make_" + key)
        self[key] = make()
        return self[key]

    def path(self, *parts):
        return os.path.join(self.root, *parts)

    def make_file(self):
        """A user's own file."""
        path = self.path("notes.txt")
        with open(path, "w") as f:
            f.write("my notes\n")
        return path

    def make_notes(self):
        """A user's own Markdown file, named without its extension (as the
        report tools that write NAME.md and NAME.json take it)."""
        with open(self.path("notes.md"), "w") as f:
            f.write("# my notes\n")
        return self.path("notes")

    def make_voc(self):
        fake.make_voc(self.path("ds"), ["a1", "a2"], ["v1"])
        return self.path("ds", "VOCdevkit")

    def make_prep(self):
        from fcrn.data.voc import prepare_voc
        prepare_voc(self["voc"], None, self.path("prep"))
        return self.path("prep")

    def make_net(self):
        import caffe
        path = self.path("model", "deploy.prototxt")
        os.makedirs(os.path.dirname(path))
        with open(path, "w") as f:
            f.write(TINY_NET)
        net = caffe.Net(path, caffe.TEST)
        rng = np.random.RandomState(0)
        for blobs in net.params.values():
            for blob in blobs:
                blob.data[...] = rng.uniform(0.5, 1.5, blob.data.shape)
        net.save(self.path("model", "w.caffemodel"))
        return path

    def make_weights(self):
        return self["net"] and self.path("model", "w.caffemodel")

    def make_img(self):
        """Two readable images."""
        os.makedirs(self.path("img"))
        rng = np.random.default_rng(1)
        cv2.imwrite(self.path("img", "a.jpg"), rng.integers(0, 256, (20, 30, 3), dtype=np.uint8))
        cv2.imwrite(self.path("img", "b.png"), rng.integers(0, 256, (17, 23, 3), dtype=np.uint8))
        return self.path("img")

    def make_dup(self):
        """Images whose names collide: a.jpg and sub/a.jpg, c.png and c.jpg."""
        rng = np.random.default_rng(2)
        os.makedirs(self.path("dup", "sub"))
        for name in ("a.jpg", "sub/a.jpg", "c.png", "c.jpg"):
            cv2.imwrite(self.path("dup", name), rng.integers(0, 256, (12, 14, 3), dtype=np.uint8))
        return self.path("dup")

    def make_cs(self):
        fake.make_cityscapes(self.path("cs"), {"train": {"aachen": 2}, "val": {"lindau": 1}})
        return self.path("cs")

    def make_gt(self):
        """Ground truth a.png, b.png (3 classes) and matching predictions in {pred}."""
        from PIL import Image
        for folder in ("gt", "pred"):
            os.makedirs(self.path(folder))
            for name, value in (("a", 0), ("b", 2)):
                Image.fromarray(np.full((4, 5), value, np.uint8)).save(
                    self.path(folder, name + ".png"))
        return self.path("gt")

    def make_pred(self):
        return self["gt"] and self.path("pred")

    def make_mine(self):
        """One's own 3-class dataset: images/NAME.jpg beside images/NAME_mask.png."""
        fake.make_folder(self.path("mine"), ["m1", "m2", "m3"])
        return self.path("mine")

    def make_classes(self):
        return self["mine"] and self.path("mine", "classes.txt")

    def make_spaced(self):
        """A VOC tree under a folder whose name has a space."""
        fake.make_voc(self.path("my data"), ["a1", "a2"], ["v1"])
        return self.path("my data", "VOCdevkit")

    def make_lst(self):
        """A folder holding an image 00.jpg, its label 00.png and list.txt
        naming both, as a prepared list does."""
        os.makedirs(self.path("lst"))
        cv2.imwrite(self.path("lst", "00.jpg"), np.zeros((9, 11, 3), np.uint8))
        cv2.imwrite(self.path("lst", "00.png"), np.ones((9, 11), np.uint8))
        with open(self.path("lst", "list.txt"), "w") as f:
            f.write("00.jpg 00.png\n")
        return self.path("lst")

    def make_toy(self):
        """A solver of a tiny net that trains in a second: 4 iterations,
        snapshots every 2 under {toy}/snap/toy."""
        os.makedirs(self.path("toy", "snap"))
        with open(self.path("toy", "net.prototxt"), "w") as f:
            f.write(TOY_NET)
        with open(self.path("toy", "solver.prototxt"), "w") as f:
            f.write(TOY_SOLVER % (self.path("toy", "net.prototxt"),
                                  self.path("toy", "snap", "toy")))
        return self.path("toy")

    def make_trained(self):
        """{toy} trained: snapshots at iterations 2 and 4, and its log."""
        from fcrn import train
        train.train(os.path.join(self["toy"], "solver.prototxt"))
        return self.path("toy", "snap", "toy")


def snapshot(root):
    state = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                state[path] = hashlib.sha1(f.read()).hexdigest()
    return state


class Hang(Exception):
    pass


def _hang(signum, frame):
    raise Hang()


def run_tool(script, tool, argv, capsys, caplog, cwd, seconds=120, env=None):
    """(exit status, printed text, traceback or None) of one tool run in the
    folder `cwd` (a bad relative path must not reach the checkout). `env`:
    variables of a "sub:" run (PYTHON: its interpreter)."""
    if tool == "caffe":
        env = dict(os.environ, GLOG_minloglevel="0")
        result = subprocess.run([CAFFE] + argv, capture_output=True, text=True, env=env,
                                timeout=seconds, cwd=cwd)
        status = result.returncode if result.returncode in (0, 1, 2) else "crash"
        return status, result.stderr + result.stdout, None
    if tool.startswith("sub:"):
        # The script in a process of its own, in the user's environment (no
        # GLOG_minloglevel), so that what it prints before Caffe is quiet shows.
        env = dict({k: v for k, v in os.environ.items() if k != "GLOG_minloglevel"},
                   **(env or {}))
        path = os.path.join(ROOT, "scripts", tool[4:])
        command = ["bash", path] if tool.endswith(".sh") else \
            [env.pop("PYTHON", sys.executable), path + ".py"]
        result = subprocess.run(command + argv, capture_output=True, text=True, env=env,
                                timeout=seconds, cwd=cwd)
        trace = result.stderr if "Traceback (most recent call last)" in result.stderr else None
        return result.returncode, result.stderr + result.stdout, trace
    module = script(tool)
    caplog.set_level(logging.INFO)
    caplog.clear()
    capsys.readouterr()
    old = signal.signal(signal.SIGALRM, _hang)
    signal.alarm(seconds)
    trace = None
    here = os.getcwd()
    os.chdir(cwd)
    try:
        status = module.main(argv)
    except SystemExit as e:
        status = e.code
    except Hang:
        status = "hang"
    except Exception:
        status, trace = "traceback", traceback.format_exc()
    finally:
        os.chdir(here)
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    out = capsys.readouterr()
    return status, out.err + out.out + caplog.text, trace


def row(name, tool, argv, status, expect=(), check=None, changes=()):
    """One bad input. `changes`: placeholders of files the run may alter."""
    return pytest.param(tool, argv, status, expect, check, changes, id=name)


def exists(*paths):
    def check(w, out):
        for p in paths:
            assert os.path.exists(p.format_map(w)), p
    return check


def gpu_refused(what):
    def check(w, out):
        from fcrn import caffeio
        assert (("%s: no GPU 99 here (%d usable)" % (what, caffeio.gpu_count()))
                if caffeio.gpu_build() else "%s: this Caffe is a CPU-only build" % what) in out
    return check


def absent(*paths):
    def check(w, out):
        for p in paths:
            assert not os.path.exists(p.format_map(w)), p
    return check


def one_error(w, out):
    """One refusal, not one line per layer."""
    assert sum(line.startswith("ERROR") for line in out.splitlines()) == 1, out


INFER = ["--net", "{net}", "--weights", "{weights}", "-q"]


def reading(tool, weights):
    """argv of a tool that reads the caffemodel `weights` for the world's net."""
    return {"infer": ["{img}", "--out", "{tmp}/o", "--net", "{net}", "--weights", weights, "-q"],
            "fold_bn": ["--net", "{net}", "--weights", weights, "--out-net", "{tmp}/f.prototxt",
                        "--out-weights", "{tmp}/f.caffemodel"],
            "convert_weights": [weights, "{net}", "{tmp}/i.caffemodel"],
            "export_onnx": ["--net", "{net}", "--weights", weights, "--out", "{tmp}/m.onnx"]}[tool]


# --- the eight defects of issue 14 ----------------------------------------------

DEFECTS = [
    row("infer-batch-0-hangs", "infer", ["{img}", "--out", "{tmp}/o", "--batch", "0"] + INFER,
        2, ["argument --batch-size/--batch: must be >= 1, not 0"], absent("{tmp}/o")),
    row("prepare-out-holds-the-input", "prepare_voc", ["--voc", "{voc}", "--out", "{tmp}/ds"],
        2, ["{tmp}/ds would replace the input", "VOC2012"]),
    row("lmdb-out-is-the-prepared-folder", "make_lmdb",
        ["--list", "{prep}/train.txt", "--out", "{prep}"], 2, ["would replace the input"]),
    row("prepare-out-is-a-file", "prepare_voc", ["--voc", "{voc}", "--out", "{file}"],
        2, ["{file}: exists and is not this tool's output; use --force"]),
    row("fold-over-its-inputs", "fold_bn", ["--net", "{net}", "--weights", "{weights}",
                                            "--out-net", "{net}", "--out-weights",
                                            "{weights}", "--force"],
        2, ["{net} would overwrite the input {net}", "would overwrite the input {weights}"]),
    row("infer-over-its-input-images", "infer", ["{img}", "--out", "{img}", "--overlay",
                                                 "{img}", "--force"] + INFER,
        2, ["must be different folders"]),
    row("infer-into-its-input-folder", "infer", ["{img}", "--out", "{img}", "--force"] + INFER,
        2, ["{img}/a.png would be written inside the input {img}"]),
    row("infer-over-cityscapes-inputs", "infer",
        ["{cs}/leftImg8bit/val", "--out", "{cs}/leftImg8bit/val", "--dataset", "cityscapes"]
        + INFER, 2, ["lindau_000000_000019_leftImg8bit.png would overwrite the input"]),
    row("infer-colliding-names", "infer", ["{dup}/a.jpg", "{dup}/sub/a.jpg", "{dup}/c.png",
                                           "{dup}/c.jpg", "--out", "{tmp}/o"] + INFER,
        0, ["4 image(s)"], exists("{tmp}/o/a.png", "{tmp}/o/sub/a.png", "{tmp}/o/c.png.png",
                                  "{tmp}/o/c.jpg.png")),
    row("infer-colliding-names-in-a-folder", "infer", ["{dup}", "--out", "{tmp}/o"] + INFER,
        0, ["4 image(s)"], exists("{tmp}/o/a.png", "{tmp}/o/sub/a.png", "{tmp}/o/c.png.png",
                                  "{tmp}/o/c.jpg.png")),
    row("infer-same-image-twice", "infer", ["{img}/a.jpg", "{img}/a.jpg", "--out", "{tmp}/o"]
        + INFER, 2, ["1 input(s) given more than once", "{img}/a.jpg (2 times)"],
        absent("{tmp}/o")),
    row("infer-with-a-training-net", "infer", ["{img}", "--out", "{tmp}/o", "--net",
                                               "{toy}/net.prototxt", "--weights",
                                               "{trained}_iter_4.caffemodel", "-q"],
        2, ["{toy}/net.prototxt: not a deploy net: its 'data' comes from layer 'data' "
            "(DummyData), not from an Input layer; give the deploy.prototxt beside it"],
        absent("{tmp}/o")),
    row("infer-tile-0", "infer", ["{img}", "--out", "{tmp}/o", "--tile", "0", "0"] + INFER,
        2, ["argument --tile: must be in [1, 2048], not 0"]),
    row("infer-tile-negative", "infer", ["{img}", "--out", "{tmp}/o", "--tile", "-8", "-8"]
        + INFER, 2, ["argument --tile: must be in [1, 2048], not -8"]),
    row("infer-overlap-negative", "infer", ["{img}", "--out", "{tmp}/o", "--overlap", "-1"]
        + INFER, 2, ["argument --overlap: must be in [0, 1), not -1"]),
    row("infer-scales-negative", "infer", ["{img}", "--out", "{tmp}/o", "--scales", "-1"]
        + INFER, 2, ["argument --scales: must be in (0, 4], not -1"]),
    row("infer-stride-0", "infer", ["{img}", "--out", "{tmp}/o", "--stride", "0"] + INFER,
        2, ["argument --stride: must be in [1, 2048], not 0"]),
    row("make-net-huge-crop", "make_net", ["--crop", "100000000", "--out", "{tmp}/n"],
        2, ["argument --crop: must be in [1, 2048], not 100000000"], absent("{tmp}/n")),
    row("dataset-path-with-a-space", "prepare_voc", ["--voc", "{spaced}", "--out", "{tmp}/o"],
        0, [], lambda w, out: _lists_read_back(w)),
    row("cityscapes-path-with-a-space", "prepare_cityscapes", ["--root", "{tmp}/my cs",
                                                               "--out", "{tmp}/o"],
        0, ["train=2 val=1"], lambda w, out: _read_back(w, "o")),
    row("data-layer-wrong-num-classes-under-caffe", "caffe",
        ["time", "-model", "{tmp}/data.prototxt", "-iterations", "1"], "crash",
        ["SegDataLayer(source={prep}/train.txt) (forward): InputError:",
         "label values", "outside [0, 3)"]),
    row("data-layer-type-error-under-caffe", "caffe",
        ["time", "-model", "{tmp}/badscale.prototxt", "-iterations", "1"], "crash",
        ["SegDataLayer: scale must be [min, max] with 0 < min <= max"]),
    row("shift-layer-bad-pass-under-caffe", "caffe",
        ["time", "-model", "{tmp}/shift.prototxt", "-iterations", "1"], "crash",
        ["fcrn_shift.ShiftLayer: pass must be 0, 1, 2 or 3, not 5.0"]),
]


def _lists_read_back(w):
    """The lists of a tree under a path with a space are read by make_lmdb
    and by the data layer's reader."""
    assert "my data" in _read_back(w, "o")[0][0]


def _read_back(w, out):
    from fcrn.data.sources import ListSource, write_lmdb
    source = ListSource(os.path.join(w["tmp"], out, "train.txt"))
    assert len(source) == 2
    assert write_lmdb(os.path.join(w["tmp"], out, "train.txt"),
                      os.path.join(w["tmp"], out + ".lmdb"))["count"] == 2
    return source.pairs


# --- the weak cases of issue 14 -------------------------------------------------

WEAK = [
    row("unwritable-out-prepare", "prepare_voc", ["--voc", "{voc}", "--out", "{file}/o"],
        1, ["{file}", "is a file, so"]),
    row("unwritable-out-lmdb", "make_lmdb", ["--list", "{prep}/train.txt", "--out",
                                             "{file}/o"], 1, ["{file}", "is a file, so"]),
    row("unwritable-out-make-net", "make_net", ["--out", "{file}/n"], 1,
        ["{file}", "is a file, so"]),
    row("unwritable-out-infer", "infer", ["{img}", "--out", "{file}/o"] + INFER, 1,
        ["{file}", "is a file, so"]),
    row("unwritable-out-evaluate", "evaluate", ["--gt", "{gt}", "--pred", "{pred}",
                                                "--dataset", "generic", "--num-classes", "3",
                                                "--out-json", "{file}/r.json", "-q"],
        1, ["{file}", "is a file, so"]),
    row("unwritable-out-fold", "fold_bn", ["--net", "{net}", "--weights", "{weights}",
                                           "--out-net", "{file}/f.prototxt",
                                           "--out-weights", "{file}/f.caffemodel"],
        1, ["{file}", "is a file, so"]),
    row("unwritable-out-convert", "convert_weights", ["{weights}", "{net}", "{file}/i.caffemodel"],
        1, ["{file}", "is a file, so"]),
    row("text-file-as-caffemodel", "infer", reading("infer", "{file}"),
        1, ["{file}: not a caffemodel"], one_error),
    row("empty-file-as-caffemodel", "fold_bn", reading("fold_bn", "{tmp}/empty.caffemodel"),
        1, ["{tmp}/empty.caffemodel: not a caffemodel (empty file)"], one_error),
    row("workers-negative-prepare", "prepare_voc", ["--voc", "{voc}", "--out", "{tmp}/o",
                                                    "--workers", "-1"],
        2, ["argument --jobs/--workers: must be >= 1, not -1"]),
    row("workers-negative-lmdb", "make_lmdb", ["--list", "{prep}/train.txt", "--out",
                                               "{tmp}/o", "--workers", "-1"],
        2, ["argument --jobs/--workers: must be >= 1, not -1"]),
    row("ambiguous-prediction", "evaluate", ["--gt", "{gt}", "--pred", "{tmp}/dupred",
                                                 "--dataset", "generic", "--num-classes", "3",
                                                 "-q"],
        1, ["a: 2 predictions under {tmp}/dupred fit it: x/a.png, y/a.png"]),
    row("id-in-train-and-val", "prepare_voc", ["--voc", "{tmp}/both", "--out", "{tmp}/o"],
        1, ["1 id(s) listed in both train.txt and val.txt", "a2"], absent("{tmp}/o")),
    row("missing-image-names-every-place-looked", "prepare_voc",
        ["--voc", "{voc}", "--sbd", "{tmp}/sbd", "--out", "{tmp}/o"], 1,
        ["zz: no image (looked for {voc}/VOC2012/JPEGImages/zz.jpg and "
         "{tmp}/sbd/benchmark_RELEASE/dataset/img/zz.jpg)"], absent("{tmp}/o")),
    row("gt-label-beyond-classes-names-the-file", "evaluate",
        ["--gt", "{gt}", "--pred", "{pred}", "--dataset", "generic", "--num-classes", "2",
         "-q"], 1, ["{gt}/b.png: ground truth has labels [2] outside 0..1"]),
    row("empty-id-list", "evaluate", ["--gt", "{gt}", "--pred", "{pred}", "--list",
                                      "{tmp}/empty.txt", "-q"],
        1, ["{tmp}/empty.txt: the id list is empty"]),
] + [row("%s-caffemodel-%s" % (kind, tool), tool, reading(tool, path), 1, [message])
     for tool in ("infer", "fold_bn", "convert_weights", "export_onnx")
     for kind, path, message in (
         ("missing", "{tmp}/none.caffemodel", "{tmp}/none.caffemodel: no such file"),
         ("truncated", "{tmp}/cut.caffemodel",
          "{tmp}/cut.caffemodel: not a caffemodel (truncated"))]


# --- further bad inputs, tried beyond the issue's list ------------------------------

EVAL = ["--gt", "{gt}", "--pred", "{pred}", "--dataset", "generic", "--num-classes", "3", "-q"]
FOLD = ["--net", "{net}", "--weights", "{weights}", "--out-net", "{tmp}/f.prototxt",
        "--out-weights", "{tmp}/f.caffemodel"]

FOLDER = ["--images", "{mine}/images", "--labels", "{mine}/images", "--label-suffix",
          "_mask.png", "--classes", "{classes}"]

EXTRA = [
    # infer
    row("infer-list-missing", "infer", ["--list", "{tmp}/none.txt", "--out", "{tmp}/o"] + INFER,
        1, ["{tmp}/none.txt: list file not found"]),
    row("infer-empty-folder", "infer", ["{tmp}/emptydir", "--out", "{tmp}/o"] + INFER,
        1, ["no input images in {tmp}/emptydir"]),
    row("infer-net-missing", "infer", ["{img}", "--out", "{tmp}/o", "--net", "{tmp}/none",
                                       "--weights", "{weights}", "-q"],
        1, ["{tmp}/none: no such file (net prototxt)"]),
    row("infer-net-is-binary", "infer", ["{img}", "--out", "{tmp}/o", "--net", "{weights}",
                                         "--weights", "{weights}", "-q"],
        1, ["{weights}: not a"]),
    row("infer-net-is-a-folder", "infer", ["{img}", "--out", "{tmp}/o", "--net", "{img}",
                                           "--weights", "{weights}", "-q"],
        1, ["{img}: is a folder, not a net prototxt"]),
    row("infer-net-unknown-layer", "infer", ["{img}", "--out", "{tmp}/o", "--net",
                                             "{tmp}/unknown.prototxt", "--weights",
                                             "{weights}", "-q"],
        1, ["layer type(s) Frobnicate unknown to this Caffe"]),
    row("infer-net-empty-prototxt", "infer", ["{img}", "--out", "{tmp}/o", "--net", "{file}",
                                              "--weights", "{weights}", "-q"],
        1, ["{file}: not a net prototxt"]),
    row("infer-labelids-without-ids", "infer", ["{img}", "--out", "{tmp}/o", "--labelids",
                                                "{tmp}/ids"] + INFER,
        2, ["--labelids needs a dataset with label ids"]),
    row("infer-out-equals-overlay", "infer", ["{img}", "--out", "{tmp}/o", "--overlay",
                                              "{tmp}/o"] + INFER,
        2, ["--out, --overlay and --labelids must be different folders"]),
    row("infer-four-passes-without-pass-input", "infer", ["{img}", "--out", "{tmp}/o",
                                                          "--passes", "4"] + INFER,
        2, ["passes must be 1, or 4 with a net that has a 'pass' input"]),
    row("infer-output-blob-unknown", "infer", ["{img}", "--out", "{tmp}/o", "--output-blob",
                                               "nosuch"] + INFER, 2, ["net has no blob 'nosuch'"]),
    row("infer-empty-image-file", "infer", ["{img}", "{tmp}/empty.jpg", "--out", "{tmp}/o"]
        + INFER, 1, ["{tmp}/empty.jpg: not a readable image", "1 of 3 input(s) failed"],
        exists("{tmp}/o/a.png", "{tmp}/o/b.png")),
    row("infer-text-named-jpg-in-folder", "infer", ["{tmp}/mixed", "--out", "{tmp}/o"] + INFER,
        1, ["{tmp}/mixed/x.jpg: not a readable image"], exists("{tmp}/o/ok.png")),
    row("infer-one-pixel-image", "infer", ["{tmp}/dot.png", "--out", "{tmp}/o"] + INFER, 0,
        [], exists("{tmp}/o/dot.png")),
    # A CPU-only build refuses any GPU; a CUDA build one that is not there
    # (pycaffe's set_device aborts on it).
    row("infer-gpu-not-here", "infer", ["{img}", "--out", "{tmp}/o", "--gpu", "99"] + INFER,
        2, ["--gpu 99: "], gpu_refused("--gpu 99")),
    row("infer-gpu-negative", "infer", ["{img}", "--out", "{tmp}/o", "--gpu", "-1"] + INFER,
        2, ["argument --gpu: must be >= 0, not -1"]),
    row("infer-mean-nan", "infer", ["{img}", "--out", "{tmp}/o", "--mean", "nan", "0", "0"]
        + INFER, 2, ["argument --mean: must be a finite number, not nan"]),
    row("infer-offset-inf", "infer", ["{img}", "--out", "{tmp}/o", "--offset", "inf"] + INFER,
        2, ["argument --offset: must be a finite number, not inf"]),
    row("infer-scales-tiny", "infer", ["{img}", "--out", "{tmp}/o", "--scales", "0.001"]
        + INFER, 0, [], exists("{tmp}/o/a.png")),
    row("infer-jobs-0", "infer", ["{img}", "--out", "{tmp}/o", "--jobs", "0"] + INFER,
        2, ["argument --jobs/--workers: must be >= 1, not 0"]),
    row("infer-out-is-a-file", "infer", ["{img}", "--out", "{file}"] + INFER,
        2, ["{file}: exists and is not this tool's output"]),
    row("infer-foreign-folder", "infer", ["{img}", "--out", "{tmp}/theirs"] + INFER,
        2, ["{tmp}/theirs: exists and is not this tool's output; use --force"]),
    row("infer-out-empty", "infer", ["{img}", "--out", ""] + INFER,
        2, ["an output path is empty"]),
    row("infer-list-with-quoted-space", "infer", ["--list", "{tmp}/spaced.txt", "--out",
                                                  "{tmp}/o"] + INFER,
        0, [], exists("{tmp}/o/a b.png")),
    row("infer-list-unbalanced-quote", "infer", ["--list", "{tmp}/quote.txt", "--out",
                                                 "{tmp}/o"] + INFER,
        1, ["{tmp}/quote.txt:1: No closing quotation"]),
    row("infer-rerun-into-own-folder", "infer", ["{img}", "--out", "{tmp}/own"] + INFER, 0,
        [], exists("{tmp}/own/a.png"), changes=["{tmp}/own/a.png"]),
    row("infer-grey-alpha-png", "infer", ["{tmp}/la.png", "--out", "{tmp}/o"] + INFER, 0, [],
        exists("{tmp}/o/la.png")),
    row("infer-non-ascii-names", "infer", ["{tmp}/données", "--out", "{tmp}/sortie"] + INFER, 0,
        [], exists("{tmp}/sortie/été.png", "{tmp}/sortie/日本.png")),
    # evaluate
    row("evaluate-gt-missing", "evaluate", ["--gt", "{tmp}/none", "--pred", "{pred}",
                                            "--dataset", "generic", "--num-classes", "3"],
        1, ["{tmp}/none: ground-truth folder not found"]),
    row("evaluate-pred-is-a-file", "evaluate", ["--gt", "{gt}", "--pred", "{file}",
                                                "--dataset", "generic", "--num-classes", "3"],
        1, ["{file}: prediction folder is a file"]),
    row("evaluate-num-classes-0", "evaluate", EVAL[:-2] + ["0"], 2,
        ["argument --num-classes: must be in [1, 255], not 0"]),
    row("evaluate-generic-without-classes", "evaluate", ["--gt", "{gt}", "--pred", "{pred}",
                                                         "--dataset", "generic"],
        2, ["a generic dataset needs --classes FILE or --num-classes N"]),
    row("evaluate-rgb-prediction", "evaluate", ["--gt", "{gt}", "--pred", "{tmp}/rgb",
                                                "--dataset", "generic", "--num-classes", "3",
                                                "-q"],
        1, ["{tmp}/rgb/a.png: a RGB image is not a label map"]),
    row("evaluate-corrupt-prediction", "evaluate", ["--gt", "{gt}", "--pred", "{tmp}/corrupt",
                                                    "--dataset", "generic", "--num-classes",
                                                    "3", "-q"],
        1, ["{tmp}/corrupt/a.png: not a readable image"]),
    row("evaluate-report-over-an-input", "evaluate", EVAL + ["--out-json", "{gt}/a.png"],
        2, ["{gt}/a.png would be written inside the input {gt}"]),
    row("evaluate-report-over-a-user-file", "evaluate", EVAL + ["--out-md", "{file}"],
        2, ["{file}: exists and is not this tool's output"]),
    row("evaluate-md-and-json-one-file", "evaluate", EVAL + ["--out-md", "{tmp}/e.md",
                                                             "--out-json", "{tmp}/e.md"],
        2, ["{tmp}/e.md and {tmp}/e.md are one file; each output needs a file of its own"],
        absent("{tmp}/e.md")),
    row("evaluate-md-and-json-one-file-spelt-twice", "evaluate",
        EVAL + ["--out-md", "e.md", "--out-json", "./e.md", "--force"],
        2, ["e.md and ./e.md are one file"], absent("{tmp}/e.md")),
    row("evaluate-list-of-binary", "evaluate", ["--gt", "{gt}", "--pred", "{pred}", "--list",
                                                "{weights}", "-q"],
        1, ["{weights}: not a text file"]),
    # bench_bootstrap
    row("bench-bootstrap-report-over-a-user-file", "bench_bootstrap",
        ["--quick", "--work", "{tmp}/w", "--out", "{notes}"],
        2, ["{notes}.md: exists and is not this tool's output"]),
    # make_net
    row("make-net-out-is-a-file", "make_net", ["--out", "{file}"], 2,
        ["{file}: exists; use --force to replace it"]),
    row("make-net-empty-out", "make_net", ["--out", ""], 2, ["an output path is empty"]),
    row("make-net-out-is-the-current-folder", "make_net", ["--out", ".", "--force"], 2,
        ["holds the current folder"]),
    row("make-net-out-with-trailing-slash", "make_net", ["--out", "{tmp}/n/"], 0, ["FoV"],
        exists("{tmp}/n/train.prototxt")),
    row("make-net-even-kernel", "make_net", ["--kernel", "4", "--out", "{tmp}/n"], 2,
        ["kernel must be a positive odd integer"]),
    row("make-net-threshold-above-1", "make_net", ["--bootstrap", "8", "--threshold", "2",
                                                   "--out", "{tmp}/n"],
        2, ["argument --threshold: must be in [0, 1], not 2"]),
    row("make-net-weight-decay-negative", "make_net", ["--weight-decay", "-1", "--out",
                                                       "{tmp}/n"],
        2, ["argument --weight-decay: must be >= 0, not -1"]),
    # make_lmdb
    row("lmdb-list-missing", "make_lmdb", ["--list", "{tmp}/none.txt", "--out", "{tmp}/db"],
        1, ["{tmp}/none.txt: list file not found"]),
    row("lmdb-list-is-binary", "make_lmdb", ["--list", "{weights}", "--out", "{tmp}/db"],
        1, ["{weights}: not a text file"]),
    row("lmdb-list-three-fields", "make_lmdb", ["--list", "{tmp}/three.txt", "--out",
                                                "{tmp}/db"],
        1, ["{tmp}/three.txt:1: expected 2 field(s), got 3"]),
    row("lmdb-num-classes-0", "make_lmdb", ["--list", "{prep}/train.txt", "--out", "{tmp}/db",
                                            "--num-classes", "0"],
        2, ["argument --num-classes: must be in [1, 255], not 0"]),
    row("lmdb-out-is-an-input-image", "make_lmdb", ["--list", "{prep}/train.txt", "--out",
                                                    "{prep}/SegmentationClassAug/a1.png"],
        2, ["would overwrite the input"]),
    row("lmdb-rerun-replaces-own", "make_lmdb", ["--list", "{prep}/val.txt", "--out",
                                                 "{tmp}/own.lmdb"],
        0, ["records=1"], changes=["{tmp}/own.lmdb/data.mdb", "{tmp}/own.lmdb/lock.mdb"]),
    # prepare_*
    row("prepare-voc-missing", "prepare_voc", ["--voc", "{tmp}/none", "--out", "{tmp}/o"],
        1, ["{tmp}/none: not a VOC2012 tree"]),
    row("prepare-sbd-is-a-voc-tree", "prepare_voc", ["--voc", "{voc}", "--sbd", "{voc}",
                                                     "--out", "{tmp}/o"],
        1, ["{voc}: not an SBD tree"]),
    row("prepare-out-inside-the-tree", "prepare_voc", ["--voc", "{voc}", "--out",
                                                       "{voc}/VOC2012/prepared"],
        2, ["would be written inside the input {voc}/VOC2012"]),
    row("prepare-out-is-the-current-folder", "prepare_voc", ["--voc", "{voc}", "--out", ".",
                                                             "--force"],
        2, ["would replace the input"]),
    row("prepare-binary-id-list", "prepare_voc", ["--voc", "{tmp}/binlist", "--out", "{tmp}/o"],
        1, ["val.txt: not a text file"]),
    row("prepare-crlf-id-list", "prepare_voc", ["--voc", "{tmp}/crlf", "--out", "{tmp}/o"],
        0, ["train=2 val=1"]),
    row("prepare-colour-label", "prepare_voc", ["--voc", "{tmp}/rgblabel", "--out", "{tmp}/o"],
        1, ["a1.png: a RGB image is not a label map"]),
    row("prepare-truncated-jpeg", "prepare_voc", ["--voc", "{tmp}/cutjpeg", "--out", "{tmp}/o"],
        1, ["a1.jpg: not a readable image"]),
    row("dataset-path-non-ascii", "prepare_voc", ["--voc", "{tmp}/jeux de données",
                                                  "--out", "{tmp}/préparé"],
        0, ["train=2 val=1"], lambda w, out: _read_back(w, "préparé")),
    row("dataset-path-with-a-line-break", "prepare_voc", ["--voc", "{tmp}/a\nb", "--out",
                                                          "{tmp}/o"],
        1, ["a path with a line break cannot be written in a list"], absent("{tmp}/o")),
    row("prepare-cityscapes-16-bit-label-ids", "prepare_cityscapes",
        ["--cityscapes", "{cs}", "--out", "{tmp}/o"],
        1, ["lindau_000000_000019_gtFine_labelIds.png: labelIds [1000] are not in the cityscapes label table"]),
    row("prepare-cityscapes-missing", "prepare_cityscapes",
        ["--cityscapes", "{tmp}/none", "--out", "{tmp}/o"],
        1, ["{tmp}/none: not a Cityscapes tree"]),
    row("prepare-cityscapes-out-is-root", "prepare_cityscapes",
        ["--cityscapes", "{cs}", "--out", "{cs}"],
        2, ["{cs} would replace the input {cs}/"]),
    # prepare_folder, and one's own dataset in the other tools
    row("prepare-folder-classes-missing", "prepare_folder", FOLDER[:4] + [
        "--classes", "{tmp}/none.txt", "--out", "{tmp}/o"],
        1, ["{tmp}/none.txt: classes file not found"], absent("{tmp}/o")),
    row("prepare-folder-classes-and-num-classes", "prepare_folder", FOLDER + [
        "--num-classes", "3"], 2, ["argument --num-classes: not allowed with argument --classes"]),
    row("prepare-folder-images-missing", "prepare_folder", [
        "--images", "{tmp}/none", "--labels", "{mine}/images", "--num-classes", "3", "--out",
        "{tmp}/o"], 1, ["{tmp}/none: images folder not found"]),
    row("prepare-folder-out-inside-the-images", "prepare_folder", FOLDER + [
        "--out", "{mine}/images/prep"], 2, ["would be written inside the input {mine}/images"]),
    row("prepare-folder-labels-beyond-classes", "prepare_folder", FOLDER[:6] + [
        "--num-classes", "2", "--out", "{tmp}/o"],
        1, ["m1_mask.png: label values [2] outside [0, 2)"], absent("{tmp}/o")),
    row("prepare-folder-no-label-found", "prepare_folder", FOLDER[:4] + [
        "--classes", "{classes}", "--out", "{tmp}/o"],
        1, ["m1.jpg: no label (looked for {mine}/images/m1.png)"], absent("{tmp}/o")),
    row("prepare-folder-suffix-with-a-folder", "prepare_folder", FOLDER[:4] + [
        "--label-suffix", "x/y.png", "--num-classes", "3", "--out", "{tmp}/o"],
        2, ["label suffix 'x/y.png': give the end of a label's"]),
    row("prepare-folder-png-images-beside-labels", "prepare_folder", [
        "--images", "{tmp}/pngs", "--labels", "{tmp}/pngs", "--num-classes", "2", "--out",
        "{tmp}/o"], 1, ["{tmp}/pngs: no image (", "images and labels are one folder, where a "
                        "file named as a label is one: give the labels a suffix of their own"],
        absent("{tmp}/o")),
    row("prepare-folder-val-fraction-1", "prepare_folder", FOLDER + ["--val-fraction", "1"],
        2, ["argument --val-fraction: must be in (0, 1), not 1"]),
    row("classes-file-bad-colour", "make_net", ["--classes", "{tmp}/bad.txt", "--out",
                                                "{tmp}/n"],
        1, ["{tmp}/bad.txt: class 1 (car): colour 0 0 256 is not three integers in 0..255"],
        absent("{tmp}/n")),
    row("make-net-generic-without-lists", "make_net", ["--num-classes", "3", "--out", "{tmp}/n"],
        2, ["dataset generic needs train-source and val-source"], absent("{tmp}/n")),
    row("make-net-num-classes-with-voc", "make_net", ["--dataset", "voc", "--num-classes", "5",
                                                      "--out", "{tmp}/n"],
        2, ["voc has its own 21 classes; --classes and --num-classes are for --dataset "
            "generic"]),
    row("make-net-generic-val-list-missing", "make_net", [
        "--num-classes", "3", "--train-source", "t.txt", "--val-source", "{tmp}/v.txt",
        "--out", "{tmp}/n"], 2, ["validation list, which cannot be read ({tmp}/v.txt: list "
                                 "file not found); give test-iter"]),
    row("infer-net-has-more-classes-than-the-file", "infer", [
        "{img}", "--out", "{tmp}/o", "--classes", "{tmp}/two.txt"] + INFER,
        2, ["the net scores 3 classes, generic has 2"], absent("{tmp}/o")),
    row("infer-classes-file-missing", "infer", [
        "{img}", "--out", "{tmp}/o", "--classes", "{tmp}/none.txt"] + INFER,
        1, ["{tmp}/none.txt: classes file not found"]),
    row("evaluate-classes-file-names-more-than-the-labels", "evaluate", [
        "--gt", "{gt}", "--pred", "{pred}", "--classes", "{tmp}/two.txt", "-q"],
        1, ["{gt}/b.png: ground truth has labels [2] outside 0..1"]),
    # fold_bn, convert_weights
    row("fold-tol-0", "fold_bn", FOLD + ["--tol", "0"], 2, ["argument --tol: must be > 0"]),
    row("fold-verify-size-0", "fold_bn", FOLD + ["--verify-size", "0", "0"], 2,
        ["argument --verify-size: must be in [1, 2048], not 0"]),
    row("fold-both-outputs-one-file", "fold_bn", FOLD[:4] + ["--out-net", "{tmp}/f",
                                                            "--out-weights", "{tmp}/f"],
        2, ["{tmp}/f and {tmp}/f are one file; each output needs a file of its own"]),
    row("fold-existing-outputs", "fold_bn", FOLD[:4] + ["--out-net", "{file}", "--out-weights",
                                                       "{tmp}/f.caffemodel"],
        2, ["{file}: exists; use --force to replace it"]),
    row("fold-train-net-with-data-layer", "fold_bn", ["--net", "{tmp}/train.prototxt",
                                                      "--weights", "{weights}", "--out-net",
                                                      "{tmp}/f.prototxt", "--out-weights",
                                                      "{tmp}/f.caffemodel"],
        1, ["{tmp}/train.prototxt: layers not exportable to stock Caffe: data (Python)"]),
    row("fold-shifted-net-python-layer", "fold_bn", ["--net", "{tmp}/shift.prototxt"] + FOLD[2:],
        1, ["{tmp}/shift.prototxt: layers not exportable to stock Caffe: res3_shift (Python)"],
        absent("{tmp}/f.prototxt", "{tmp}/f.caffemodel")),
    row("convert-source-is-a-prototxt", "convert_weights", ["{net}", "{net}",
                                                            "{tmp}/i.caffemodel"],
        1, ["{net}: not a caffemodel"]),
    row("convert-target-missing", "convert_weights", ["{weights}", "{tmp}/none.prototxt",
                                                      "{tmp}/i.caffemodel"],
        1, ["{tmp}/none.prototxt: no such file (net prototxt)"]),
    row("convert-output-is-the-source", "convert_weights", ["{weights}", "{net}", "{weights}",
                                                            "--force"],
        2, ["would overwrite the input {weights}"]),
    # export_onnx
    row("onnx-net-missing", "export_onnx", ["--net", "{tmp}/none.prototxt", "--weights",
                                            "{weights}", "--out", "{tmp}/m.onnx"],
        1, ["{tmp}/none.prototxt: no such file (net prototxt)"], absent("{tmp}/m.onnx")),
    row("onnx-net-is-a-caffemodel", "export_onnx", ["--net", "{weights}", "--weights",
                                                    "{weights}", "--out", "{tmp}/m.onnx"],
        1, ["{weights}: not a"], absent("{tmp}/m.onnx")),
    row("onnx-text-file-as-caffemodel", "export_onnx", reading("export_onnx", "{file}"),
        1, ["{file}: not a caffemodel"], one_error),
    row("onnx-layer-not-exportable", "export_onnx", ["--net", "{tmp}/sigmoid.prototxt",
                                                     "--weights", "{weights}", "--out",
                                                     "{tmp}/m.onnx"],
        1, ["layers not exportable to ONNX: squash (Sigmoid)"], absent("{tmp}/m.onnx")),
    row("onnx-shifted-net-python-layer", "export_onnx",
        ["--net", ROOT + "/prototxt/voc/r101_s8_k5_d12_sim4/deploy.prototxt", "--weights",
         "{weights}", "--out", "{tmp}/m.onnx"],
        1, ["res3_shift (Python)"], absent("{tmp}/m.onnx")),
    row("onnx-pool-window-past-the-input", "export_onnx",
        ["--net", "{tmp}/strided.prototxt", "--weights", "{weights}", "--out", "{tmp}/m.onnx",
         "--no-verify"],
        1, ["subsample: stride larger than kernel without padding is not exported"],
        absent("{tmp}/m.onnx")),
    row("onnx-out-is-a-user-file", "export_onnx", ["--net", "{net}", "--weights", "{weights}",
                                                   "--out", "{file}"],
        2, ["{file}: exists; use --force to replace it"]),
    row("onnx-out-is-the-weights", "export_onnx", ["--net", "{net}", "--weights", "{weights}",
                                                   "--out", "{weights}", "--force"],
        2, ["would overwrite the input {weights}"]),
    row("onnx-verify-size-differs", "export_onnx", ["--net", "{net}", "--weights", "{weights}",
                                                    "--out", "{tmp}/m.onnx", "--size", "8",
                                                    "8", "--verify-size", "9", "9"],
        2, ["--verify-size differs from the fixed --size"]),
    row("onnx-size-0", "export_onnx", ["--net", "{net}", "--weights", "{weights}", "--out",
                                       "{tmp}/m.onnx", "--size", "0", "8"],
        2, ["argument --size: must be in [1, 2048], not 0"]),
    # train, demo
    row("train-solver-missing", "train", ["--solver", "{tmp}/none.prototxt", "-q"], 1,
        ["{tmp}/none.prototxt: no such file (solver prototxt)"]),
    row("train-solver-garbage", "train", ["--solver", "{weights}", "-q"], 1,
        ["{weights}: not a"]),
    row("train-weights-missing", "train", ["--solver", "{tmp}/solver.prototxt", "--weights",
                                           "{tmp}/none.caffemodel", "-q"],
        1, ["{tmp}/none.caffemodel: no such file (initial weights)"]),
    row("train-net-missing", "train", ["--solver", "{tmp}/lost.prototxt", "-q"], 1,
        ["{tmp}/none.prototxt: no such file (net prototxt)"], absent("{tmp}/lost.lock")),
    row("fold-out-where-nothing-can-be-written", "fold_bn",
        ["--net", "{net}", "--weights", "{weights}", "--out-net", "/proc/fcrn-f.prototxt",
         "--out-weights", "{tmp}/f.caffemodel"], 1,
        ["/proc/fcrn-f.prototxt: cannot write there ("], absent("{tmp}/f.caffemodel")),
    row("train-data-layer-error-is-quoted", "train", ["--solver", "{tmp}/dl_solver.prototxt",
                                                       "-q"], 1,
        ["caffe train failed (exit -6): SegDataLayer(source={tmp}/none.txt)",
         "{tmp}/none.txt: list file not found"]),
    row("train-data-layer-error-of-lines-on-one", "train", ["--solver",
                                                            "{tmp}/dl_solver.prototxt", "-q"], 1,
        ["caffe train failed (exit -6): SegDataLayer: param_str is neither JSON nor YAML: "
         "while parsing a flow node expected the node content"]),
    row("train-gpu-negative", "train", ["--solver", "{tmp}/solver.prototxt", "--gpu", "-1"],
        2, ["argument --gpu/-gpu: must be >= 0, not -1"]),
    row("demo-max-iter-0", "demo", ["--out", "{tmp}/d", "--max-iter", "0"], 2,
        ["argument --max-iter: must be >= 1, not 0"], absent("{tmp}/d")),
    # Python layers under the caffe tool
    row("data-layer-param-str-a-list", "caffe", ["time", "-model", "{tmp}/list.prototxt",
                                                 "-iterations", "1"],
        "crash", ["SegDataLayer: param_str must be a mapping"]),
    row("data-layer-crop-a-string", "caffe", ["time", "-model", "{tmp}/crop.prototxt",
                                              "-iterations", "1"],
        "crash", ["SegDataLayer: crop_size must be a positive int or [h, w]"]),
    row("data-layer-workers-true", "caffe", ["time", "-model", "{tmp}/workers.prototxt",
                                             "-iterations", "1"],
        "crash", ["SegDataLayer: workers must be an int >= 0"]),
    row("label-sample-without-stride", "caffe", ["time", "-model", "{tmp}/sample.prototxt",
                                                 "-iterations", "1"],
        "crash", ["fcrn_shift.LabelSampleLayer: param_str lacks ['stride']"]),
]


# --- issue 25: list inputs, training runs, quiet Caffe, predictions -------------------

def quiet(w, out):
    """Caffe said nothing (no glog line, no 'Logging before InitGoogleLogging'),
    and the error is the last line printed."""
    import re
    lines = out.strip().splitlines()
    assert not [l for l in lines if re.match(r"[IWEF]\d{4} |WARNING: Logging before", l)], \
        out[:3000]
    assert lines and lines[-1].startswith("ERROR"), out[-3000:]


def names_the_running_pid(w, out):
    assert "pid %d" % w["running"].pid in out, out


def no_stale_error(w, out):
    assert "an earlier run's failure" not in out, out


TRAINED = ["--solver", "{toy}/solver.prototxt", "-q"]
FOLD_ARGS = ["--net", "{net}", "--weights", "{weights}", "--out-net", "{tmp}/f.prototxt",
             "--out-weights", "{tmp}/f.caffemodel"]
BOGUS_LAYER = """import caffe


class Bogus(caffe.Layer):
    blob_use = "whatever"

    def setup(self, bottom, top):
        pass

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        top[0].data[...] = bottom[0].data
"""
# What a training run that resumes at iteration 2 rewrites.
RETRAINED = ["{trained}_iter_4.caffemodel", "{trained}_iter_4.solverstate", "{trained}.log",
             "{trained}.csv", "{trained}.json", "{trained}.png"]

ISSUE25 = [
    # 1. an output folder holding one of the inputs a list names
    row("infer-out-is-the-folder-of-its-list", "infer",
        ["--list", "{lst}/list.txt", "--out", "{lst}", "--force"] + INFER,
        2, ["{lst}/00.png would overwrite the input {lst}/00.png"],
        absent("{lst}/.fcrn-output")),
    row("infer-out-holds-the-labels-of-its-list", "infer",
        ["--list", "{prep}/val.txt", "--out", "{prep}/SegmentationClassAug", "--force"] + INFER,
        2, ["{prep}/SegmentationClassAug/v1.png would overwrite the input"],
        absent("{prep}/SegmentationClassAug/.fcrn-output")),
    row("infer-out-holds-the-list-only", "infer",
        ["--list", "{tmp}/l/list.txt", "--out", "{tmp}/l", "--force"] + INFER,
        2, ["--out {tmp}/l holds the input {tmp}/l/list.txt"], absent("{tmp}/l/.fcrn-output")),
    row("infer-overlay-holds-the-classes-file", "infer",
        ["{img}", "--out", "{tmp}/o", "--classes", "{classes}", "--overlay", "{mine}",
         "--force"] + INFER,
        2, ["--overlay {mine} holds the input {mine}/classes.txt"], absent("{tmp}/o")),
    row("infer-out-beside-its-inputs-is-fine", "infer",
        ["--list", "{lst}/list.txt", "--out", "{lst}/pred"] + INFER, 0, [],
        exists("{lst}/pred/00.png")),
    row("make-net-out-holds-its-classes-and-lists", "make_net",
        ["--classes", "{classes}", "--train-source", "{mine}/train.txt", "--val-source",
         "{mine}/val.txt", "--out", "{mine}", "--force"],
        2, ["--out {mine} holds the input {mine}/classes.txt"],
        absent("{mine}/train.prototxt")),
    row("make-net-out-holds-the-images-of-its-lists", "make_net",
        ["--train-source", "{prep}/train.txt", "--val-source", "{prep}/val.txt",
         "--out", "{voc}/VOC2012/JPEGImages", "--force"],
        2, ["--out {voc}/VOC2012/JPEGImages holds the input ", "JPEGImages/a1.jpg"],
        absent("{voc}/VOC2012/JPEGImages/train.prototxt")),
    row("make-net-out-holds-the-labels-of-its-lists", "make_net",
        ["--train-source", "{prep}/train.txt", "--val-source", "{prep}/val.txt",
         "--out", "{prep}/SegmentationClassAug", "--force"],
        2, ["--out {prep}/SegmentationClassAug holds the input ", "SegmentationClassAug/a1.png"],
        absent("{prep}/SegmentationClassAug/train.prototxt")),
    row("make-net-train-source-missing", "make_net",
        ["--num-classes", "3", "--train-source", "{tmp}/none.txt", "--val-source",
         "{prep}/val.txt", "--out", "{tmp}/n"],
        0, ["{tmp}/none.txt: train source not found"], exists("{tmp}/n/train.prototxt")),
    row("prepare-folder-label-without-image", "prepare_folder",
        ["--images", "{tmp}/split/images", "--labels", "{tmp}/split/labels", "--num-classes",
         "3", "--out", "{tmp}/o"],
        0, ["1 label(s) with no image, left out", "{tmp}/split/labels/train/zz.png"]),
    row("prepare-folder-mask-without-image", "prepare_folder",
        FOLDER + ["--out", "{tmp}/o"],
        0, ["1 label(s) with no image, left out", "{mine}/images/zz_mask.png"]),
    # 2, 3 and the training weaknesses
    row("train-error-is-this-runs", "train", ["--solver", "{tmp}/lost.prototxt", "-q"], 1,
        ["caffe train failed", "Unknown layer type: Nonexistent"], no_stale_error,
        changes=["{tmp}/lost.log", "{tmp}/lost.training.json"]),
    row("train-second-run-on-the-same-prefix", "train", TRAINED, 2,
        ["{toy}/snap/toy: another training with this snapshot prefix is running"],
        names_the_running_pid, changes=["{toy}/snap/toy.log"]),
    row("train-truncated-latest-caffemodel", "train", TRAINED, 0,
        ["{trained}_iter_4.caffemodel: damaged snapshot (not a caffemodel",
         "resuming from {trained}_iter_2.solverstate", "finished at iteration 4"],
        changes=RETRAINED),
    row("train-truncated-latest-solverstate", "train", TRAINED, 0,
        ["{trained}_iter_4.solverstate: damaged snapshot (not a solverstate",
         "resuming from {trained}_iter_2.solverstate"], changes=RETRAINED),
    row("train-solverstate-history-short", "train", TRAINED, 0,
        ["{trained}_iter_4.solverstate: damaged snapshot (1 history blob(s); "
         "the model's 2 learnable blob(s) need 2)"], changes=RETRAINED),
    row("train-only-snapshot-damaged", "train", TRAINED, 1,
        ["{trained}_iter_4.caffemodel: damaged snapshot", "no complete snapshot to resume "
         "from; --restart starts afresh"]),
    row("train-display-beyond-max-iter", "train", TRAINED, 0, ["finished at iteration 4"]),
    # Caffe quiet, inputs checked before a net is built
] + [row("%s-caffemodel-%s-before-the-net" % (kind, tool), "sub:" + tool,
         reading(tool, path) + ["--jobs", "1"] * (tool == "infer"), 1, [message], quiet)
     for tool in ("infer", "export_onnx")
     for kind, path, message in (
         ("missing", "{tmp}/none.caffemodel", "{tmp}/none.caffemodel: no such file"),
         ("truncated", "{tmp}/cut.caffemodel", "{tmp}/cut.caffemodel: not a caffemodel"),
         ("foreign", "{img}/b.png", "{img}/b.png: not a caffemodel"),
         ("prototxt", "{net}", "{net}: not a caffemodel"))] + [
    # tried beyond the issue's list: memory sharing, the GPU check, the package
    row("python-layer-blob-use-unknown", "sub:infer",
        ["{img}", "--out", "{tmp}/o", "--net", "{tmp}/bogus.prototxt", "--weights", "{weights}",
         "-q", "--no-share-memory"],
        1, ["{tmp}/bogus.prototxt: layer 'py' (Python, mylayers.Bogus) says blob_use = "
            "'whatever', which is none of computes, owns_tops"], quiet),
    row("gpu-check-deadline-negative", "sub:gpu_check",
        ["--kit", "{tmp}", "--out", "{tmp}/g", "--cpu", "--deadline", "-5"],
        2, ["argument --deadline: must be > 0, not -5"], absent("{tmp}/g")),
    row("gpu-check-kit-not-unpacked", "sub:gpu_check", ["--kit", "{tmp}", "--out", "{tmp}/g"],
        2, ["--kit {tmp}: not an unpacked gpu-kit (no plan.json)"], absent("{tmp}/g")),
    row("gpu-check-sh-deadline-0", "sub:gpu_check.sh", ["--cpu", "{tmp}/g", "--deadline", "0"],
        2, ["--deadline needs a positive number of seconds, not '0'"], absent("{tmp}/g")),
    row("caffe-prefix-wrong", "sub:fold_bn", FOLD_ARGS,
        1, ["caffe_pb2 not found: pycaffe's folder comes from FCRN_CAFFE_PREFIX={tmp}/none"],
        quiet),
    row("evaluate-prediction-beyond-classes", "evaluate",
        ["--gt", "{gt}", "--pred", "{tmp}/seven", "--dataset", "generic", "--num-classes", "3",
         "-q"], 1, ["{tmp}/seven/b.png: prediction has values [7] outside 0..2"]),
    row("evaluate-prediction-ignore-label-is-scored", "evaluate",
        ["--gt", "{gt}", "--pred", "{tmp}/ign", "--dataset", "generic", "--num-classes", "3",
         "-q", "--out-json", "{tmp}/r.json"], 0, [], exists("{tmp}/r.json")),
]


def prepare_issue25(w, name, request):
    if name == "infer-out-holds-the-list-only":
        os.makedirs(w.path("l"))
        with open(w.path("l", "list.txt"), "w") as f:
            f.write(os.path.join(w["img"], "a.jpg") + "\n")
    if name == "prepare-folder-mask-without-image":
        cv2.imwrite(os.path.join(w["mine"], "images", "zz_mask.png"), np.zeros((4, 4), np.uint8))
    if name == "make-net-out-holds-its-classes-and-lists":
        for split in ("train", "val"):
            with open(os.path.join(w["mine"], split + ".txt"), "w") as f:
                f.write("images/m1.jpg images/m1_mask.png\n")
    if name == "prepare-folder-label-without-image":
        fake.make_folder(w.path("split"), {"train": ["m1", "m2"], "val": ["m3"]},
                         layout="split")
        cv2.imwrite(w.path("split", "labels", "train", "zz.png"), np.zeros((4, 4), np.uint8))
    if name == "train-error-is-this-runs":
        with open(w.path("odd.prototxt"), "w") as f:  # parses, and Caffe refuses
            f.write('layer { name: "odd" type: "Nonexistent" top: "x" }\n')
        with open(w.path("lost.prototxt"), "w") as f:
            f.write('net: "%s" max_iter: 1 solver_mode: CPU snapshot_prefix: "%s"'
                    % (w.path("odd.prototxt"), w.path("lost")))
        with open(w.path("lost.log"), "w") as f:
            f.write("F0101 00:00:00.000000  1234 solver.cpp:1] Check failed: an earlier "
                    "run's failure\n")
    if name == "train-second-run-on-the-same-prefix":
        _start_training(w, request)
    if name.startswith("train-") and ("damaged" in name or "truncated" in name
                                      or "history" in name):
        prefix = w["trained"]
    if name in ("train-truncated-latest-caffemodel", "train-only-snapshot-damaged"):
        _cut(prefix + "_iter_4.caffemodel")
    if name == "train-only-snapshot-damaged":
        for ext in (".caffemodel", ".solverstate"):
            os.remove(prefix + "_iter_2" + ext)
    if name == "train-truncated-latest-solverstate":
        _cut(prefix + "_iter_4.solverstate")
    if name == "train-solverstate-history-short":
        from fcrn import caffeio
        state = caffeio.caffe_pb2().SolverState()
        with open(prefix + "_iter_4.solverstate", "rb") as f:
            state.ParseFromString(f.read())
        del state.history[1:]
        with open(prefix + "_iter_4.solverstate", "wb") as f:
            f.write(state.SerializeToString())
    if name == "train-display-beyond-max-iter":
        path = os.path.join(w["toy"], "solver.prototxt")
        with open(path) as f:
            text = f.read().replace("display: 1", "display: 10")
        with open(path, "w") as f:
            f.write(text)
    if name == "python-layer-blob-use-unknown":
        with open(w.path("mylayers.py"), "w") as f:
            f.write(BOGUS_LAYER)
        with open(w.path("bogus.prototxt"), "w") as f:
            f.write(TINY_NET.replace(
                'layer { name: "score" type: "Convolution" bottom: "conv1"',
                'layer { name: "py" type: "Python" bottom: "conv1" top: "p"\n'
                '  python_param { module: "mylayers" layer: "Bogus" } }\n'
                'layer { name: "score" type: "Convolution" bottom: "p"'))
        w["env"] = {"PYTHONPATH": w.root}
    if name == "caffe-prefix-wrong":
        # Debian's Python, which finds pycaffe only where fcrn.paths says.
        w["net"]
        w["env"] = {"PYTHON": "/usr/bin/python3", "PYTHONPATH": ROOT,
                    "FCRN_CAFFE_PREFIX": w.path("none")}
    if name == "evaluate-prediction-beyond-classes":
        _label_folder(w, "seven", {"a": 0, "b": 7})
    if name == "evaluate-prediction-ignore-label-is-scored":
        _label_folder(w, "ign", {"a": 255, "b": 2})


def _cut(path):
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[:len(data) // 2])


def _label_folder(w, folder, values):
    from PIL import Image
    w["gt"]
    os.makedirs(w.path(folder))
    for name, value in values.items():
        Image.fromarray(np.full((4, 5), value, np.uint8)).save(w.path(folder, name + ".png"))


SLOW_LAYER = """import time
import caffe


class Slow(caffe.Layer):
    def setup(self, bottom, top):
        pass

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        time.sleep(0.2)
        top[0].data[...] = bottom[0].data

    def backward(self, top, propagate_down, bottom):
        bottom[0].diff[...] = top[0].diff
"""


def _start_training(w, request):
    """train.py on {toy}, made slow and long, in a process of its own until
    the row ends; w["running"] is that process, once Caffe trains."""
    with open(w.path("slow.py"), "w") as f:
        f.write(SLOW_LAYER)
    with open(os.path.join(w["toy"], "net.prototxt"), "w") as f:
        f.write(TOY_NET.replace(
            'layer { name: "conv" type: "Convolution" bottom: "data"',
            'layer { name: "slow" type: "Python" bottom: "data" top: "slowed"\n'
            '  python_param { module: "slow" layer: "Slow" } }\n'
            'layer { name: "conv" type: "Convolution" bottom: "slowed"'))
    path = os.path.join(w["toy"], "solver.prototxt")
    with open(path) as f:
        text = f.read().replace("max_iter: 4", "max_iter: 100000")
    with open(path, "w") as f:
        f.write(text)
    env = dict(os.environ, PYTHONPATH=w.root)
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "scripts", "train.py"),
                             "--solver", path, "-q"], env=env, cwd=w.root,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)

    def stop():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    request.addfinalizer(stop)
    log = os.path.join(w["toy"], "snap", "toy.log")
    for _ in range(600):
        if os.path.exists(log) and "Iteration 0" in open(log, errors="replace").read():
            w["running"] = proc
            return
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.1)
    raise AssertionError("the first training did not start")


# --- a review of every tool's inputs (2026-12-07) --------------------------------------

REVIEW = [
    # --force replaces the output folder: never when an input lies in it by a link
    row("prepare-voc-force-images-linked-into-out", "prepare_voc",
        ["--voc", "{tmp}/lnk/VOCdevkit", "--out", "{tmp}/x", "--force"], 2,
        ["refusing to write over an input (even with --force)",
         "{tmp}/x would replace the input {tmp}/lnk/VOCdevkit/VOC2012/JPEGImages/"],
        exists("{tmp}/x/imgs/a1.jpg")),
    row("prepare-cityscapes-force-city-linked-into-out", "prepare_cityscapes",
        ["--root", "{tmp}/lcs", "--out", "{tmp}/y", "--force"], 2,
        ["refusing to write over an input (even with --force)",
         "{tmp}/y would replace the input {tmp}/lcs/leftImg8bit/val/lindau/"],
        exists("{tmp}/y/val/lindau")),
    # a run folder's steps replace what they write: not in a folder of the user's
    row("demo-out-a-folder-of-the-users", "demo", ["--out", "{tmp}/uf", "--quick"], 2,
        ["{tmp}/uf: exists and is not a run folder (no .steps/)"],
        exists("{tmp}/uf/data/mine.txt", "{tmp}/uf/synthetic/keep.txt")),
    row("demo-out-a-file", "demo", ["--out", "{file}", "--quick"], 2,
        ["{file}: exists and is not a run folder (no .steps/); give a new or empty folder"]),
    # weights that caffe would take without a word and never use
    row("train-weights-a-text-file", "train", ["--solver", "{toy}/solver.prototxt", "--weights",
                                               "{file}", "-q"], 1,
        ["{file}: not a caffemodel"], absent("{toy}/snap/toy_iter_2.caffemodel")),
    row("train-weights-a-folder", "train", ["--solver", "{toy}/solver.prototxt", "--weights",
                                            "{toy}/snap", "-q"], 1,
        ["{toy}/snap: a folder, not a caffemodel (initial weights)"]),
    row("train-weights-of-another-net", "train", ["--solver", "{toy}/solver.prototxt",
                                                  "--weights", "{weights}", "-q"], 1,
        ["{weights}: none of its 3 layer(s) with weights is in the net (bn1, conv1, score)"],
        absent("{toy}/snap/toy_iter_2.caffemodel")),
    # negative values: a traceback in the label check, a wrong pixel in the scores
    row("prepare-folder-negative-label", "prepare_folder",
        ["--images", "{tmp}/neg", "--labels", "{tmp}/neg", "--label-suffix", "_mask.tif",
         "--num-classes", "3", "--out", "{tmp}/o"], 1,
        ["label values [-5] outside [0, 3) and not 255"], absent("{tmp}/o")),
    row("evaluate-negative-prediction", "evaluate", ["--gt", "{gt}", "--pred", "{tmp}/negpred",
                                                     "--dataset", "generic", "--num-classes",
                                                     "3", "-q"], 1,
        ["prediction has values [-5] outside 0..2"]),
    # sizes whose blobs no memory holds: a usage error, not a MemoryError
    row("fold-verify-size-huge", "fold_bn", FOLD + ["--verify-size", "100000", "100000"], 2,
        ["argument --verify-size: must be in [1, 2048], not 100000"]),
    row("onnx-size-huge", "export_onnx", ["--net", "{net}", "--weights", "{weights}", "--out",
                                          "{tmp}/m.onnx", "--size", "100000", "8"], 2,
        ["argument --size: must be in [1, 2048], not 100000"]),
    row("bench-peers-size-negative", "bench_peers", ["--size", "-5", "--no-gemm"], 2,
        ["argument --size: must be in [1, 2048], not -5"]),
    row("bench-peers-repeats-zero", "bench_peers", ["--repeats", "0", "--no-gemm"], 2,
        ["argument --repeats: must be >= 1, not 0"]),
    # nets Caffe cannot build: refused when generated, not when infer aborts in Caffe
    row("make-net-kernel-huge", "make_net", ["--kernel", "100001", "--out", "{tmp}/n"], 2,
        ["the classifier reaches 4800000 input pixels from its centre (dilation x (kernel - 1) "
         "/ 2 x the stride 8); at most 2048"], absent("{tmp}/n")),
    row("make-net-batch-huge", "make_net", ["--batch-size", "100000", "--out", "{tmp}/n"], 2,
        ["batch size 100000 of 500 px crops makes blobs of 800000000000 elements at 1/8; "
         "Caffe holds at most 2147483647"], absent("{tmp}/n")),
    # paired outputs: both or neither, a folder where a file goes included
    row("evaluate-json-out-a-folder", "evaluate", EVAL + ["--out-md", "{tmp}/ok.md",
                                                          "--out-json", "{tmp}/dird", "--force"],
        1, ["{tmp}/dird: is a folder, not a file"], absent("{tmp}/ok.md")),
    row("fold-net-out-a-folder", "fold_bn", ["--net", "{net}", "--weights", "{weights}",
                                             "--out-net", "{tmp}/dird", "--out-weights",
                                             "{tmp}/dd.caffemodel", "--force"],
        1, ["{tmp}/dird: is a folder, not a file"], absent("{tmp}/dd.caffemodel")),
    # a rerun replaces its folder as a whole: not with what another tool put there
    row("prepare-rerun-over-what-the-user-put-in-out", "prepare_folder",
        FOLDER + ["--out", "{tmp}/mp"], 2,
        ["{tmp}/mp: holds train.lmdb, which the preparation did not write; a rerun replaces "
         "the folder as a whole: move it beside, or use --force to replace it"],
        exists("{tmp}/mp/train.lmdb/data.mdb")),
    row("prepare-rerun-beside-a-hidden-system-file", "prepare_folder",
        FOLDER + ["--out", "{tmp}/mp"], 0, (), absent("{tmp}/mp/.DS_Store"),
        ("{tmp}/mp/manifest.json", "{tmp}/mp/.DS_Store")),
    # resuming ignores --weights: not checked then
    row("train-resume-ignores-weights-of-another-net", "train",
        TRAINED + ["--weights", "{weights}"], 0, ["finished at iteration 4"]),
    row("train-weights-hdf5-of-another-net", "train", ["--solver", "{toy}/solver.prototxt",
                                                       "--weights", "{tmp}/w.caffemodel.h5",
                                                       "-q"], 1,
        ["{tmp}/w.caffemodel.h5: none of its 3 layer(s) with weights is in the net"]),
    row("train-weights-hdf5-of-this-net", "train", ["--solver", "{toy}/solver.prototxt",
                                                    "--weights", "{tmp}/toy.caffemodel.h5",
                                                    "--restart", "-q"], 0,
        ["finished at iteration 4"]),
    # a list written by an editor that starts it with a byte-order mark
    row("list-with-a-byte-order-mark", "evaluate", EVAL + ["--list", "{tmp}/bom.txt"], 0),
]


def prepare_review(w, name):
    from PIL import Image
    if name == "prepare-voc-force-images-linked-into-out":
        fake.make_voc(w.path("lnk"), ["a1", "a2"], ["v1"])
        images = w.path("lnk", "VOCdevkit", "VOC2012", "JPEGImages")
        os.makedirs(w.path("x"))
        shutil.move(images, w.path("x", "imgs"))
        os.symlink(w.path("x", "imgs"), images)
    if name == "prepare-cityscapes-force-city-linked-into-out":
        fake.make_cityscapes(w.path("lcs"), {"train": {"aachen": 2}, "val": {"lindau": 1}})
        val = w.path("lcs", "leftImg8bit", "val")
        os.makedirs(w.path("y"))
        shutil.move(val, w.path("y", "val"))
        os.symlink(w.path("y", "val"), val)
    if name == "demo-out-a-folder-of-the-users":
        for folder, note in (("data", "mine.txt"), ("synthetic", "keep.txt")):
            os.makedirs(w.path("uf", folder))
            with open(w.path("uf", folder, note), "w") as f:
                f.write("mine\n")
    if name == "prepare-folder-negative-label":
        os.makedirs(w.path("neg"))
        for stem in ("m1", "m2"):
            cv2.imwrite(w.path("neg", stem + ".jpg"), np.full((6, 7, 3), 90, np.uint8))
            label = np.zeros((6, 7), np.int32)
            label[0, 0] = -5
            Image.fromarray(label).save(w.path("neg", stem + "_mask.tif"))
    if name == "evaluate-negative-prediction":
        w["gt"]
        os.makedirs(w.path("negpred"))
        for stem in ("a", "b"):
            pred = np.zeros((4, 5), np.int32)
            pred[0, 0] = -5
            # signed values need TIFF (a PNG clips them), in the file evaluate looks for
            Image.fromarray(pred).save(w.path("negpred", stem + ".png"), format="TIFF")
    if name in ("evaluate-json-out-a-folder", "fold-net-out-a-folder"):
        os.makedirs(w.path("dird"))
        with open(w.path("dird", "keep"), "w") as f:
            f.write("mine\n")
    if name in ("prepare-rerun-over-what-the-user-put-in-out",
                "prepare-rerun-beside-a-hidden-system-file"):
        from fcrn.data.folder import prepare_folder
        images = w.path("mine", "images")  # as FOLDER names them
        prepare_folder(images, images, w.path("mp"), classes_file=w["classes"],
                       label_suffix="_mask.png")
        if name.startswith("prepare-rerun-over"):  # another tool's output
            os.makedirs(w.path("mp", "train.lmdb"))
            open(w.path("mp", "train.lmdb", "data.mdb"), "w").close()
        else:  # the system's
            open(w.path("mp", ".DS_Store"), "w").close()
        image = w.path("mine", "images", "m1.jpg")
        cv2.imwrite(image, 255 - cv2.imread(image))  # a changed input
    if name == "train-resume-ignores-weights-of-another-net":
        w["trained"]
    if name.startswith("train-weights-hdf5-of"):
        import caffe
        another = name.endswith("another-net")
        net = caffe.Net(w["net"] if another else os.path.join(w["toy"], "net.prototxt"),
                        caffe.TEST)
        net.save_hdf5(w.path(("w" if another else "toy") + ".caffemodel.h5"))
    if name == "list-with-a-byte-order-mark":
        with open(w.path("bom.txt"), "w", encoding="utf-8-sig") as f:
            f.write("a\nb\n")


def prepare_row(w, request):
    """Inputs some rows need beyond the world's named pieces."""
    name = request.node.callspec.id
    prepare_issue25(w, name, request)
    prepare_review(w, name)
    if "cut.caffemodel" in str(request.node.callspec.params["argv"]):
        data = open(w["weights"], "rb").read()
        with open(w.path("cut.caffemodel"), "wb") as f:
            f.write(data[:len(data) // 2])
    if name == "empty-file-as-caffemodel":
        open(w.path("empty.caffemodel"), "w").close()
    if name == "classes-file-bad-colour":
        with open(w.path("bad.txt"), "w") as f:
            f.write("road 1 2 3\ncar 0 0 256\n")
    if name in ("infer-net-has-more-classes-than-the-file",
                "evaluate-classes-file-names-more-than-the-labels"):
        with open(w.path("two.txt"), "w") as f:
            f.write("road\ncar\n")
    if name == "prepare-folder-no-label-found":
        w["mine"]
        for n in ("m1", "m2", "m3"):  # labels named NAME_mask.jpg: not found as NAME.png
            os.rename(w.path("mine", "images", n + "_mask.png"),
                      w.path("mine", "images", n + "_mask.jpg"))
    if name == "empty-id-list":
        open(w.path("empty.txt"), "w").close()
    if name == "onnx-layer-not-exportable":
        with open(w.path("sigmoid.prototxt"), "w") as f:
            f.write(TINY_NET + 'layer { name: "squash" type: "Sigmoid" bottom: "score" '
                    'top: "squashed" }\n')
    if name == "onnx-pool-window-past-the-input":
        # Caffe's last window of a 1x1/2 pool on an even input lies past the input.
        with open(w.path("strided.prototxt"), "w") as f:
            f.write(TINY_NET.replace(
                'layer { name: "score" type: "Convolution" bottom: "conv1"',
                'layer { name: "subsample" type: "Pooling" bottom: "conv1" top: "sub"\n'
                '  pooling_param { pool: MAX kernel_size: 1 stride: 2 } }\n'
                'layer { name: "score" type: "Convolution" bottom: "sub"'))
    if name == "prepare-folder-png-images-beside-labels":
        os.makedirs(w.path("pngs"))
        for p in ("a.png", "b.png"):
            cv2.imwrite(w.path("pngs", p), np.zeros((4, 5, 3), np.uint8))
    if name == "ambiguous-prediction":
        os.makedirs(w.path("dupred", "x"))
        os.makedirs(w.path("dupred", "y"))
        for p in ("x/a.png", "y/a.png", "b.png"):
            cv2.imwrite(w.path("dupred", p), np.zeros((4, 5), np.uint8))
    if name == "id-in-train-and-val":
        fake.make_voc(w.path("both"), ["a1", "a2"], ["a2"])
    if name == "missing-image-names-every-place-looked":
        w["voc"]
        fake.make_sbd(w.path("sbd"), ["zz"], ["s2"])
        os.remove(w.path("sbd", "benchmark_RELEASE", "dataset", "img", "zz.jpg"))
    if name == "cityscapes-path-with-a-space":
        fake.make_cityscapes(w.path("my cs"), {"train": {"aachen": 2}, "val": {"lindau": 1}})
    if name == "infer-grey-alpha-png":
        from PIL import Image
        Image.fromarray(np.zeros((6, 7, 2), np.uint8), mode="LA").save(w.path("la.png"))
    if name == "prepare-cityscapes-16-bit-label-ids":
        path = os.path.join(w["cs"], "gtFine", "val", "lindau",
                            "lindau_000000_000019_gtFine_labelIds.png")
        cv2.imwrite(path, np.full((16, 32), 1000, np.uint16))
    if name == "train-net-missing":
        with open(w.path("lost.prototxt"), "w") as f:
            f.write('net: "%s" max_iter: 1 solver_mode: CPU' % w.path("none.prototxt"))
    if name == "infer-non-ascii-names":
        os.makedirs(w.path("données"))
        for n in ("été.jpg", "日本.png"):
            cv2.imencode(os.path.splitext(n)[1], np.zeros((7, 9, 3), np.uint8))[1].tofile(
                w.path("données", n))
    if name == "dataset-path-non-ascii":
        fake.make_voc(w.path("jeux de données"), ["a1", "a2"], ["v1"])
    if name == "dataset-path-with-a-line-break":
        fake.make_voc(w.path("a\nb"), ["a1", "a2"], ["v1"])
    if name == "infer-empty-folder":
        os.makedirs(w.path("emptydir"))
    if name == "infer-net-unknown-layer":
        with open(w.path("unknown.prototxt"), "w") as f:
            f.write(TINY_NET.replace('type: "LeanBatchNorm"', 'type: "Frobnicate"'))
    if name == "infer-empty-image-file":
        open(w.path("empty.jpg"), "w").close()
    if name == "infer-text-named-jpg-in-folder":
        os.makedirs(w.path("mixed"))
        with open(w.path("mixed", "x.jpg"), "w") as f:
            f.write("not a picture")
        cv2.imwrite(w.path("mixed", "ok.png"), np.zeros((9, 9, 3), np.uint8))
    if name == "infer-one-pixel-image":
        cv2.imwrite(w.path("dot.png"), np.full((1, 1, 3), 200, np.uint8))
    if name == "infer-foreign-folder":
        os.makedirs(w.path("theirs"))
        with open(w.path("theirs", "holiday.png"), "wb") as f:
            f.write(b"theirs")
    if name == "infer-list-with-quoted-space":
        cv2.imwrite(w.path("a b.jpg"), np.zeros((8, 8, 3), np.uint8))
        with open(w.path("spaced.txt"), "w") as f:
            f.write("'%s'\n" % w.path("a b.jpg"))
    if name == "infer-list-unbalanced-quote":
        with open(w.path("quote.txt"), "w") as f:
            f.write("it's.jpg\n")
    if name == "infer-rerun-into-own-folder":
        from fcrn import infer
        infer.run(net=w["net"], weights=w["weights"], sources=[w["img"]], out=w.path("own"))
    if name == "evaluate-rgb-prediction":
        w["gt"]
        os.makedirs(w.path("rgb"))
        for p in ("a.png", "b.png"):
            cv2.imwrite(w.path("rgb", p), np.zeros((4, 5, 3), np.uint8))
    if name == "evaluate-corrupt-prediction":
        w["gt"]
        os.makedirs(w.path("corrupt"))
        for p in ("a.png", "b.png"):
            with open(w.path("corrupt", p), "wb") as f:
                f.write(b"\x89PNG\r\n\x1a\n not really")
    if name == "lmdb-list-three-fields":
        with open(w.path("three.txt"), "w") as f:
            f.write("a.jpg b.png c.png\n")
    if name == "lmdb-rerun-replaces-own":
        from fcrn.data.sources import write_lmdb
        write_lmdb(os.path.join(w["prep"], "train.txt"), w.path("own.lmdb"))
    if name == "prepare-binary-id-list":
        fake.make_voc(w.path("binlist"), ["a1"], ["v1"])
        with open(w.path("binlist", "VOCdevkit", "VOC2012", "ImageSets", "Segmentation",
                         "val.txt"), "wb") as f:
            f.write(b"\xff\xfe\x00garbage")
    if name == "prepare-crlf-id-list":
        fake.make_voc(w.path("crlf"), ["a1", "a2"], ["v1"])
        sets = w.path("crlf", "VOCdevkit", "VOC2012", "ImageSets", "Segmentation")
        for split, ids in (("train", "a1\r\na2\r\n"), ("val", "v1\r\n")):
            with open(os.path.join(sets, split + ".txt"), "w", newline="") as f:
                f.write(ids)
    if name == "prepare-colour-label":
        fake.make_voc(w.path("rgblabel"), ["a1"], ["v1"])
        cv2.imwrite(w.path("rgblabel", "VOCdevkit", "VOC2012", "SegmentationClass", "a1.png"),
                    np.zeros((30, 40, 3), np.uint8))
    if name == "prepare-truncated-jpeg":
        fake.make_voc(w.path("cutjpeg"), ["a1"], ["v1"])
        path = w.path("cutjpeg", "VOCdevkit", "VOC2012", "JPEGImages", "a1.jpg")
        data = open(path, "rb").read()
        with open(path, "wb") as f:
            f.write(data[:len(data) // 3])
    if name == "fold-shifted-net-python-layer":
        # {net} with a _sim4 net's shift layer: the same weights, one Python layer more.
        with open(w.path("shift.prototxt"), "w") as f:
            f.write(TINY_NET.replace(
                'layer { name: "conv1" type: "Convolution" bottom: "data"',
                'layer { name: "pass" type: "Input" top: "pass" '
                'input_param { shape { dim: 1 } } }\n'
                'layer { name: "res3_shift" type: "Python" bottom: "data" bottom: "pass" '
                'top: "shifted" python_param { module: "fcrn_shift" layer: "ShiftLayer" } }\n'
                'layer { name: "conv1" type: "Convolution" bottom: "shifted"'))
    if name == "fold-train-net-with-data-layer":
        with open(w.path("train.prototxt"), "w") as f:
            f.write(TINY_NET.replace(
                'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 '
                'dim: 3 dim: 16 dim: 16 } } }',
                'layer { name: "data" type: "Python" top: "data" top: "label" python_param { '
                'module: "fcrn_data" layer: "SegDataLayer" param_str: \'{"source": "%s"}\' } }'
                % w.path("none.txt")))
    if name in ("train-weights-missing", "train-gpu-negative"):
        with open(w.path("solver.prototxt"), "w") as f:
            f.write('net: "%s" max_iter: 1 solver_mode: CPU' % w["net"])
    train_data_nets = {"train-data-layer-error-is-quoted": '{"source": "%s"}' % w.path("none.txt"),
                       "train-data-layer-error-of-lines-on-one": '{"source": ['}
    if name in train_data_nets:
        _data_net(w, "dl.prototxt", train_data_nets[name])
        with open(w.path("dl_solver.prototxt"), "w") as f:
            f.write('net: "%s" max_iter: 1 solver_mode: CPU snapshot_prefix: "%s"'
                    % (w.path("dl.prototxt"), w.path("dl")))
    layer_nets = {"data-layer-param-str-a-list": ("list.prototxt", '[1, 2]'),
                  "data-layer-crop-a-string": ("crop.prototxt",
                                               '{"source": "x.txt", "crop_size": "abc"}'),
                  "data-layer-workers-true": ("workers.prototxt",
                                              '{"source": "x.txt", "workers": true}')}
    if name in layer_nets:
        _data_net(w, *layer_nets[name])
    if name == "label-sample-without-stride":
        with open(w.path("sample.prototxt"), "w") as f:
            f.write('layer { name: "x" type: "DummyData" top: "label" top: "score"\n'
                    '  dummy_data_param { shape { dim: 1 dim: 1 dim: 4 dim: 4 }\n'
                    '    shape { dim: 1 dim: 2 dim: 2 dim: 2 } } }\n'
                    'layer { name: "s" type: "Python" bottom: "label" bottom: "score" top: "y"\n'
                    '  python_param { module: "fcrn_shift" layer: "LabelSampleLayer" } }\n')
    if name == "data-layer-wrong-num-classes-under-caffe":
        _data_net(w, "data.prototxt", '{"source": "%s", "crop_size": 8, "num_classes": 3, '
                  '"workers": 0}' % os.path.join(w["prep"], "train.txt"))
    if name == "data-layer-type-error-under-caffe":
        _data_net(w, "badscale.prototxt", '{"source": "%s", "scale": ["a", "b"]}'
                  % os.path.join(w["prep"], "train.txt"))
    if name == "shift-layer-bad-pass-under-caffe":
        with open(w.path("shift.prototxt"), "w") as f:
            f.write('layer { name: "x" type: "DummyData" top: "x" top: "pass"\n'
                    '  dummy_data_param { shape { dim: 1 dim: 1 dim: 4 dim: 4 } shape { dim: 1 }\n'
                    '    data_filler { type: "constant" value: 1 }\n'
                    '    data_filler { type: "constant" value: 5 } } }\n'
                    'layer { name: "s" type: "Python" bottom: "x" bottom: "pass" top: "y"\n'
                    '  python_param { module: "fcrn_shift" layer: "ShiftLayer" } }\n')


def _data_net(w, name, param_str):
    import json
    with open(w.path(name), "w") as f:
        f.write('layer { name: "d" type: "Python" top: "data" top: "label"\n'
                '  python_param { module: "fcrn_data" layer: "SegDataLayer" param_str: %s } }\n'
                % json.dumps(param_str))


@pytest.mark.parametrize("tool, argv, status, expect, check, changes",
                         DEFECTS + WEAK + EXTRA + ISSUE25 + REVIEW)
def test_bad_input(tool, argv, status, expect, check, changes, tmp_path, script, capsys,
                   caplog, request):
    w = World(str(tmp_path))
    argv = [a.format_map(w) for a in argv]
    expect = [e.format_map(w) for e in expect]
    prepare_row(w, request)
    before = snapshot(str(tmp_path))
    got, out, trace = run_tool(script, tool, argv, capsys, caplog, str(tmp_path),
                               env=w.get("env"))
    assert trace is None, trace
    assert got == status, out[-3000:]
    for fragment in expect:
        assert fragment in out, (fragment, out[-3000:])
    after = snapshot(str(tmp_path))
    allowed = {p.format_map(w) for p in changes}
    lost = [p for p, digest in before.items() if after.get(p) != digest and p not in allowed]
    assert lost == [], "inputs changed or removed: %s" % lost
    if check:
        check(w, out)


# --- interrupted and concurrent runs ------------------------------------------------

def _start_slow_preparation(tmp_path, out):
    """prepare_voc in its own process on a tree big enough to take a while;
    returns the process once its partial output folder exists."""
    fake.make_voc(str(tmp_path / "big"), ["t%03d" % i for i in range(400)], ["v1"],
                  size=(60, 80))
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "scripts", "prepare_voc.py"),
                             "--voc", str(tmp_path / "big"), "--out", out, "--workers", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for _ in range(20000):
        if [p for p in os.listdir(str(tmp_path)) if ".partial-" in p]:
            return proc
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.001)
    raise AssertionError("no partial output appeared")


def test_a_killed_preparation_leaves_nothing_the_next_run_keeps(tmp_path, script, caplog):
    out = str(tmp_path / "out")
    proc = _start_slow_preparation(tmp_path, out)
    proc.kill()
    proc.communicate()
    leftovers = [p for p in os.listdir(str(tmp_path)) if ".partial-" in p]
    assert len(leftovers) == 1 and not os.path.exists(out)
    killed_early = not os.listdir(str(tmp_path / leftovers[0]))  # before it took its lock
    mine = tmp_path / ".out.partial-mine"   # a user's folder of that name, no marker: kept
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    caplog.set_level(logging.INFO)
    assert script("prepare_voc").main(["--voc", str(tmp_path / "big"), "--out", out]) == 0
    assert killed_early or "left by an interrupted run" in caplog.text
    assert sorted(p for p in os.listdir(str(tmp_path)) if ".partial-" in p) == [mine.name]
    assert len(open(os.path.join(out, "train.txt")).read().splitlines()) == 400


def test_a_second_run_on_the_same_output_is_refused_while_the_first_writes(tmp_path, script,
                                                                           caplog):
    out = str(tmp_path / "out")
    proc = _start_slow_preparation(tmp_path, out)
    try:
        status = script("prepare_voc").main(["--voc", str(tmp_path / "big"), "--out", out])
    finally:
        _, err = proc.communicate()
    assert status == 2 and "is being written by another run right now" in caplog.text
    assert proc.returncode == 0, err
    assert len(open(os.path.join(out, "train.txt")).read().splitlines()) == 400
    assert not [p for p in os.listdir(str(tmp_path)) if ".partial-" in p]


def _alive(pid):
    """Whether a thread of process `pid` runs: its leader is a zombie while
    the others (OpenMP's) still exit, holding the process's files."""
    try:
        tasks = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return False
    for tid in tasks:
        try:
            with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                if f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X"):
                    return True
        except OSError:  # gone meanwhile
            pass
    return False


def test_a_killed_training_stops_its_caffe_and_frees_its_prefix(tmp_path, request):
    """train.py killed (SIGKILL, nothing of it runs any more): the caffe it
    started stops too, and only then is the prefix free for the next run."""
    w = World(str(tmp_path))
    _start_training(w, request)
    proc = w["running"]
    with open("/proc/%d/task/%d/children" % (proc.pid, proc.pid)) as f:
        children = [int(p) for p in f.read().split()]
    assert children
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    for _ in range(100):
        if not any(map(_alive, children)):
            break
        time.sleep(0.1)
    assert not any(map(_alive, children)), "caffe still trains after train.py was killed"
    with open(os.path.join(w["toy"], "snap", "toy.lock")) as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)   # free


def test_make_net_on_a_full_disk_leaves_nothing_and_the_rerun_works(tmp_path, script,
                                                                    monkeypatch, caplog):
    """The disk fills while the fourth file is renamed into place."""
    import errno
    out = str(tmp_path / "net")
    real, calls = os.replace, []

    def full(src, dst):
        calls.append(dst)
        if len(calls) == 4:
            raise OSError(errno.ENOSPC, "No space left on device", dst)
        return real(src, dst)
    monkeypatch.setattr(os, "replace", full)
    assert script("make_net").main(["--depth", "50", "--out", out]) == 1
    assert "No space left on device" in caplog.text
    assert not os.path.exists(out) and not [p for p in os.listdir(str(tmp_path))
                                            if p.startswith(".")]
    monkeypatch.undo()
    assert script("make_net").main(["--depth", "50", "--out", out]) == 0
    assert sorted(os.listdir(out)) == ["deploy.prototxt", "solver.prototxt", "test.prototxt",
                                       "train.prototxt"]


def test_make_net_force_over_a_net_on_a_full_disk_keeps_the_old_net(tmp_path, script,
                                                                    monkeypatch, caplog):
    """--force over an existing net, the disk full while the third of its four
    files is written: the old net stays whole (files were replaced one by one,
    leaving a ResNet-101 deploy net beside a ResNet-50 train net)."""
    import errno
    from fcrn import fileio
    out = str(tmp_path / "net")
    assert script("make_net").main(["--depth", "50", "--out", out]) == 0

    def files():
        return {name: open(os.path.join(out, name)).read() for name in os.listdir(out)}
    before, real, calls = files(), fileio.writes, []

    def filling(data):
        save = real(data)

        def save_unless_full(tmp):
            calls.append(tmp)
            if len(calls) == 3:
                raise OSError(errno.ENOSPC, "No space left on device", tmp)
            save(tmp)
        return save_unless_full
    monkeypatch.setattr(fileio, "writes", filling)
    assert script("make_net").main(["--depth", "101", "--out", out, "--force"]) == 1
    assert "No space left on device" in caplog.text
    assert files() == before  # no file replaced, no temporary left


def test_a_run_folder_may_be_a_link_to_an_empty_folder(tmp_path):
    """An experiment (the demo's) refuses a folder of the user's, not a link
    to an empty one."""
    from fcrn import experiment
    (tmp_path / "real").mkdir()
    os.symlink(str(tmp_path / "real"), str(tmp_path / "lnk"))
    experiment.Experiment(str(tmp_path / "lnk"), None, None, [])
    assert (tmp_path / "real" / ".steps").is_dir()


def test_every_list_a_tool_writes_the_next_tool_reads(tmp_path, script, caplog):
    """prepare_voc's val list, under a folder with a space, drives infer.py
    --list and evaluate.py --list as it drives make_lmdb.py and the data layer."""
    w = World(str(tmp_path))
    assert script("prepare_voc").main(["--voc", w["spaced"], "--out", w.path("p q")]) == 0
    val = w.path("p q", "val.txt")
    assert script("infer").main(["--list", val, "--out", w.path("o")] + [
        a.format_map(w) for a in INFER]) == 0
    assert os.path.exists(w.path("o", "v1.png"))
    assert script("evaluate").main(["--gt", w.path("p q", "SegmentationClassAug"), "--pred",
                                    w.path("o"), "--list", val, "--out-json",
                                    w.path("r.json"), "-q"]) == 0
    import json
    assert json.load(open(w.path("r.json")))["num_images"] == 1


def test_a_killed_file_write_is_cleaned_by_the_next_run(tmp_path, script, caplog):
    """A writer killed while writing a file leaves `.NAME.*.fcrn-tmp`; the
    next run of a tool writing NAME removes it (its lock is free)."""
    w = World(str(tmp_path))
    code = ("import sys, time\nfrom fcrn import fileio\n"
            "def save(tmp):\n    open(tmp, 'w').write('half')\n    print('ready', flush=True)\n"
            "    time.sleep(60)\n"
            "fileio.atomic_save(sys.argv[1], save)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, w.path("r.json")],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    live = [p for p in os.listdir(str(tmp_path)) if p.endswith(".fcrn-tmp")]
    assert len(live) == 1
    args = ["--gt", w["gt"], "--pred", w["pred"], "--dataset", "generic", "--num-classes", "3",
            "--out-json", w.path("r.json"), "-q"]
    assert script("evaluate").main(args) == 0     # a live writer's temporary stays
    assert os.path.exists(w.path(live[0]))
    proc.kill()
    proc.wait()
    caplog.set_level(logging.INFO)
    assert script("evaluate").main(args) == 0
    assert "left by an interrupted run" in caplog.text
    assert not [p for p in os.listdir(str(tmp_path)) if p.endswith(".fcrn-tmp")]

