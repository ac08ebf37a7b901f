"""The one exception hierarchy of embedstack.

Every error the library raises on purpose derives from :class:`EmbedstackError`, so callers
can catch one type; edges (CLI, server) map each subclass to an exit code or HTTP status::

    EmbedstackError
    ├── InvalidInput            bad user input: empty text, wrong type, bad option value
    │   ├── DimensionMismatch   a dimension that does not fit the model or index
    │   └── IndexNotFound       no index at the path (or URI) given
    ├── ModelNotFound           weights not found locally (offline) or unknown model name
    ├── ModelMismatch           an index built with another model than the one asked for
    ├── IndexCorrupt            an index directory that fails its integrity checks
    ├── IndexLocked             a second writer on an index that already has one
    └── MissingDependency       an optional extra is not installed (also an ImportError)
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "DimensionMismatch",
    "EmbedstackError",
    "IndexCorrupt",
    "IndexLocked",
    "IndexNotFound",
    "InvalidInput",
    "MissingDependency",
    "ModelMismatch",
    "ModelNotFound",
]


class EmbedstackError(Exception):
    """Base class of every error embedstack raises on purpose."""


class InvalidInput(EmbedstackError, ValueError):
    """User input that cannot be processed; the message says what to do instead."""


class DimensionMismatch(InvalidInput):
    """A vector dimension that does not fit the model, the index, or the other operand."""


class IndexNotFound(InvalidInput):
    """No index at the given location; :attr:`location` is the path or URI asked for."""

    def __init__(self, message: str, location: str = "") -> None:
        super().__init__(message)
        self.location = location


class ModelNotFound(EmbedstackError, LookupError):
    """A model name or path that cannot be resolved to weights on this machine."""


class ModelMismatch(EmbedstackError):
    """An index opened with a different model than the one that produced its vectors."""


class IndexCorrupt(EmbedstackError):
    """An index directory that fails its integrity checks."""


class IndexLocked(EmbedstackError):
    """Another process holds the index's write lock.

    Attributes:
        location: the index's path.
        holder: what the lock file says about the writer holding it (for example
            ``"pid 4242: embedstack serve --index my-index"``), or ``""`` when unknown.
    """

    def __init__(self, message: str, location: str = "", holder: str = "") -> None:
        super().__init__(message)
        self.location = location
        self.holder = holder


class MissingDependency(EmbedstackError, ImportError):
    """An optional dependency is missing; the message names the extra that provides it."""

    def __init__(self, package: str, extra: str, purpose: str = "") -> None:
        self.package = package
        self.extra = extra
        what = f" for {purpose}" if purpose else ""
        super().__init__(
            f"{package} is required{what}: install it with `pip install 'embedstack[{extra}]'`"
        )


def require(module: str, extra: str, purpose: str = "") -> Any:
    """Import an optional module, raising :class:`MissingDependency` naming its extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependency(module.split(".")[0], extra, purpose) from exc
