"""List files: one item per line, fields separated by blanks.

Every list the project writes or reads goes through here: "image label" pair
lists (prepare_*.py, make_lmdb.py, the data layer), image lists (infer.py
--list) and id lists (VOC's ImageSets, evaluate.py --list). A field holding a
blank, a quote or a backslash is written quoted as a POSIX shell word
(`shlex.quote`), so any path survives the round trip (one holding a line
break is refused: a line cannot hold it); lines without quotes or backslashes
read exactly as blank-separated words, as before. The other way inputs are
named, a folder, is read by `files_under`.
"""
import os
import shlex

from .errors import InputError
from .fileio import atomic_write, within

_QUOTES = set("\"'\\")
_SPECIAL = _QUOTES | set(" \t\n\r")


def format_line(fields):
    broken = [f for f in fields if "\n" in f or "\r" in f]
    if broken:
        raise InputError("%r: a path with a line break cannot be written in a list" % broken[0])
    return " ".join(shlex.quote(f) if (not f or _SPECIAL & set(f)) else f for f in fields)


def parse_line(line, where):
    if _QUOTES.isdisjoint(line):
        return line.split()
    try:
        return shlex.split(line)
    except ValueError as e:
        raise InputError("%s: %s (quote a path holding quotes or backslashes as a shell "
                         "word, as the project's lists do)" % (where, e))


def read(path, min_fields=1, max_fields=2, what="list"):
    """[fields] of every non-blank line; InputError naming the line when a
    line has too few or too many fields, or the file is missing."""
    if not os.path.isfile(path):
        raise InputError("%s: %s file not found" % (path, what)
                         if not os.path.exists(path) else "%s: not a file" % path)
    rows = []
    try:
        with open(path, encoding="utf-8-sig") as f:
            lines = list(f)
    except UnicodeDecodeError as e:
        raise InputError("%s: not a text file (%s)" % (path, e.reason))
    except OSError as e:
        raise InputError("%s: cannot read (%s)" % (path, e.strerror or e))
    for n, line in enumerate(lines, 1):
        fields = parse_line(line, "%s:%d" % (path, n))
        if not fields:
            continue
        if not min_fields <= len(fields) <= max_fields:
            expected = "%d" % min_fields if min_fields == max_fields else \
                "%d to %d" % (min_fields, max_fields)
            raise InputError("%s:%d: expected %s field(s), got %d: %r"
                             % (path, n, expected, len(fields), line.rstrip("\n")))
        rows.append(fields)
    return rows


def write(path, rows):
    """Write rows of fields atomically."""
    atomic_write(path, "".join(format_line(fields) + "\n" for fields in rows))


def read_pairs(path, root=None, need_label=True):
    """[(image, label or None)] of an "image [label]" list, paths joined to
    `root` (default: the list's own folder). An empty list is an error."""
    root = os.path.dirname(os.path.abspath(path)) if root is None else root
    rows = read(path, 2 if need_label else 1, 2, "list")
    if not rows:
        raise InputError("%s: list is empty" % path)
    return [(os.path.join(root, r[0]), os.path.join(root, r[1]) if len(r) == 2 else None)
            for r in rows]


def write_pairs(path, pairs, root):
    """Write "image [label]" lines with paths relative to `root` (the list's
    final folder), so a list stays valid when the trees move together.
    Counted between real paths: the system resolves a ".." after a link
    from where the link leads, not from the link."""
    real = os.path.realpath(root)
    write(path, [[os.path.relpath(os.path.realpath(p), real) for p in pair if p is not None]
                 for pair in pairs])


def read_ids(path):
    """First field of every line (VOC ImageSets, SBD train/val, id lists)."""
    return [r[0] for r in read(path, 1, 2, "id list")]


def files_under(root, keep=lambda name: True):
    """The files under `root` (recursive, in sorted order) whose names `keep`
    accepts. Links to folders are followed, and each real folder is walked
    once, so that no file is found twice under two names: a link to a folder
    inside `root` (an ancestor included) adds nothing, its files keeping
    their own paths, and of several links to one folder outside, the first
    in sorted order names its files. AppleDouble files (`._a.jpg`, the
    metadata macOS leaves beside a.jpg on other file systems and in zip
    archives) are no one's data: never listed."""
    real_root = os.path.realpath(root)
    found, walked = [], set()
    for dirpath, dirs, names in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in walked:
            dirs[:] = []
            continue
        walked.add(real)
        dirs[:] = sorted(d for d in dirs if not _link_within(os.path.join(dirpath, d), real_root))
        found += [os.path.join(dirpath, n) for n in sorted(names)
                  if keep(n) and not n.startswith("._")]
    return found


def _link_within(path, real_root):
    return os.path.islink(path) and within(os.path.realpath(path), real_root)
