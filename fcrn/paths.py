"""Where the built parts the library runs with are: the custom-layer library,
the Caffe prefix (pycaffe and Caffe's own `caffe` tool), the project's `caffe`
(the wrapper that knows the layers) and the Python layers (layers/).

Each is found, first that has it:

1. an environment variable: FCRN_LAYERS_LIB, FCRN_CAFFE_PREFIX, FCRN_CAFFE,
   FCRN_PYTHON_LAYERS;
2. the installed configuration, `paths.json` beside this module, which
   `pip install .` writes from those variables or else from the build of the
   checkout it installs from (setup.py), so that an installed package finds
   the Caffe it was installed for;
3. the checkout this package lies in, as `make` builds it (build/).

`configuration(root, environ)` is what setup.py writes.
"""
import json
import os
import shutil

HERE = os.path.dirname(os.path.abspath(__file__))
INSTALLED = os.path.join(HERE, "paths.json")
# name: (environment variable, place in a built checkout)
ENTRIES = {
    "layers_library": ("FCRN_LAYERS_LIB", os.path.join("build", "libfcrn_layers.so")),
    "caffe_prefix": ("FCRN_CAFFE_PREFIX", None),   # from build/caffe-prefix
    "caffe": ("FCRN_CAFFE", os.path.join("build", "bin", "caffe")),
    "python_layers": ("FCRN_PYTHON_LAYERS", "layers"),
}


def checkout():
    """The checkout this package lies in, or None for an installed package."""
    root = os.path.dirname(HERE)
    found = all(os.path.exists(os.path.join(root, p)) for p in ("CMakeLists.txt", "layers"))
    return root if found else None


def _from_checkout(name, root):
    if root is None:
        return None
    if name == "caffe_prefix":
        try:
            with open(os.path.join(root, "build", "caffe-prefix")) as f:
                return f.read().strip() or None
        except OSError:
            return None
    path = os.path.join(root, ENTRIES[name][1])
    return path if os.path.exists(path) else None


def configuration(root, environ=os.environ):
    """{name: path} of every entry known from `environ` or the build of the
    checkout `root`: what an installed package is told."""
    found = {}
    for name, (variable, _) in ENTRIES.items():
        value = environ.get(variable) or _from_checkout(name, root)
        if value:
            found[name] = os.path.abspath(value)
    return found


def _installed():
    try:
        with open(INSTALLED) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def find(name):
    """Path of entry `name` (ENTRIES), or None where nothing names it."""
    variable, _ = ENTRIES[name]
    return os.environ.get(variable) or _installed().get(name) or \
        _from_checkout(name, checkout())


def origin(name):
    """Where `find(name)` takes its value from, for messages: the variable,
    the installed configuration (or that it cannot be read), the checkout."""
    variable, _ = ENTRIES[name]
    if os.environ.get(variable):
        return "%s=%s" % (variable, os.environ[variable])
    if os.path.exists(INSTALLED) and not _installed():
        return "%s, which cannot be read (reinstall the package)" % INSTALLED
    if _installed().get(name):
        return "%s (%s)" % (INSTALLED, _installed()[name])
    root = checkout()
    return "the checkout %s (%s)" % (root, "built" if _from_checkout(name, root) else
                                     "not built: run make") if root else \
        "nothing (set %s)" % variable


def layers_library():
    """The custom-layer library; where it would be in this checkout when
    nothing names it (so that a message can say where it was looked for)."""
    return find("layers_library") or os.path.join(
        checkout() or HERE, ENTRIES["layers_library"][1])


def pycaffe():
    """The folder that holds pycaffe (the package `caffe`), or None."""
    prefix = find("caffe_prefix")
    return os.path.join(prefix, "lib", "python3", "dist-packages") if prefix else None


def caffe_tool():
    """The `caffe` to run: the project's wrapper, else one on PATH."""
    return find("caffe") or shutil.which("caffe") or "caffe"
