"""Helpers of :class:`~embedstack.index.core.Index`: the SQLite snapshot, the write lock,
encoder resolution."""

from __future__ import annotations

import fcntl
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from embedstack.encoders import TextEncoder, load_encoder
from embedstack.errors import IndexCorrupt, IndexLocked, InvalidInput
from embedstack.index.docstore import DocStore
from embedstack.index.fields.base import Field, SegmentRows, Snapshot
from embedstack.index.manifest import library_version

__all__ = [
    "LOCK",
    "chunk_args",
    "library_version",
    "load_snapshot",
    "lock",
    "reload",
    "resolve_encoder",
    "version",
]

LOCK = "write.lock"
_RELOAD_RETRIES = 5


def version(store: DocStore, fields: Sequence[Field]) -> tuple[Any, ...]:
    """Changes whenever any process commits: SQLite's data_version and every field's own
    commit token."""
    return (store.data_version(), *(f.version() for f in fields))


def load_snapshot(store: DocStore, fields: Sequence[Field]) -> Snapshot:
    """What SQLite registers now (live keys, segments and their rows), read in one
    transaction."""
    stamp = version(store, fields)
    conn = store.conn
    conn.execute("BEGIN")
    try:
        registry = store.segments()
        rows = store.all_row_keys([(seg, n) for seg, _, n in registry])
        segments = [SegmentRows(seg, n, rows[seg]) for seg, _, n in registry]
        live = store.live_keys()
    finally:
        conn.execute("COMMIT")
    return Snapshot(live, segments, stamp)


def reload(store: DocStore, fields: Sequence[Field], use: Callable[[Snapshot], None]) -> None:
    """Read a snapshot and ``use`` it (each field loads what it registers); retried while
    another process commits meanwhile: a writer's merge may delete a segment's files
    between the snapshot read and their loading, and the next snapshot no longer names it.

    Raises:
        IndexCorrupt: a registered file is missing or damaged and nobody committed since.
    """
    for attempt in range(1, _RELOAD_RETRIES + 1):
        snap = load_snapshot(store, fields)
        try:
            use(snap)
            return
        except IndexCorrupt:
            if attempt == _RELOAD_RETRIES or version(store, fields) == snap.version:
                raise


def _holder(fd: int) -> str:
    try:
        return os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
    except OSError:
        return ""


def lock(path: Path) -> int:
    """Take the writer lock of the index at ``path`` (flock on ``write.lock``) and write the
    holder's pid and command line into it; returns the open descriptor.

    Raises:
        IndexLocked: another process holds it; ``holder`` is what that process wrote
            (``"pid 4242: embedstack serve ..."``).
    """
    fd = os.open(path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        held = f" (held by {holder})" if holder else ""
        raise IndexLocked(
            f"{path} is locked by another writer{held}; open it with readonly=True to search "
            "while it writes",
            location=str(path),
            holder=holder,
        ) from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}: {' '.join(sys.argv)}\n".encode(), 0)
    except OSError:
        pass  # the lock is what matters; the note is for the error message only
    return fd


def resolve_encoder(encoder: object, options: dict[str, Any] | None) -> TextEncoder:
    if isinstance(encoder, str | os.PathLike):
        return load_encoder(os.fspath(encoder), **(options or {}))
    if isinstance(encoder, TextEncoder):
        return encoder
    raise InvalidInput(
        f"encoder must be a model name or a TextEncoder, got {type(encoder).__name__}"
    )


def chunk_args(meta: dict[str, Any]) -> dict[str, Any]:
    c = meta["chunking"]
    return {"max_tokens": c["max_tokens"], "overlap": c["overlap"], "allow_any": c["allow_any"]}
