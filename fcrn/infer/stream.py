"""Inference's streaming: images read ahead and results written by a thread
pool while the net computes."""
import collections
import logging
from concurrent.futures import ThreadPoolExecutor

from ..errors import InputError, describe_oserror

log = logging.getLogger(__name__)


def stream(seg, paths, load, save, jobs, bar=None):
    """Read images ahead in a thread pool, predict them in batches of the
    segmenter's size, write the results in the pool. `load(k)` raises
    InputError for an unreadable input, `save(k, image, label)` OSError for an
    unwritable output: both are counted, not fatal. Returns (written, failed)."""
    failed, written = [], 0
    with ThreadPoolExecutor(jobs) as pool:
        reads, writes = collections.deque(), []
        queue = iter(range(len(paths)))
        lookahead = 2 * seg.batch_size + jobs

        def refill():
            while len(reads) < lookahead:
                k = next(queue, None)
                if k is None:
                    return
                reads.append((k, pool.submit(load, k)))

        def collect(wait):
            nonlocal written
            still = []
            for k, fut in writes:
                if not (wait or fut.done()):
                    still.append((k, fut))
                elif isinstance(fut.exception(), OSError):
                    failed.append("%s: cannot write its output: %s"
                                  % (paths[k], describe_oserror(fut.exception())))
                else:
                    fut.result()  # anything else is a bug: let it out
                    written += 1
            writes[:] = still

        refill()
        while reads:
            batch = []
            while reads and len(batch) < seg.batch_size:
                k, fut = reads.popleft()
                refill()
                try:
                    batch.append((k, fut.result()))
                except InputError as e:
                    log.error("skipped: %s", e)
                    failed.append(str(e))
                    if bar:
                        bar.update(1)
            if batch:
                labels = seg.predict([image for _, image in batch])
                writes += [(k, pool.submit(save, k, image, label))
                           for (k, image), label in zip(batch, labels)]
                if bar:
                    bar.update(len(batch))
            collect(wait=False)  # errors surface early, memory is freed
        collect(wait=True)
    return written, failed
