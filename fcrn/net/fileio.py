"""Atomic file writes (no pycaffe import, so that weight conversion needs none)."""
import os
import tempfile


def atomic_write(path, text):
    atomic_write_bytes(path, text.encode())


def atomic_write_bytes(path, data):
    """Write via a temporary file in the same folder and os.replace: readers
    never see a half-written file."""
    directory = os.path.dirname(path) or '.'
    fd, tmp = tempfile.mkstemp(dir=directory, prefix='.' + os.path.basename(path))
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask
