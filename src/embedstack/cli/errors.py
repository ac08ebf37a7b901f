"""How the CLI reports errors: one line in the CLI's words and a documented exit code.

Library messages speak Python (``Index.create()``, ``readonly=True``); here each typed error
says the command to run instead. Exit codes:

* ``2`` — a user error: bad arguments or input, no index at the path, an index locked by
  another writer, a model that does not match the index (usage errors exit 2 as well).
* ``3`` — something to install or download: a model or an optional dependency missing on
  this machine.
* ``1`` — anything else (an index that fails its integrity checks).
* ``130`` — interrupted (Ctrl-C); ``index add`` says what it committed first.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from embedstack.errors import (
    EmbedstackError,
    IndexLocked,
    IndexNotFound,
    InvalidInput,
    MissingDependency,
    ModelMismatch,
    ModelNotFound,
)

__all__ = [
    "EXIT_CODES",
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_MISSING",
    "EXIT_USER",
    "exit_code",
    "message",
    "open_index",
]

EXIT_USER = 2
EXIT_MISSING = 3
EXIT_FAILURE = 1
EXIT_INTERRUPTED = 130

EXIT_CODES = (
    "Exit codes: 0 success; 2 a user error (bad arguments or input, no index at the path, "
    "an index locked by another writer); 3 a model or optional dependency missing on this "
    "machine; 1 anything else (an index failing its checks); 130 interrupted (Ctrl-C)."
)


def exit_code(error: BaseException) -> int:
    """The exit code of ``error`` (see the module docstring)."""
    if isinstance(error, ModelNotFound | MissingDependency):
        return EXIT_MISSING
    if isinstance(error, InvalidInput | IndexLocked | ModelMismatch | OSError):
        return EXIT_USER
    return EXIT_FAILURE


def message(error: BaseException) -> str:
    """One line for ``error``, naming the command to run where there is one."""
    if isinstance(error, IndexNotFound) and str(error).startswith("cannot connect"):
        return str(error)  # an engine that does not answer: creating an index would not help
    if isinstance(error, IndexNotFound):
        where = error.location or "DIR"
        return f"no embedstack index at {where}: create one with `embedstack index create {where}`"
    if isinstance(error, IndexLocked):
        where = error.location or "the index"
        holder = error.holder
        if "serve" in holder:
            return (
                f"{where} is held by a running server ({holder}): add or delete documents "
                "through its HTTP API (/v1/indexes/NAME/documents), or stop the server first; "
                "`embedstack search` and `embedstack index stats` work meanwhile"
            )
        who = f" ({holder})" if holder else ""
        return (
            f"{where} is locked by another writer{who}: wait for it to finish, or stop it; "
            "`embedstack search` and `embedstack index stats` work meanwhile"
        )
    if isinstance(error, OSError) and not isinstance(error, EmbedstackError):
        name = f"{error.filename}: " if error.filename else ""
        return f"{name}{error.strerror or error}"
    return " ".join(str(error).split("\n"))


def open_index(directory: Path, *, readonly: bool = False) -> Any:
    """Open the index in ``directory`` for a command.

    Raises:
        IndexNotFound: no index there (with the directory as ``location``).
        IndexLocked: another writer holds it (with ``location`` set).
    """
    from embedstack.index import Index, manifest

    if not (directory / manifest.FILE).is_file():
        what = "does not exist" if not directory.exists() else f"has no {manifest.FILE}"
        raise IndexNotFound(f"{directory} {what}", location=os.fspath(directory))
    try:
        return Index.open(directory, readonly=readonly)
    except IndexLocked as exc:
        location = getattr(exc, "location", "") or os.fspath(directory)
        raise IndexLocked(str(exc), location, getattr(exc, "holder", "")) from None
