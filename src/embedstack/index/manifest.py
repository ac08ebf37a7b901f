"""``manifest.json``: what produced an index and how it is configured, written atomically.

Fields::

    format, format_version, library_version, created_at, updated_at
    encoder: {name, model_id, dim, full_dim, options}   model_id = name + weights hash
    precision: "float32" | "int8" | "binary"
    bm25: {k1, b}
    chunking: {max_tokens, overlap, allow_any, effective_max_tokens, effective_overlap,
               tokenizer, title}
    ann: null | "hnsw"
    sparse: null | {name, model_id, vocab_size, options}   SPLADE postings (optional; an
            index written before sparse support has no such field and reads as null)
    colbert: null | {name, model_id, dim, precision, options, doc_maxlen, markers,
             mask_punctuation}   ColBERT token vectors (optional, absent reads as null)

The manifest changes only at :meth:`Index.create` and when parameters change (``ann`` and
``updated_at`` by :meth:`Index.set_ann`); it is
replaced with write-to-temporary, fsync, rename, fsync of the directory, so a reader sees
either the old or the new file, never a mix.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from embedstack.errors import IndexCorrupt

__all__ = [
    "FILE",
    "FORMAT",
    "FORMAT_VERSION",
    "fsync_dir",
    "library_version",
    "read_manifest",
    "remove_all_but",
    "save_npy",
    "write_manifest",
    "write_text_atomic",
]

FILE = "manifest.json"
FORMAT = "embedstack-index"
FORMAT_VERSION = 1
_REQUIRED = ("format", "format_version", "encoder", "precision", "bm25", "chunking", "ann")
_ENCODER = ("name", "model_id", "dim", "full_dim")


def now() -> str:
    """UTC time, ISO 8601 to the second."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def library_version() -> str:
    """The installed embedstack version, recorded in manifests (``"unknown"`` when not
    installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("embedstack")
    except PackageNotFoundError:
        return "unknown"


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_npy(path: Path, array: np.ndarray) -> None:
    """Write ``array`` to ``path`` durably (``allow_pickle=False``): a temporary file in the
    same folder, fsynced, then renamed over ``path``. The caller fsyncs the folder."""
    tmp = path.with_name(".tmp-" + path.name)
    with open(tmp, "wb") as f:
        np.save(f, np.ascontiguousarray(array), allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def remove_all_but(root: Path, keep: set[str]) -> bool:
    """Recovery: delete every file in ``root`` not named in ``keep`` (unregistered segments,
    temporaries), fsyncing ``root`` when anything went; False when nothing did or ``root``
    does not exist."""
    if not root.is_dir():
        return False
    removed = False
    for entry in root.iterdir():
        if entry.name not in keep:
            entry.unlink(missing_ok=True)
            removed = True
    if removed:
        fsync_dir(root)
    return removed


def write_text_atomic(file: Path, text: str) -> None:
    """Atomically replace ``file`` with ``text``: a temporary file in the same folder,
    fsynced, renamed over ``file``, then the folder fsynced."""
    tmp = file.with_name(f".tmp-{os.getpid()}-{file.name}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, file)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(file.parent)


def write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    """Atomically replace ``path/manifest.json`` (see :func:`write_text_atomic`).

    Raises:
        TypeError: a value is not JSON-serialisable (nothing is written).
    """
    write_text_atomic(path / FILE, json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def read_manifest(path: Path) -> dict[str, Any]:
    """Read and validate ``path/manifest.json``.

    Raises:
        IndexCorrupt: missing, not JSON, missing fields, or an unsupported format version.
    """
    file = path / FILE
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise IndexCorrupt(f"cannot read {file}: {exc}") from exc
    if not isinstance(manifest, dict) or any(k not in manifest for k in _REQUIRED):
        raise IndexCorrupt(f"{file} is not an embedstack index manifest (needs {_REQUIRED})")
    if manifest["format"] != FORMAT or manifest["format_version"] != FORMAT_VERSION:
        raise IndexCorrupt(
            f"{file}: unsupported format {manifest['format']!r} v{manifest['format_version']!r}"
            f" (this library reads {FORMAT!r} v{FORMAT_VERSION})"
        )
    enc = manifest["encoder"]
    if not isinstance(enc, dict) or any(k not in enc for k in _ENCODER):
        raise IndexCorrupt(f"{file}: the encoder entry needs {_ENCODER}")
    return manifest
