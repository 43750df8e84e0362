"""Writing outputs: complete or absent, with the umask's permissions, never
over something that is not the tool's own.

- `atomic_write(path, data)` / `atomic_save(path, save)`: a file is written
  under a temporary name in its folder and renamed into place;
  `atomic_save_all` renames several only once all are written.
- `output_dir(out, ...)`: a folder is built under a temporary name beside it
  and swapped in whole when complete (an atomic exchange where an old output
  is replaced), so the previous output survives a failed or killed run.
- `check_targets(...)`: the guard every writer runs before writing: no two
  outputs one file, no output equal to, inside or around one of its inputs
  (even with --force;
  `check_holds` for a folder a tool writes into),
  no existing target replaced unless it is the tool's own earlier output or
  --force is given, no target under a file (each checked before any is
  written).
- `exclusive(path, what)`: one run at a time (a lock file, e.g. one
  training per snapshot prefix).
- `clean_leftovers(...)`: temporaries of killed runs, recognised by their
  name and by a lock that only a live writer holds (or, for a folder killed
  before it got its lock, by being empty), removed by the next run.
"""
import bisect
import contextlib
import ctypes
import errno
import fcntl
import glob
import json
import logging
import os
import shutil
import tempfile

from .errors import UsageError

log = logging.getLogger(__name__)

TMP_SUFFIX = ".fcrn-tmp"
PARTIAL, OLD = ".partial-", ".old-"
LOCK_NAME = ".fcrn-writer"  # inside a partial folder, locked by its writer


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _lock(fd):
    """Take the writer's lock on an open file; the kernel drops it when the
    process dies, which is how leftovers of killed runs are recognised."""
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _is_locked(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


@contextlib.contextmanager
def exclusive(path, what):
    """Hold the lock file `path` (created if need be, holding this process's
    id) for the block, which gets its descriptor: a second holder is refused
    with a UsageError naming the running one. An flock, so a killed holder
    leaves no stale lock; a child given the descriptor holds it as long as
    it lives. `what`: what the lock guards, for the message."""
    ensure_dir(os.path.dirname(os.path.abspath(path)))
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            _lock(fd)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            pid = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            raise UsageError("%s is running (pid %s; lock %s); wait for it to end or stop it"
                             % (what, pid, path))
        os.ftruncate(fd, 0)
        os.pwrite(fd, b"%d\n" % os.getpid(), 0)
        yield fd
    finally:
        os.close(fd)


def ensure_dir(path):
    """os.makedirs(path, exist_ok=True), with an error that names the file
    standing in the way when one does."""
    try:
        os.makedirs(path, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        _refuse_blocked(path, _blocker(path) or path)


def _blocker(folder):
    """The file standing where `folder` or one of its ancestors would be, or None."""
    return next((a for a in [folder] + list(_ancestors(os.path.abspath(folder)))
                 if os.path.lexists(a) and not os.path.isdir(a)), None)


def check_writable(target):
    """OSError naming `target` when nothing can be created in the folder it
    would go in (or the nearest one of its parents that exists): a read-only
    file system, a folder without write permission."""
    folder = os.path.dirname(os.path.abspath(target))
    while not os.path.isdir(folder) and os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise OSError(e.errno, "cannot write there (%s)" % e.strerror, target) from None


def _refuse_blocked(folder, blocker):
    raise NotADirectoryError(errno.ENOTDIR, "is a file, so %s cannot be created" % folder,
                             blocker)


def atomic_save_all(items):
    """For each (path, save) of ``items``, call ``save(tmp)`` with a
    temporary path beside ``path``; once all are saved, rename them into
    place: a reader never sees half a file, and a failure leaves none of
    them written (the outputs of one run stay together). Errors name the
    path, not the temporary one."""
    for path, _ in items:  # a folder cannot be renamed over: say so before writing any
        if os.path.isdir(path) and not os.path.islink(path):
            raise IsADirectoryError(errno.EISDIR, "is a folder, not a file: give a file's path",
                                    path)
    temps = []
    try:
        for path, save in items:
            directory = os.path.dirname(os.path.abspath(path))
            ensure_dir(directory)
            try:
                fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".",
                                           suffix=TMP_SUFFIX, dir=directory)
            except OSError as e:
                raise OSError(e.errno, e.strerror, path) from None
            temps.append((fd, tmp))
            _lock(fd)
            try:
                save(tmp)
            except OSError as e:
                if e.filename != tmp:
                    raise
                raise OSError(e.errno, e.strerror, path) from None
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private
        for (_, tmp), (path, _) in zip(temps, items):
            os.replace(tmp, path)
    except BaseException:
        for _, tmp in temps:
            with contextlib.suppress(OSError):
                os.remove(tmp)
        raise
    finally:
        for fd, _ in temps:
            os.close(fd)


def atomic_save(path, save):
    """`atomic_save_all` of one file."""
    atomic_save_all([(path, save)])


def writes(data):
    """The `save` that writes ``data`` (str or bytes)."""
    if isinstance(data, str):
        data = data.encode("utf-8")

    def save(tmp):
        with open(tmp, "wb") as f:
            f.write(data)
    return save


def atomic_write(path, data):
    """Write ``data`` (str or bytes) to ``path`` atomically."""
    atomic_save(path, writes(data))


# ---------------------------------------------------------------- guards

def _real(path):
    return os.path.realpath(os.path.abspath(path))


def within(path, folder):
    """Whether the path `path` is `folder` or lies below it (both resolved)."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def check_disjoint(targets, inputs):
    """Refuse (UsageError, whatever --force says) a target equal to an input,
    inside an input folder, or holding an input (replacing it would delete
    that input). Fast for thousands of targets and inputs."""
    check_named(targets)
    given = _by_real_path(inputs)
    reals = sorted(given)
    clashes = []
    for target in targets:
        real = _real(target)
        inside = next((a for a in _ancestors(real) if a in given), None)
        holds = _held(real, reals)
        if real in given:
            clashes.append("%s would overwrite the input %s" % (target, given[real]))
        elif inside:
            clashes.append("%s would be written inside the input %s" % (target, given[inside]))
        elif holds:
            clashes.append("%s would replace the input %s" % (target, given[holds]))
    if clashes:
        raise UsageError("refusing to write over an input (even with --force)", clashes)


def check_holds(folders, inputs):
    """Refuse (UsageError, whatever --force says) a folder that a tool writes
    into and that holds one of its inputs (a list, the images and labels it
    names, a classes file): the outputs would mix with the inputs, and the
    tool's marker would make the input folder its own for later runs.
    `folders`: {option: folder}, the option naming it in the message."""
    given = _by_real_path(inputs)
    reals = sorted(given)
    clashes = []
    for option, folder in folders.items():
        if folder:
            held = _held(_real(folder), reals)
            if held:
                clashes.append("%s %s holds the input %s" % (option, folder, given[held]))
    if len(clashes) == 1:
        raise UsageError("%s; refusing to write into it (even with --force): write the "
                         "outputs elsewhere" % clashes[0])
    if clashes:
        raise UsageError("refusing to write into a folder that holds an input (even with "
                         "--force); write the outputs elsewhere", clashes)


def _by_real_path(paths):
    """{real path: path as given} of the non-empty `paths`."""
    given = {}
    for p in paths:
        if p:
            given.setdefault(_real(p), p)
    return given


def _held(real, reals):
    """The first of the sorted real paths `reals` below the folder `real`, or None."""
    prefix = real.rstrip(os.sep) + os.sep
    j = bisect.bisect_left(reals, prefix)
    return reals[j] if j < len(reals) and reals[j].startswith(prefix) else None


def check_named(targets):
    """An empty path would be the current folder to the file system."""
    if any(not t for t in targets):
        raise UsageError("an output path is empty")


def _ancestors(path):
    while True:
        parent = os.path.dirname(path)
        if parent == path:
            return
        yield parent
        path = parent


def check_free(targets, force=False, is_own=None):
    """Refuse (UsageError) a target that exists, is not an empty folder and
    is not the tool's own earlier output (``is_own(path)``), unless ``force``.
    An empty path is refused whatever ``force`` says."""
    check_named(targets)
    if force:
        return
    taken = [t for t in targets if occupied(t) and not (is_own and is_own(t))]
    # A tool that cannot tell its own outputs (no is_own) replaces none unasked.
    whose = " and is not this tool's output" if is_own else ""
    if len(taken) == 1:
        raise UsageError("%s: exists%s; use --force to replace it" % (taken[0], whose))
    if taken:
        raise UsageError("these exist%s; use --force to replace them"
                         % whose.replace(" is ", " are "), taken)


def check_apart(targets):
    """Refuse (UsageError) two targets that are one file: the second write
    would replace the first."""
    seen = {}
    for target in filter(None, targets):
        first = seen.setdefault(_real(target), target)
        if first is not target:
            raise UsageError("%s and %s are one file; each output needs a file of its own"
                             % (first, target))


def check_targets(targets, inputs=(), force=False, is_own=None):
    """The guards every writer runs before writing (see the module
    docstring), then the temporaries that killed runs left for these targets
    are removed."""
    check_apart(targets)
    check_disjoint(targets, inputs)
    check_free(targets, force, is_own)
    for target in targets:  # before any is written, and before the work
        folder = os.path.dirname(os.path.abspath(target))
        blocker = _blocker(folder)
        if blocker:
            _refuse_blocked(folder, blocker)
        check_writable(target)
    for target in targets:
        folder, name = os.path.split(os.path.abspath(target))
        if os.path.isdir(folder):
            clean_leftovers(folder, name)


def report_targets(path, title, force=False, extra=(".json",)):
    """The guard of a tool that writes a report `path` whose first line is
    `title`, and files beside it with the `extra` extensions (its JSON):
    run it before the work, so that a refusal comes first. An existing
    report with that title is the tool's own. Returns the paths."""
    targets = [path] + [os.path.splitext(path)[0] + ext for ext in extra]

    def own(_):
        try:
            with open(path, errors="replace") as f:
                return f.readline().rstrip("\n") == title
        except OSError:
            return False
    check_targets(targets, (), force, own)
    return targets


MARK = ".fcrn-output"


def mark(folder, tool):
    """Record in `folder` that `tool` writes its outputs there."""
    ensure_dir(folder)
    path = os.path.join(folder, MARK)
    if not is_marked(folder, tool):
        atomic_write(path, json.dumps({"tool": tool}) + "\n")


def is_marked(folder, tool):
    try:
        with open(os.path.join(folder, MARK)) as f:
            return json.load(f).get("tool") == tool
    except (OSError, ValueError, AttributeError):
        return False


def occupied(path):
    """Whether `path` exists and is not an empty folder."""
    if os.path.isdir(path) and not os.path.islink(path):
        return bool(os.listdir(path))
    return os.path.lexists(path)


def clean_leftovers(folder, name=None):
    """Remove what killed runs left in ``folder``: temporary files
    ``.NAME.*.fcrn-tmp`` and folders ``.NAME.partial-*`` / ``.NAME.old-*``
    (NAME = ``name``, or any) whose writer's lock is free. Raises UsageError
    when a live run is writing the same output."""
    base = glob.escape(name) if name else "*"
    for path in glob.glob(os.path.join(glob.escape(folder), ".%s.*%s" % (base, TMP_SUFFIX))):
        if not _is_locked(path):
            log.info("removing %s, left by an interrupted run", path)
            with contextlib.suppress(OSError):
                os.remove(path)
    for kind in (PARTIAL, OLD):
        for path in glob.glob(os.path.join(glob.escape(folder), ".%s%s*" % (base, kind))):
            marker = os.path.join(path, LOCK_NAME)
            if not os.path.isfile(marker):
                if os.path.isdir(path) and not os.listdir(path):
                    # killed between creating it and locking it: nothing to lose
                    with contextlib.suppress(OSError):
                        os.rmdir(path)
                continue  # not one of ours, or being swapped in right now
            if _is_locked(marker):
                if kind == PARTIAL and name:
                    raise UsageError("%s is being written by another run right now (into "
                                     "%s); wait for it to finish"
                                     % (os.path.join(folder, name), path))
                continue
            log.info("removing %s, left by an interrupted run", path)
            shutil.rmtree(path, ignore_errors=True)


def _exchange(a, b):
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False
    where the file system cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), b)


@contextlib.contextmanager
def _marked_temp_dir(parent, base, kind):
    try:
        path = tempfile.mkdtemp(prefix="." + base + kind, dir=parent)
    except OSError as e:  # named by the folder it is for, not the temporary one
        raise OSError(e.errno, e.strerror, os.path.join(parent, base)) from None
    os.chmod(path, 0o777 & ~_umask())  # mkdtemp makes it private; the output is not
    fd = os.open(os.path.join(path, LOCK_NAME), os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        _lock(fd)
        yield path
    finally:
        os.close(fd)


@contextlib.contextmanager
def output_dir(out, inputs=(), force=False, is_own=None):
    """Yield a temporary folder beside ``out``; when the block completes it
    becomes ``out`` (the old one, if any, is swapped out and deleted); on any
    error or kill it never does. Checks the target first (`check_targets`,
    which also removes the leftovers of killed runs of the same output) and
    never replaces the folder the process runs in. A link to a folder stays:
    the folder it names is replaced."""
    check_targets([out], inputs, force, is_own)
    out = _real(out) if os.path.islink(out) else os.path.abspath(out)
    if within(_real(os.getcwd()), _real(out)):
        raise UsageError("%s holds the current folder; refusing to replace it (even with "
                         "--force)" % out)
    parent, base = os.path.split(out)
    ensure_dir(parent)
    with _marked_temp_dir(parent, base, PARTIAL) as tmp:
        try:
            yield tmp
            os.remove(os.path.join(tmp, LOCK_NAME))
            if not os.path.lexists(out):
                os.rename(tmp, out)
            elif _exchange(tmp, out):
                _remove(tmp)
            else:  # two renames (no atomic exchange here): the old output is set aside
                # in a marked folder, then deleted; a kill between them loses it
                with _marked_temp_dir(parent, base, OLD) as old:
                    os.rename(out, os.path.join(old, "previous"))
                    os.rename(tmp, out)
                shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            if os.path.lexists(tmp):
                _remove(tmp)
            raise


def _remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            os.remove(path)
