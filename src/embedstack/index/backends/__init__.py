"""Where an index lives: a local directory, or an engine named by a URI scheme.

``Index.create(target)`` and ``Index.open(target)`` look at ``target`` first
(:func:`routed`): a path (``str`` without ``scheme://``, or a ``Path``) is a local
directory; ``"postgresql://…"`` goes to the engine registered for the scheme; any other
``scheme://`` is refused with :class:`~embedstack.errors.InvalidInput` naming the schemes
there are, instead of silently becoming a local folder named ``scheme:``.

The registry maps a scheme to the *import path* of the engine's
:class:`~embedstack.index.backends.base.Store` class (``"module:Class"``), so nothing heavy
(psycopg, pymilvus) is imported until a URI of that scheme is used. A new engine joins with
one entry in :data:`SCHEMES` (or, from outside the package, :func:`register_backend`);
see :mod:`embedstack.index.backends.base` for what it implements.

Example:
    >>> scheme_of("postgresql://localhost/db?index=papers")
    'postgresql'
    >>> scheme_of("my-index") is None
    True
"""

from __future__ import annotations

import functools
import importlib
import re
from collections.abc import Callable
from pathlib import PurePath
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from embedstack.errors import InvalidInput

if TYPE_CHECKING:
    from embedstack.index.backends.base import Store

__all__ = ["SCHEMES", "register_backend", "routed", "scheme_of", "store_class"]

#: scheme -> "module:StoreClass". One entry per engine (a scheme may have aliases).
SCHEMES: dict[str, str] = {
    "postgresql": "embedstack.index.backends.postgres:PostgresStore",
    "postgres": "embedstack.index.backends.postgres:PostgresStore",
    "milvus": "embedstack.index.backends.milvus:MilvusStore",
    "milvus+http": "embedstack.index.backends.milvus:MilvusStore",
    "milvus+https": "embedstack.index.backends.milvus:MilvusStore",
}

_URI = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_MANGLED = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):/(?!/)")  # what Path("x://y") turns into

P = ParamSpec("P")
R = TypeVar("R")


def register_backend(scheme: str, target: str) -> None:
    """Route URIs ``scheme://…`` to the Store class at ``target`` (``"module:Class"``).

    Raises:
        InvalidInput: a scheme that is not a URI scheme, or a target without ``:``.
    """
    if not isinstance(scheme, str) or not _URI.match(scheme + "://"):
        raise InvalidInput(f"invalid URI scheme {scheme!r}")
    if not isinstance(target, str) or target.count(":") != 1:
        raise InvalidInput(f"target must be 'module:StoreClass', got {target!r}")
    SCHEMES[scheme.lower()] = target


def scheme_of(target: object) -> str | None:
    """The lower-cased URI scheme of ``target``, or None for a local path.

    Raises:
        InvalidInput: a ``Path`` built from a URI (``Path("postgresql://h/db")`` collapses
            the ``//``, so it can no longer be told from a folder): pass the URI as a str.
    """
    if isinstance(target, PurePath):
        m = _MANGLED.match(str(target))
        if m and m.group(1).lower() in SCHEMES:
            raise InvalidInput(
                f"{str(target)!r} looks like a {m.group(1)}:// URI turned into a path; pass "
                "the URI as a str"
            )
        return None
    if isinstance(target, str):
        m = _URI.match(target)
        return m.group(1).lower() if m else None
    return None


def store_class(scheme: str) -> type[Store]:
    """The Store class registered for ``scheme`` (imported now).

    Raises:
        InvalidInput: no engine is registered for ``scheme`` (the message lists them).
    """
    target = SCHEMES.get(scheme)
    if target is None:
        known = ", ".join(f"{s}://" for s in sorted(SCHEMES))
        raise InvalidInput(
            f"unknown index URI scheme {scheme + '://'!r}: an index is a local directory (a "
            f"path without scheme) or lives in an engine: {known}"
        )
    module, _, name = target.partition(":")
    cls: type[Store] = getattr(importlib.import_module(module), name)
    return cls


def routed(method: Callable[P, R]) -> Callable[P, R]:
    """Decorate ``Index.create`` / ``Index.open``: a URI target goes to
    :class:`~embedstack.index.backends.remote.RemoteIndex` (which routes by scheme), a path
    to the decorated local method."""
    name = method.__name__

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        target: Any = kwargs["path"] if "path" in kwargs else args[1] if len(args) > 1 else None
        if scheme_of(target) is None:
            return method(*args, **kwargs)
        from embedstack.index.backends.remote import RemoteIndex

        rest = {k: v for k, v in kwargs.items() if k != "path"}
        result: R = getattr(RemoteIndex, name)(target, *args[2:], **rest)
        return result

    return wrapper
