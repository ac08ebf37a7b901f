"""Process-wide settings read from the environment (never mutated in place)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from embedstack.errors import InvalidInput

__all__ = ["bm25_cache_bytes", "cache_dir", "progress_enabled", "readahead_enabled"]


def cache_dir() -> Path:
    """Folder for derived artifacts (exported ONNX models): ``$EMBEDSTACK_CACHE_DIR``,
    else ``$XDG_CACHE_HOME/embedstack``, else ``~/.cache/embedstack``."""
    explicit = os.environ.get("EMBEDSTACK_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "embedstack"


def progress_enabled(show_progress: bool | None) -> bool:
    """Resolve ``show_progress``: None means "on when stderr is a terminal", and the
    environment variable ``EMBEDSTACK_NO_PROGRESS=1`` turns bars off everywhere."""
    if os.environ.get("EMBEDSTACK_NO_PROGRESS", "").strip() in {"1", "true", "yes"}:
        return False
    if show_progress is not None:
        return show_progress
    return sys.stderr.isatty()


def readahead_enabled() -> bool:
    """Whether an opened index asks the kernel to read its memory-mapped files ahead
    (:mod:`embedstack.index.readahead`): yes unless ``EMBEDSTACK_READAHEAD=0``."""
    return os.environ.get("EMBEDSTACK_READAHEAD", "").strip().lower() not in {"0", "false", "no"}


_MB = 1 << 20


def bm25_cache_bytes() -> int:
    """Memory a BM25 scorer may keep in its per-term impact cache
    (:mod:`embedstack.index.lexical_scoring`): ``$EMBEDSTACK_BM25_CACHE_MB`` megabytes, else
    1/16 of the machine's memory, at least 256 MB and at most 2 GB.

    Raises:
        InvalidInput: the variable is not a number of megabytes >= 0.
    """
    raw = os.environ.get("EMBEDSTACK_BM25_CACHE_MB", "").strip()
    if raw:
        try:
            mb = float(raw)
        except ValueError:
            mb = -1.0
        if not 0 <= mb < float("inf"):
            raise InvalidInput(f"EMBEDSTACK_BM25_CACHE_MB must be a number of megabytes >= 0, "
                               f"got {raw!r}")  # fmt: skip
        return int(mb * _MB)
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows) or no such name
        total = 0
    return min(max(total // 16, 256 * _MB), 2048 * _MB)
