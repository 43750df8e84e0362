"""Python package of the FCRN project: network generator, data, inference, evaluation.

The package needs pycaffe built with the project's patches (see README, `make`);
pycaffe itself is not on PyPI, so it is not listed in install_requires.

The version bounds are constraints.txt's, read from it (one home): pycaffe is
compiled against Debian 12's numpy 1.24 and protobuf 4.21, which a newer
numpy or protobuf from PyPI would hide (`import caffe` then fails), and onnx
and onnxruntime are the last releases that accept that protobuf.
"""
import os
import re

from setuptools import find_packages, setup

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
)
