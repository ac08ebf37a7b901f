"""Helpers of :class:`~embedstack.index.core.Index`: the search snapshot, the write lock,
encoder resolution."""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from embedstack._typing import IntArray
from embedstack.encoders import TextEncoder, load_encoder
from embedstack.errors import IndexLocked, InvalidInput
from embedstack.index import dense

__all__ = ["LOCK", "State", "chunk_args", "library_version", "lock", "resolve_encoder"]

LOCK = "write.lock"


@dataclass
class State:
    """What searches read: a consistent snapshot of SQLite plus the loaded segments."""

    segments: list[dense.DenseSegment]
    live: IntArray  # ascending keys of live documents
    lexical_exact: bool  # the BM25 index holds exactly the live keys (no masking needed)
    version: tuple[int, int]  # (sqlite data_version, lexical manifest mtime_ns)
    masks: list[np.ndarray] | None = None  # per-segment live-row masks, computed lazily


def lock(path: Path) -> int:
    fd = os.open(path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise IndexLocked(
            f"{path} is locked by another writer ({path / LOCK}); open it with readonly=True "
            "to search while it writes"
        ) from None
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


def library_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("embedstack")
    except PackageNotFoundError:
        return "unknown"
