"""Durable file writes shared by the converters and model writers.

:func:`write_json` writes one JSON file durably; :func:`publish_folder` builds a whole model
folder in a temporary sibling and renames it into place, so a folder appears whole or not
at all (``models distill``, ``models rotate``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from embedstack.errors import InvalidInput

__all__ = ["check_new_folder", "publish_folder", "write_json"]

T = TypeVar("T")


def write_json(path: Path, value: Any) -> None:
    """Write ``value`` as indented UTF-8 JSON to ``path`` and fsync it."""
    with path.open("w", encoding="utf-8") as out:
        json.dump(value, out, indent=2, ensure_ascii=False)
        out.write("\n")
        out.flush()
        os.fsync(out.fileno())


def _taken(target: Path, allow_empty: bool) -> bool:
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        return True
    if not target.exists():
        return False
    return not allow_empty or any(target.iterdir())


def check_new_folder(
    out: str | os.PathLike[str], command: str, *, allow_empty: bool = False
) -> Path:
    """``out`` as a path, refused when it exists (or, with ``allow_empty``, when it is not an
    empty folder) or when its parent is not a folder.

    Raises:
        InvalidInput: ``out`` is taken; the message names ``command`` and what to do.
    """
    target = Path(out).expanduser()
    if _taken(target, allow_empty):
        what = "is not empty" if allow_empty and target.is_dir() else "already exists"
        raise InvalidInput(f"{target} {what}: {command} writes a new folder; remove it "
                           "or choose another --out")  # fmt: skip
    if target.parent.exists() and not target.parent.is_dir():
        raise InvalidInput(f"{target.parent} is not a folder")
    return target


def publish_folder(
    target: Path, build: Callable[[Path], T], *, command: str, allow_empty: bool = False
) -> T:
    """Run ``build`` on a fresh temporary sibling of ``target`` and rename it onto ``target``.

    On any failure (``build``'s or the rename's) the temporary folder is removed and
    ``target`` is left as it was. ``target`` appearing meanwhile (or, with ``allow_empty``,
    filling up) is refused rather than replaced.

    Returns:
        What ``build`` returned.

    Raises:
        InvalidInput: ``target`` was taken while building.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
    try:
        result = build(staging)
        os.chmod(staging, 0o755)  # mkdtemp makes it private; a model is not a secret
        if _taken(target, allow_empty):  # someone wrote it meanwhile: never replace it
            raise InvalidInput(f"{target} appeared while {command} ran; nothing was written")
        if target.is_dir():
            target.rmdir()  # empty (checked just above)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return result
