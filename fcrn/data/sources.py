"""Training-data sources: "image label" list files and the project's LMDB.

LMDB record format (version 1), one self-contained record per key:

    key    b"%08d" % index, index = 0 .. count-1, in list order
    value  b"FCRNSEG1" | uint32 LE name_len | uint32 LE image_len | uint32 LE label_len
           | name (UTF-8, the image path as written in the list)
           | image (the original encoded file, JPEG or PNG, byte for byte)
           | label (single-channel 8-bit PNG)

plus the key b"__fcrn_meta__" holding JSON {format, count, num_classes,
fingerprint, list, skipped}. Nothing is pickled: a record is parsed with
`struct` only, so an LMDB from elsewhere cannot run code.
"""
import concurrent.futures
import json
import logging
import os
import struct
import threading

from .. import fileio, lists
from ..errors import InputError
from ..imageio import decode_image, decode_label, read_bytes
from .common import check_pair, fingerprint

log = logging.getLogger(__name__)

MAGIC = b"FCRNSEG1"
HEADER = struct.Struct("<III")
META_KEY = b"__fcrn_meta__"
FORMAT = "fcrn-lmdb/1"


def encode_record(name, image, label):
    n = name.encode("utf-8")
    return b"".join([MAGIC, HEADER.pack(len(n), len(image), len(label)), n, image, label])


def decode_record(buf, what="record"):
    """-> (name, image bytes, label bytes); InputError on a malformed record."""
    buf = bytes(buf)
    start = len(MAGIC) + HEADER.size
    if len(buf) < start or buf[:len(MAGIC)] != MAGIC:
        raise InputError("%s: not an FCRN LMDB record (bad magic)" % what)
    n, i, l = HEADER.unpack_from(buf, len(MAGIC))
    if start + n + i + l != len(buf):
        raise InputError("%s: truncated or corrupt record" % what)
    name = buf[start:start + n].decode("utf-8", "replace")
    return name, buf[start + n:start + n + i], buf[start + n + i:]


def is_lmdb(path):
    return os.path.isfile(os.path.join(path, "data.mdb"))


def _list_num_classes(list_path):
    """num_classes from the manifest the preparation scripts write beside their lists."""
    try:
        with open(os.path.join(os.path.dirname(os.path.abspath(list_path)), "manifest.json")) as f:
            return int(json.load(f)["num_classes"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


# py-lmdb refuses to open one environment twice in a process, and an
# environment must not cross a fork: read-only environments are shared per
# process and per file identity (a rewritten LMDB is a new file).
_ENVS = {}
_ENVS_LOCK = threading.Lock()


def _after_fork_in_child():
    """A forked child must not use its parent's environments, and py-lmdb's
    "already open" registry, inherited by fork, would refuse to open them
    again: close the inherited handles (this unmaps the child's copy only)."""
    global _ENVS_LOCK
    _ENVS_LOCK = threading.Lock()  # another thread may have held it at fork
    for key in list(_ENVS):
        try:
            _ENVS.pop(key).close()
        except Exception:
            pass


os.register_at_fork(after_in_child=_after_fork_in_child)


def _env_key(path):
    st = os.stat(os.path.join(path, "data.mdb"))
    return os.getpid(), st.st_dev, st.st_ino


def shared_env(path):
    import lmdb
    with _ENVS_LOCK:
        key = _env_key(path)
        if key not in _ENVS:
            _ENVS[key] = lmdb.open(path, readonly=True, lock=False, readahead=False,
                                   subdir=True, max_readers=256)
        return _ENVS[key]


class TruncatedLmdb(InputError):
    """An LMDB whose data.mdb is shorter than its pages."""


def check_complete(env, path):
    """Raises TruncatedLmdb where data.mdb ends before the last page its meta
    pages name (an interrupted copy, a full disk): reading such a page maps
    nothing and kills the process (SIGBUS). Reads the meta pages only."""
    need = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
    have = os.path.getsize(os.path.join(path, "data.mdb"))
    if have < need:
        raise TruncatedLmdb("%s: LMDB truncated (data.mdb holds %d bytes of the %d its "
                            "pages take): copy it again, or write it again with "
                            "make_lmdb.py --force" % (path, have, need))


def read_lmdb_meta(path):
    import lmdb
    if not is_lmdb(path):
        raise InputError("%s: LMDB does not exist (no data.mdb)" % path)
    with _ENVS_LOCK:
        env = _ENVS.get(_env_key(path))
    private = env is None
    try:
        if private:
            env = lmdb.open(path, readonly=True, lock=False, readahead=False, subdir=True)
        check_complete(env, path)
        with env.begin() as txn:
            raw = txn.get(META_KEY)
    except lmdb.Error as e:
        raise InputError("%s: cannot open LMDB (%s)" % (path, e))
    finally:
        if private and env is not None:
            env.close()
    if raw is None:
        raise InputError("%s: not an FCRN LMDB (no %s key); write it with "
                           "scripts/make_lmdb.py" % (path, META_KEY.decode()))
    try:
        meta = json.loads(raw.decode("utf-8"))
    except ValueError:
        meta = None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise InputError("%s: LMDB format %r, expected %r" % (
            path, meta.get("format") if isinstance(meta, dict) else meta, FORMAT))
    return meta


def is_fcrn_lmdb(path):
    try:
        read_lmdb_meta(path)
        return True
    except InputError:
        return False


def write_lmdb(list_path, out_path, root=None, num_classes=None, skip_bad=False,
               workers=None, chunk=64, force=False):
    """Validate every pair of the list and store it, encoded as found, into
    the LMDB `out_path`, complete or absent. Returns the meta dict; a no-op
    when `out_path` already holds this list with unchanged files. A folder
    that is not an FCRN LMDB is replaced only with `force`, an input never."""
    import lmdb
    from tqdm import tqdm
    pairs = lists.read_pairs(list_path, root, need_label=True)
    if num_classes is None:
        num_classes = _list_num_classes(list_path)
    if num_classes is None:
        raise InputError("%s: number of classes unknown (no manifest.json beside the "
                           "list); pass it explicitly" % list_path)
    files = [p for pair in pairs for p in pair]
    fileio.check_disjoint([out_path], [list_path] + files)
    # The files' absolute paths stand for `root`, however it is spelt.
    fp = fingerprint([list_path] + files, {"format": FORMAT, "num_classes": num_classes,
                                           "skip_bad": bool(skip_bad)})
    try:
        if read_lmdb_meta(out_path).get("fingerprint") == fp:
            log.info("%s is up to date", out_path)
            return read_lmdb_meta(out_path)
    except TruncatedLmdb:
        if not force:  # which output it was cannot be read: name why
            raise
    except InputError:
        pass

    names = [row[0] for row in lists.read(list_path)]
    size = sum(os.path.getsize(p) for p in files if os.path.exists(p))
    # Large values take whole overflow pages; the map only reserves address
    # space (a sparse file), so a generous bound costs nothing.
    map_size = int(size * 1.5) + 8192 * len(pairs) + (64 << 20)

    def load(k):
        img_path, lbl_path = pairs[k]
        img_buf, lbl_buf = read_bytes(img_path), read_bytes(lbl_path)
        img = decode_image(img_buf, img_path)
        lbl = decode_label(lbl_buf, lbl_path)
        check_pair(img, lbl, num_classes, img_path, lbl_path)
        return encode_record(names[k], img_buf, lbl_buf)

    problems, count = [], 0
    workers = workers or min(8, (os.cpu_count() or 1) + 1)
    with fileio.output_dir(out_path, [list_path] + files, force, is_fcrn_lmdb) as tmp:
        env = lmdb.open(tmp, map_size=map_size, subdir=True, meminit=False)
        try:
            with concurrent.futures.ThreadPoolExecutor(workers) as pool, \
                    tqdm(total=len(pairs), desc="lmdb", unit="img", leave=False,
                         disable=None) as bar:
                # chunks bound memory (a Cityscapes record is ~2.5 MB) while
                # keeping records in list order
                for lo in range(0, len(pairs), chunk):
                    futures = [pool.submit(load, k) for k in range(lo, min(lo + chunk, len(pairs)))]
                    with env.begin(write=True) as txn:
                        for fut in futures:
                            try:
                                rec = fut.result()
                            except InputError as e:
                                problems.append(str(e))
                            else:
                                txn.put(b"%08d" % count, rec)
                                count += 1
                            bar.update(1)
            if problems and not skip_bad:
                raise InputError("%d bad input file(s) in %s; fix them or pass --skip-bad"
                                   % (len(problems), list_path), problems)
            if count == 0:
                raise InputError("%s: no usable image" % list_path)
            for msg in problems:
                log.warning("skipped: %s", msg)
            if problems:
                log.warning("skipped %d bad item(s) of %d", len(problems), len(pairs))
            meta = dict(format=FORMAT, count=count, num_classes=num_classes, fingerprint=fp,
                        list=os.path.abspath(list_path), skipped=problems)
            with env.begin(write=True) as txn:
                txn.put(META_KEY, json.dumps(meta, sort_keys=True).encode("utf-8"))
            env.sync(True)
        finally:
            env.close()
    log.info("%s: %d records", out_path, count)
    return meta


# ---------------------------------------------------------------- readers

class ListSource:
    """Samples of an "image label" list, read from disk on demand."""

    def __init__(self, path, root=None):
        self.path = path
        self.pairs = lists.read_pairs(path, root, need_label=True)
        missing = [p for pair in self.pairs for p in pair if not os.path.isfile(p)]
        if missing:
            raise InputError("%s: %d listed file(s) missing" % (path, len(missing)), missing)
        self.num_classes = _list_num_classes(path)

    def __len__(self):
        return len(self.pairs)

    def get(self, i):
        """-> (image name, label name, encoded image, encoded label)."""
        img, lbl = self.pairs[i]
        return img, lbl, read_bytes(img), read_bytes(lbl)

    def close(self):
        pass


class LmdbSource:
    """Samples of an FCRN LMDB; safe to read from several threads."""

    def __init__(self, path):
        import lmdb
        self.path = path
        meta = read_lmdb_meta(path)
        self.count, self.num_classes = int(meta["count"]), meta.get("num_classes")
        if self.count <= 0:
            raise InputError("%s: LMDB holds no records" % path)
        try:
            self.env = shared_env(path)
        except lmdb.Error as e:
            raise InputError("%s: cannot open LMDB (%s)" % (path, e))

    def __len__(self):
        return self.count

    def get(self, i):
        key = b"%08d" % i
        with self.env.begin(buffers=False) as txn:
            buf = txn.get(key)
        what = "%s[%s]" % (self.path, key.decode())
        if buf is None:
            raise InputError("%s: record missing" % what)
        name, img, lbl = decode_record(buf, what)
        return "%s (%s)" % (what, name), "%s (label of %s)" % (what, name), img, lbl

    def close(self):
        pass  # the environment is shared (see shared_env)


def open_source(source, root=None):
    """LMDB directory or list file -> a source with len(), get(i), num_classes."""
    if os.path.isdir(source):
        if not is_lmdb(source):
            raise InputError("%s: directory is not an LMDB (no data.mdb)" % source)
        return LmdbSource(source)
    if source.endswith(".lmdb") and not os.path.exists(source):
        raise InputError("%s: LMDB does not exist" % source)
    return ListSource(source, root)
