"""Validation of document batches and search arguments (whole batch first, nothing written)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from embedstack.errors import InvalidInput

__all__ = ["NewDoc", "check_ids", "validate_batches", "validate_docs"]


@dataclass(frozen=True)
class NewDoc:
    """A validated input document."""

    position: int
    id: str
    title: str
    text: str
    metadata_json: str
    content_hash: str

    @property
    def full_text(self) -> str:
        """``(title + " " + text).strip()``, what BM25 indexes (as BEIR does)."""
        return (self.title + " " + self.text).strip()


def _utf8(value: str, what: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInput(f"{what} holds an invalid surrogate at character {exc.start}") from exc


def _one(position: int, item: object) -> NewDoc:
    where = f"document {position}"
    if not isinstance(item, Mapping):
        raise InvalidInput(f"{where} is {type(item).__name__}, not a dict with 'id' and 'text'")
    unknown = set(item) - {"id", "text", "title", "metadata"}
    if unknown:
        raise InvalidInput(f"{where} has unknown fields {sorted(map(str, unknown))}; "
                           "allowed: id, text, title, metadata")  # fmt: skip
    doc_id = item.get("id")
    if not isinstance(doc_id, str) or not doc_id.strip():
        raise InvalidInput(f"{where} needs a non-empty str 'id', got {doc_id!r}")
    text = item.get("text")
    if not isinstance(text, str):
        raise InvalidInput(f"{where} ({doc_id!r}): 'text' must be str, got {type(text).__name__}")
    if not text.strip():
        raise InvalidInput(f"{where} ({doc_id!r}): 'text' is empty or whitespace-only")
    title = item.get("title", "")
    title = "" if title is None else title
    if not isinstance(title, str):
        raise InvalidInput(f"{where} ({doc_id!r}): 'title' must be str, got {type(title).__name__}")
    for value, what in ((doc_id, "id"), (text, "text"), (title, "title")):
        _utf8(value, f"{where} ({doc_id!r}) '{what}'")
    metadata = item.get("metadata") or {}
    if not isinstance(metadata, Mapping):
        raise InvalidInput(f"{where} ({doc_id!r}): 'metadata' must be a dict")
    try:
        meta_json = json.dumps(dict(metadata), sort_keys=True, allow_nan=False,
                               ensure_ascii=False)  # fmt: skip
        _utf8(meta_json, "metadata")
    except (TypeError, ValueError) as exc:
        raise InvalidInput(
            f"{where} ({doc_id!r}): 'metadata' is not JSON-serialisable: {exc}"
        ) from exc
    digest = hashlib.sha256(
        json.dumps([title, text, meta_json], ensure_ascii=False).encode("utf-8")
    ).hexdigest()
    return NewDoc(position, doc_id, title, text, meta_json, digest)


def validate_docs(docs: Iterable[Any]) -> list[NewDoc]:
    """Validate a whole batch, raising on the first bad item (named by its position).

    Raises:
        InvalidInput: not an iterable of dicts; a missing or empty id; non-str or blank
            text; non-str title; metadata that is not a JSON-serialisable dict; an id
            repeated within the batch.
    """
    if isinstance(docs, str | bytes | Mapping) or docs is None:
        raise InvalidInput("pass an iterable of document dicts, e.g. [{'id': ..., 'text': ...}]")
    try:
        items = list(docs)
    except TypeError as exc:
        raise InvalidInput(f"documents must be iterable, got {type(docs).__name__}") from exc
    out = [_one(i, item) for i, item in enumerate(items)]
    first: dict[str, int] = {}
    for doc in out:
        if doc.id in first:
            raise InvalidInput(
                f"document {doc.position}: id {doc.id!r} repeats document {first[doc.id]} "
                "of the same batch"
            )
        first[doc.id] = doc.position
    return out


def validate_batches(batches: Sequence[Iterable[Any]]) -> list[list[NewDoc]]:
    """Validate several batches written as one (:meth:`Index.upsert_many`): each as
    :func:`validate_docs`, and no id in two batches.

    Raises:
        InvalidInput: a bad batch, named by its position (``batch 2: document 0: ...``), or
            an id in two batches.
    """
    if isinstance(batches, str | bytes | Mapping) or not isinstance(batches, Sequence):
        raise InvalidInput("pass a list of batches, each a list of document dicts")
    out: list[list[NewDoc]] = []
    first: dict[str, int] = {}
    for i, docs in enumerate(batches):
        try:
            batch = validate_docs(docs)
        except InvalidInput as exc:
            raise InvalidInput(f"batch {i}: {exc}") from exc
        for doc in batch:
            if first.setdefault(doc.id, i) != i:
                raise InvalidInput(
                    f"batch {i}: document {doc.position}: id {doc.id!r} is also in batch "
                    f"{first[doc.id]}; upsert_many takes each id once (upsert them in turn)"
                )
        out.append(batch)
    return out


def check_ids(ids: Iterable[Any]) -> list[str]:
    """Validate ids for :meth:`Index.delete`: a list of non-empty str, repeats dropped."""
    if isinstance(ids, str | bytes) or ids is None:
        raise InvalidInput("pass a list of ids, not a single string: delete([doc_id])")
    out: list[str] = []
    seen: set[str] = set()
    for i, doc_id in enumerate(ids):
        if not isinstance(doc_id, str) or not doc_id:
            raise InvalidInput(f"id {i} must be a non-empty str, got {doc_id!r}")
        if doc_id not in seen:
            seen.add(doc_id)
            out.append(doc_id)
    return out
