"""Process-wide settings read from the environment (never mutated in place)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = ["cache_dir", "progress_enabled", "readahead_enabled"]


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
