"""What the project's Python layers (layers/fcrn_data.py, fcrn_shift.py) share.

`parse_param_str`: param_str is JSON or YAML (`yaml.safe_load`, never eval),
merged over the layer's defaults; unknown or missing keys are refused with
the layer's name.

`Layer`: the base class. Its class attribute `blob_use` tells Caffe's
memory sharing (NetParameter.share_memory, patch 0010) how the layer uses
its blobs: None (the default) vouches for nothing, and a net holding the
layer then runs unshared (or is refused when it sets share_memory: true);
"computes" promises that each forward writes every top in full, each
backward writes in full every bottom diff it is asked to propagate, and no
blob's memory (its numpy views included) is kept between calls, so that
Caffe may give that memory to other blobs in between; values that reshape
reads from a bottom are those of the last forward.

The `caffe` tool calls a Python layer's setup,
reshape, forward and backward without printing a Python exception (it only
reports `boost::python::error_already_set` and aborts), so every exception
of these methods, whatever its type, is written to stderr on one line, after
errors.LAYER_ERROR and the layer's name, and then raised as it was.
"""
import functools
import json
import sys

import caffe
import yaml

from .errors import LAYER_ERROR

METHODS = ("setup", "reshape", "forward", "backward")


def parse_param_str(who, text, defaults, required=()):
    """Dict of `text` (JSON or YAML mapping) merged over `defaults`."""
    text = text or ""
    try:
        given = json.loads(text) if text.strip() else {}
    except ValueError:
        try:
            given = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise ValueError("%s: param_str is neither JSON nor YAML: %s" % (who, e))
    if not isinstance(given, dict):
        raise ValueError("%s: param_str must be a mapping, not %r" % (who, text))
    allowed = set(defaults) | set(required)
    unknown = sorted(set(given) - allowed)
    if unknown:
        raise ValueError("%s: unknown param_str key(s) %s (allowed: %s)"
                         % (who, unknown, sorted(allowed)))
    missing = sorted(set(required) - set(given))
    if missing:
        raise ValueError("%s: param_str lacks %s" % (who, missing))
    return dict(defaults, **given)


def _reported(method):
    @functools.wraps(method)
    def run(self, *args):
        try:
            return method(self, *args)
        except Exception as e:
            who = self.describe()
            text = str(e)
            if not text.startswith(who):
                text = "%s (%s): %s: %s" % (who, method.__name__, type(e).__name__, text)
            # one line (a YAML error spans several): fcrn.train quotes it
            sys.stderr.write(LAYER_ERROR + " ".join(text.splitlines()) + "\n")
            sys.stderr.flush()
            raise
    return run


class Layer(caffe.Layer):
    """Base of the project's Python layers; subclasses get their errors
    reported (see the module docstring), name themselves by `describe()`
    and declare `blob_use`."""

    blob_use = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for name in METHODS:
            if name in cls.__dict__:
                setattr(cls, name, _reported(cls.__dict__[name]))

    def describe(self):
        return "%s.%s" % (type(self).__module__, type(self).__name__)
