"""Batch stream for the data layer, prefetched by worker *processes*.

Why processes and not threads: neither the `caffe` tool nor pycaffe's
`Solver.step` releases the GIL while the network computes, so a Python
thread gets the GIL back only while the layer itself runs; prefetching in
threads would stall for the whole forward/backward. Forked workers need no
GIL of the trainer. They write finished batches into shared memory
(anonymous mmap, inherited by fork); per-slot semaphores pass slots back and
forth, so the trainer only copies a batch into its top blobs.

Determinism: the stream is a function of (seed, shard, position) alone, so
a resumed training continues it from its position (`start`, the first batch
to serve). Batch b holds stream positions b*N .. b*N+N-1; position g is item
perm_e[g mod L] of epoch e = g // L (perm_e drawn from (seed, rank, e) when
shuffling, the shard's order otherwise), augmented with parameters drawn from
(seed, rank, g). Worker w makes the batches b >= start with b = w (mod
workers), and slot b mod depth holds batch b, with depth a multiple of the
worker count, so every slot is always filled by the same worker, in order.
"""
import ctypes
import mmap
import multiprocessing
import os
import signal
import struct
import sys

import numpy as np

from ..imageio import decode_image, decode_label
from .common import check_pair

_HEADER = 4096  # per slot: int32 status, int32 message length, message
# The forwards a resumed TRAIN net made before (iteration x iter_size), which
# fcrn.train passes to the data layer (layers/fcrn_data.py) when it resumes.
RESUME = "FCRN_DATA_RESUME"


class BatchMaker:
    """Makes batch b deterministically; also used directly when workers=0."""

    def __init__(self, source_factory, indices, batch_size, augmenter, seed, rank, shuffle):
        self.source_factory, self.source = source_factory, None
        self.indices = np.asarray(indices, np.int64)
        self.n, self.aug = batch_size, augmenter
        self.seed, self.rank, self.shuffle = seed, rank, shuffle
        self._perm_epoch, self._perm = None, None

    def _item(self, g):
        L = len(self.indices)
        e = g // L
        if not self.shuffle:
            return int(self.indices[g % L])
        if e != self._perm_epoch:
            rng = np.random.default_rng([self.seed, self.rank, 0, e])
            self._perm, self._perm_epoch = rng.permutation(self.indices), e
        return int(self._perm[g % L])

    def make(self, b, data, label):
        """Fill data (N,3,H,W) and label (N,1,H,W) with batch b."""
        if self.source is None:
            self.source = self.source_factory()
        for k in range(self.n):
            g = b * self.n + k
            name, lbl_name, img_buf, lbl_buf = self.source.get(self._item(g))
            img = decode_image(img_buf, name)
            lbl = decode_label(lbl_buf, lbl_name)
            check_pair(img, lbl, self.aug.num_classes, name, lbl_name, self.aug.ignore)
            params = self.aug.draw(np.random.default_rng([self.seed, self.rank, 1, g]))
            self.aug.apply(img, lbl, params, data[k], label[k, 0])


class Prefetcher:
    """next_batch() returns views of the next (data, label) batch, valid until
    release(); batches come in stream order."""

    def __init__(self, maker, shape, workers=2, depth=4, what="data", start=0):
        self.maker, self.what = maker, what
        n, ch, cw = shape
        self.shapes = ((n, 3, ch, cw), (n, 1, ch, cw))
        self.workers = int(workers)
        self.next_b = int(start)
        if self.workers == 0:
            self.buf = tuple(np.zeros(s, np.float32) for s in self.shapes)
            return
        depth = max(int(depth), 1)
        self.depth = -(-depth // self.workers) * self.workers
        self.data_bytes = int(np.prod(self.shapes[0])) * 4
        self.slot_bytes = _HEADER + self.data_bytes + int(np.prod(self.shapes[1])) * 4
        self.mm = mmap.mmap(-1, self.slot_bytes * self.depth)  # MAP_SHARED | MAP_ANONYMOUS
        ctx = multiprocessing.get_context("fork")
        self.free = [ctx.Semaphore(1) for _ in range(self.depth)]
        self.full = [ctx.Semaphore(0) for _ in range(self.depth)]
        self.stop_flag = ctx.Value("b", 0, lock=False)
        self.procs = [ctx.Process(target=self._work, args=(w, os.getpid()), daemon=True,
                                  name="fcrn-data-%d" % w) for w in range(self.workers)]
        for p in self.procs:
            p.start()

    def _views(self, s):
        off = s * self.slot_bytes
        data = np.frombuffer(self.mm, np.float32, int(np.prod(self.shapes[0])),
                             off + _HEADER).reshape(self.shapes[0])
        label = np.frombuffer(self.mm, np.float32, int(np.prod(self.shapes[1])),
                              off + _HEADER + self.data_bytes).reshape(self.shapes[1])
        return data, label

    def _work(self, w, parent):
        try:  # die with the trainer even if it never runs its exit handlers
            ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
        # No cv2.setNumThreads() here: in a child forked after the parent's
        # OpenCV thread pool started, it waits forever for the parent's threads.
        b = self.next_b + (w - self.next_b) % self.workers  # its first batch from start
        while True:
            s = b % self.depth
            while not self.free[s].acquire(timeout=0.5):
                if self.stop_flag.value or os.getppid() != parent:
                    return
            if self.stop_flag.value:
                return
            try:
                self.maker.make(b, *self._views(s))
                status, msg = 0, b""
            except Exception as e:  # reported by the trainer, which names the source
                status = 1
                msg = ("%s: %s" % (type(e).__name__, e)).encode("utf-8", "replace")[:_HEADER - 8]
            struct.pack_into("<ii", self.mm, s * self.slot_bytes, status, len(msg))
            self.mm[s * self.slot_bytes + 8:s * self.slot_bytes + 8 + len(msg)] = msg
            self.full[s].release()
            b += self.workers

    def next_batch(self):
        b = self.next_b
        if self.workers == 0:
            self.maker.make(b, *self.buf)
            self.next_b += 1
            return self.buf
        s = b % self.depth
        waited = 0
        while not self.full[s].acquire(timeout=1.0):
            dead = [p for p in self.procs if not p.is_alive()]
            if dead:
                raise RuntimeError("%s: data worker %s exited with code %s" % (
                    self.what, dead[0].name, dead[0].exitcode))
            waited += 1
            if waited % 60 == 0:
                sys.stderr.write("%s: still waiting for batch %d after %d s\n"
                                 % (self.what, b, waited))
        status, n = struct.unpack_from("<ii", self.mm, s * self.slot_bytes)
        if status:
            self.full[s].release()  # keep the error for a retried forward
            msg = self.mm[s * self.slot_bytes + 8:s * self.slot_bytes + 8 + n].decode("utf-8")
            raise RuntimeError("%s: %s" % (self.what, msg))
        self.next_b += 1
        return self._views(s)

    def release(self):
        """Give the slot of the last batch back to its worker."""
        if self.workers:
            self.free[(self.next_b - 1) % self.depth].release()

    def close(self):
        if self.workers and self.procs:
            self.stop_flag.value = 1
            for sem in self.free:  # wake workers waiting for a slot
                sem.release()
            for p in self.procs:
                p.join(timeout=2)
                if p.is_alive():
                    p.terminate()
                    p.join(timeout=2)
            self.procs = []
