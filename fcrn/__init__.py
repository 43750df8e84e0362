"""FCRN: fully convolutional residual networks for semantic segmentation on Caffe.

Importing this package loads the project's C++ layers (LeanBatchNorm,
BootstrappedSoftmaxWithLoss) into the process, so that every `caffe.Net`
created afterwards knows them. Caffe's layer registry is shared between
shared libraries, so loading the library with RTLD_GLOBAL is all it takes.
"""
import ctypes
import os
import warnings

__version__ = "0.1.0"

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def layers_library():
    """Path of the custom-layer library: $FCRN_LAYERS_LIB, else the build tree."""
    return os.environ.get("FCRN_LAYERS_LIB") or os.path.join(
        ROOT, "build", "libfcrn_layers.so")


def _load_layers():
    path = layers_library()
    if not os.path.isfile(path):
        # Generation, conversion and evaluation work without the layers, so
        # this is a warning; creating a net that uses them then fails in Caffe.
        warnings.warn(
            "fcrn: custom Caffe layer library not found at %s; run 'make' in %s "
            "or point FCRN_LAYERS_LIB at libfcrn_layers.so" % (path, ROOT),
            RuntimeWarning, stacklevel=3)
        return None
    return ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)


_LIBRARY = _load_layers()
