"""Retriever fields: the protocol every stored retriever of an index implements
(:mod:`embedstack.index.fields.base`) and its local implementations (``dense``, ``bm25``,
``sparse``, ``tokens``, built by :mod:`embedstack.index.fields.local`)."""

from __future__ import annotations

from embedstack.index.fields.base import (
    Batch,
    DocHits,
    Field,
    FieldStats,
    Rescorer,
    Retriever,
    Rewrite,
    SegmentRows,
    Snapshot,
)

__all__ = [
    "Batch",
    "DocHits",
    "Field",
    "FieldStats",
    "Rescorer",
    "Retriever",
    "Rewrite",
    "SegmentRows",
    "Snapshot",
]
