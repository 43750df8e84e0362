"""FCRN: fully convolutional residual networks for semantic segmentation on Caffe.

Importing the package loads nothing but Python: generation, conversion and
evaluation need neither pycaffe nor the project's C++ layers. Whatever builds
a net (`fcrn.caffeio.load_net`, `fcrn.caffeio.caffe()`) first calls
`load_layers()`, which loads the layer library (LeanBatchNorm,
BootstrappedSoftmaxWithLoss) into the process once and puts pycaffe on the
path; code that creates `caffe.Net` itself calls `fcrn.load_layers()` first.
Caffe's layer registry is shared between shared libraries, so loading the
library with RTLD_GLOBAL is all it takes. Where the library, Caffe and the rest are: `fcrn.paths`.
Importing the package also sets OPENBLAS_CORETYPE where OpenBLAS would pick
kernels below the CPU's (`fcrn.blas`; asked in a child process, once: the
value is inherited), before numpy or pycaffe load OpenBLAS.
"""
import ctypes
import importlib.util
import os
import sys
import threading
import warnings

from . import blas, paths

__version__ = "0.1.0"

# Before anything loads OpenBLAS: its kernels on CPUs it does not know.
blas.pin_kernels()

_LOADED = {}
_LOCK = threading.Lock()


def findable():
    """Put pycaffe and the Python layers on the path where they are not
    importable already (an installed package; the checkout's venv has them)."""
    for module, folder in (("caffe", paths.pycaffe()), ("fcrn_data", paths.find("python_layers"))):
        if folder and folder not in sys.path and importlib.util.find_spec(module) is None:
            sys.path.append(folder)


def load_layers():
    """Load the custom-layer library into this process (once) and make
    pycaffe and the Python layers importable (`findable`); returns the
    library's path, or None with a warning when it is not built (nets
    without the project's layers still work; one that uses them then fails
    in Caffe)."""
    findable()
    path = paths.layers_library()
    with _LOCK:
        if path not in _LOADED:
            if not os.path.isfile(path):
                warnings.warn(
                    "fcrn: custom Caffe layer library not found at %s; run 'make' in the "
                    "checkout or point FCRN_LAYERS_LIB at libfcrn_layers.so" % path,
                    RuntimeWarning, stacklevel=2)
                return None
            _LOADED[path] = ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
    return path
