"""Python package of the FCRN project: network generator, data, inference, evaluation.

The package needs pycaffe built with the project's patches (see README, `make`);
pycaffe itself is not on PyPI, so it is not listed in install_requires.

The version bounds are constraints.txt's, read from it (one home): pycaffe is
compiled against Debian 12's numpy 1.24 and protobuf 4.21, which a newer
numpy or protobuf from PyPI would hide (`import caffe` then fails), and onnx
and onnxruntime are the last releases that accept that protobuf.

A non-editable install (`pip install .` after `make`) writes fcrn/paths.json:
where the layer library, the Caffe prefix, the project's `caffe` and the
Python layers are (the FCRN_* variables of fcrn.paths, else this checkout's
build), so that the installed package finds them from anywhere.
"""
import importlib.util
import json
import os
import re

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))


def constraints(path=os.path.join(HERE, "constraints.txt")):
    """{package: version specifier} of a pip constraints file."""
    found = {}
    with open(path) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line:
                name = re.match(r"[A-Za-z0-9_.-]+", line).group(0)
                found[name.lower()] = line[len(name):].strip()
    return found


BOUNDS = constraints()


class BuildPy(build_py):
    """build_py that also writes the installed configuration (fcrn.paths)."""

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return   # an editable install is the checkout: fcrn.paths finds its build
        # fcrn/paths.py imports nothing of the package: loaded alone, as one home
        # for what the configuration holds.
        spec = importlib.util.spec_from_file_location(
            "fcrn_paths", os.path.join(HERE, "fcrn", "paths.py"))
        paths = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(paths)
        found = paths.configuration(HERE)
        with open(os.path.join(self.build_lib, "fcrn", "paths.json"), "w") as f:
            json.dump(found, f, indent=1, sort_keys=True)


def requirement(name):
    return name + BOUNDS.get(name, "")


setup(
    name="fcrn",
    version="0.1.0",
    description="Fully convolutional residual networks for semantic segmentation "
                "(Wu, Shen, van den Hengel 2016) on Caffe",
    packages=find_packages(include=["fcrn", "fcrn.*"]),
    package_data={"fcrn.datasets": ["*.json"]},  # the dataset registry
    python_requires=">=3.9",
    install_requires=[requirement(n) for n in ("numpy", "opencv-python-headless", "lmdb",
                                               "protobuf", "pyyaml", "pillow", "tqdm")],
    # scripts/export_onnx.py and the onnxruntime timing of scripts/bench_infer.py
    extras_require={"onnx": [requirement("onnx"), requirement("onnxruntime")]},
    license="BSD-2-Clause",
    cmdclass={"build_py": BuildPy},
    # setuptools' own build tree, out of the way of CMake's files in build/
    options={"build": {"build_base": os.path.join("build", "python")}},
)
