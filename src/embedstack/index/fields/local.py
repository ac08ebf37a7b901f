"""The local fields of an index directory, built from its manifest.

Order matters for writes only in one way: BM25 commits on its own, so it goes last (a
failure in any other field then leaves it untouched).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from embedstack.encoders import TextEncoder
from embedstack.encoders.splade import SparseTextEncoder
from embedstack.errors import InvalidInput
from embedstack.index import late_model
from embedstack.index import sparse as sparse_index
from embedstack.index.fields.base import Field
from embedstack.index.fields.bm25 import BM25Field
from embedstack.index.fields.dense import DenseField
from embedstack.index.fields.sparse import SparseField
from embedstack.index.fields.tokens import TokenField
from embedstack.index.late_model import LateEncoder
from embedstack.index.lexical import LexicalIndex

__all__ = ["create_fields", "not_stored", "open_fields"]


def _build(path: Path, meta: dict[str, Any], encoder: TextEncoder, lexical: LexicalIndex,
           readonly: bool, sparse: SparseTextEncoder | None,
           colbert: LateEncoder | None) -> list[Field]:  # fmt: skip
    rec = meta["encoder"]
    fields: list[Field] = [
        DenseField(
            path / "dense",
            encoder,
            int(rec["dim"]),
            int(rec["full_dim"]),
            meta["precision"],
            meta["ann"],
            readonly,
        )  # fmt: skip
    ]
    if meta.get("sparse"):
        fields.append(SparseField(path / SparseField.name, meta["sparse"], sparse))
    if meta.get("colbert"):
        fields.append(TokenField(path / "colbert", meta["colbert"], colbert))
    fields.append(BM25Field(path / "lexical", lexical, readonly))
    return fields


def create_fields(
    path: Path,
    meta: dict[str, Any],
    encoder: TextEncoder,
    sparse: SparseTextEncoder | None = None,
    colbert: LateEncoder | None = None,
) -> list[Field]:
    """Create the storage of every field ``meta`` names under the new index ``path``."""
    lexical = LexicalIndex.create(path / "lexical", k1=meta["bm25"]["k1"], b=meta["bm25"]["b"])
    (path / "dense").mkdir()
    for name in ("sparse", "colbert"):
        if meta.get(name):
            (path / name).mkdir()
    return _build(path, meta, encoder, lexical, False, sparse, colbert)


def open_fields(
    path: Path,
    meta: dict[str, Any],
    encoder: TextEncoder,
    *,
    readonly: bool,
    sparse: SparseTextEncoder | None = None,
    colbert: LateEncoder | None = None,
) -> list[Field]:
    """The fields of the index at ``path`` (encoders None load when first needed)."""
    lexical = LexicalIndex.open(path / "lexical")
    return _build(path, meta, encoder, lexical, readonly, sparse, colbert)


def not_stored(path: Path, name: str) -> InvalidInput:
    """The error for a field the index at ``path`` does not store, saying how to get one."""
    if name == "sparse":
        return sparse_index.no_store(path)
    if name == "colbert":
        return late_model.no_store(path)
    return InvalidInput(f"{path} has no {name!r} field")
