"""Asking the kernel to read an index's memory-mapped files before its queries do.

An index opens its BM25 postings, dense vectors and HNSW graph memory-mapped, without reading
them, so that opening stays fast at any size. Pages the kernel does not hold in its page cache
(files unread since the machine started, or pushed out since) are then read from disk by the
queries that touch them, one fault at a time: the HNSW graph's random walk over a million
vectors is the worst case. :func:`read_ahead` asks the kernel to read such files into the page
cache (``posix_fadvise(WILLNEED)``, in steps, since Linux reads at most its read-ahead window
per call) from one background thread, so that opening does not wait and no bytes are copied
into the process. Only files that fit in a share of the memory available are asked for, so an
index larger than memory does not push itself and everything else out of the page cache.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from embedstack.settings import readahead_enabled

__all__ = ["FRACTION", "available_bytes", "deferred", "read_ahead", "wait"]

FRACTION = 0.5  # ask only for what fits in this share of the available memory
_STEP = 8 << 20  # bytes per posix_fadvise call (Linux caps one call at its read-ahead window)

_jobs: queue.Queue[list[Path]] = queue.Queue()
_worker: threading.Thread | None = None
_lock = threading.Lock()
_held = threading.local()  # paths asked for inside deferred(), by this thread


def available_bytes() -> int | None:
    """The memory the kernel could give without swapping (``MemAvailable``), or None where it
    does not say (not Linux)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


@contextmanager
def deferred() -> Iterator[None]:
    """Hold this thread's :func:`read_ahead` calls until the block ends, then ask for them
    together: opening an index reads files of its own, and the disk should serve those first
    (asked for at once, the read-ahead queued ahead of them and made a cold open slower)."""
    if getattr(_held, "paths", None) is not None:  # nested: the outer block asks
        yield
        return
    _held.paths = []
    try:
        yield
    except BaseException:  # nothing opened: nothing to read
        _held.paths = None
        raise
    paths, _held.paths = _held.paths, None
    if paths:
        read_ahead(paths)


def read_ahead(paths: Iterable[Path], fraction: float = FRACTION) -> bool:
    """Queue ``paths`` to be read into the page cache by the background thread; whether they
    were (not with ``EMBEDSTACK_READAHEAD=0``, nor when the system cannot be asked or says
    nothing of its memory, nor when the files add up to more than ``fraction`` of what is
    available)."""
    if not hasattr(os, "posix_fadvise") or not readahead_enabled():
        return False
    held = getattr(_held, "paths", None)
    if held is not None:
        held.extend(paths)
        return True
    sizes = {}
    for p in paths:
        try:
            sizes[Path(p)] = Path(p).stat().st_size
        except OSError:
            continue
    free = available_bytes()
    if not sizes or free is None or sum(sizes.values()) > free * fraction:
        return False
    global _worker
    with _lock:
        _jobs.put(list(sizes))
        if _worker is None or not _worker.is_alive():
            _worker = threading.Thread(target=_run, name="embedstack-readahead", daemon=True)
            _worker.start()
    return True


def wait() -> None:
    """Return once every queued file has been asked for (tests and benchmarks)."""
    _jobs.join()


def _run() -> None:
    while True:
        paths = _jobs.get()
        try:
            for path in paths:
                _advise(path)
        finally:
            _jobs.task_done()


def _advise(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # replaced by a merge or a compaction meanwhile: nothing to read
        return
    try:
        size = os.fstat(fd).st_size
        for offset in range(0, size, _STEP):
            os.posix_fadvise(fd, offset, _STEP, os.POSIX_FADV_WILLNEED)
    except OSError:
        pass
    finally:
        os.close(fd)
