"""The command-line convention of scripts/ (docs/usage.md, "Command-line convention").

- `parser(doc)`: `--help` shows the script's whole docstring, examples included.
- `ranged(...)`: numeric options are range-checked at parse time; a bad
  value is a usage error naming the option (exit status 2).
- `run(job)`: logging set up and Caffe's own log quiet (warnings and its
  net printout hidden unless --verbose or GLOG_minloglevel says otherwise),
  then the job. UsageError gives exit status 2,
  InputError and OSError 1, each as one message naming the file and the
  problem, never a traceback; otherwise the job's own status if it returns
  an int, else 0.
"""
import argparse
import logging
import math
import os

from .errors import InputError, UsageError, describe_oserror


def parser(doc, **kwargs):
    return argparse.ArgumentParser(description=doc,
                                   formatter_class=argparse.RawDescriptionHelpFormatter,
                                   **kwargs)


def _interval(low, high, low_open, high_open):
    if low is None and high is None:
        return "a finite number"
    if high is None:
        return "%s %g" % (">" if low_open else ">=", low)
    if low is None:
        return "%s %g" % ("<" if high_open else "<=", high)
    return "in %s%g, %g%s" % ("(" if low_open else "[", low, high, ")" if high_open else "]")


def ranged(kind, low=None, high=None, low_open=False, high_open=False):
    """argparse `type` converting with `kind` (int or float) and refusing
    values outside the interval (and NaN or infinity)."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                "%r is not %s" % (text, "an integer" if kind is int else "a number"))
        if isinstance(value, float) and not math.isfinite(value) or \
                low is not None and (value < low or low_open and value == low) or \
                high is not None and (value > high or high_open and value == high):
            raise argparse.ArgumentTypeError("must be %s, not %s" % (
                _interval(low, high, low_open, high_open), text))
        return value
    parse.__name__ = kind.__name__
    return parse


positive_int = ranged(int, 1)
nonnegative_int = ranged(int, 0)
positive_float = ranged(float, 0, low_open=True)
unit_fraction = ranged(float, 0, 1, high_open=True)  # [0, 1)
finite = ranged(float)


def add_jobs(parser, what, default=None):
    """--jobs N: threads that read, decode or write files (--workers, its
    earlier name in the data tools, is still accepted)."""
    parser.add_argument("--jobs", "--workers", dest="jobs", type=positive_int, default=default,
                        metavar="N", help="%s (default: %s)" % (
                            what, default if default is not None else "the CPUs + 1, at most 8"))


def add_force(parser, what="an existing output", knows_its_own=True):
    """--force; `knows_its_own`: the tool replaces its own earlier output
    without it (fileio.check_free's is_own), which the help then says."""
    own = " that is not this tool's own" if knows_its_own else ""
    parser.add_argument("--force", action="store_true",
                        help="replace %s%s (never an input)" % (what, own))


def add_no_share_memory(parser):
    """--no-share-memory: the net is built with share_memory: false (Caffe
    patch 0010) instead of the prototxt's choice (`share_memory` is then
    False, else None)."""
    parser.add_argument("--no-share-memory", dest="share_memory", action="store_const",
                        const=False, default=None,
                        help="give every blob of the net its own memory (more memory; "
                        "for reading intermediate blobs, or a net whose layers cannot "
                        "share)")


def add_verbose(parser):
    parser.add_argument("--verbose", action="store_true",
                        help="show Caffe's own log too (its INFO lines and net printout)")


def run(job, name=None, verbose=False):
    """Run `job()` under the convention above; returns the exit status."""
    if not verbose:
        # glog reads this when libcaffe loads, which is inside `job`; errors
        # still show (Caffe's own fatal lines, and every refusal here).
        os.environ.setdefault("GLOG_minloglevel", "2")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    log = logging.getLogger(name)
    try:
        status = job()
    except UsageError as e:
        log.error("%s", e)
        return 2
    except InputError as e:
        log.error("%s", e)
        return 1
    except OSError as e:
        log.error("%s", describe_oserror(e))
        return 1
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130
    return status if isinstance(status, int) else 0
