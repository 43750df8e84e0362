"""What a tool refuses, as exceptions that `fcrn.cli.run` turns into one
message and an exit status (see docs/usage.md, "Command-line convention")."""


class Refusal(Exception):
    """Base of the two below. `problems` holds one line per bad item when
    there are several; the message shows the first 50."""

    def __init__(self, message, problems=()):
        self.problems = list(problems)
        if self.problems:
            shown = self.problems[:50]
            message += ":\n  " + "\n  ".join(shown)
            if len(self.problems) > len(shown):
                message += "\n  ... and %d more" % (len(self.problems) - len(shown))
        super().__init__(message)


class InputError(Refusal):
    """Bad input: a missing, unreadable, truncated or wrong-kind file, or data
    that contradicts itself (exit status 1)."""


class UsageError(Refusal):
    """A request refused as given (exit status 2): an output that exists and
    is not the tool's own without --force, an output over one of the inputs,
    options that contradict each other."""


# The line a Python layer writes for its exception under the caffe tool
# (fcrn.pylayer), which fcrn.train quotes from the log as the reason.
LAYER_ERROR = "Python layer error: "


def describe_oserror(e):
    """One line for an OSError: the file(s) it concerns, then the reason."""
    where = " ".join(str(f) for f in (e.filename, e.filename2) if f)
    return "%s: %s" % (where, e.strerror) if where and e.strerror else str(e)
