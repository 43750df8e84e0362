"""Python package of the FCRN project: network generator, data, inference, evaluation.

The package needs pycaffe built with the project's patches (see README, `make`);
pycaffe itself is not on PyPI, so it is not listed in install_requires.
"""
from setuptools import find_packages, setup

setup(
    name="fcrn",
    version="0.1.0",
    description="Fully convolutional residual networks for semantic segmentation "
                "(Wu, Shen, van den Hengel 2016) on Caffe",
    packages=find_packages(include=["fcrn", "fcrn.*"]),
    package_data={"fcrn.datasets": ["*.json"]},  # the dataset registry
    python_requires=">=3.9",
    install_requires=["numpy", "opencv-python-headless", "lmdb", "protobuf", "pyyaml", "tqdm"],
    license="BSD-2-Clause",
)
