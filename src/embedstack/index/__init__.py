"""Storage layer: the hybrid :class:`Index` — SQLite documents plus retriever fields
(dense vectors, BM25, SPLADE postings, token vectors; :mod:`embedstack.index.fields`) — and
the seams above it (:class:`SearchOptions`, :class:`Searchable`, :class:`SearchPlan`).

Example:
    >>> from embedstack.index import Index, ChunkingParams                  # doctest: +SKIP
    >>> idx = Index.create("my-index", encoder="all-MiniLM-L6-v2")          # doctest: +SKIP
    >>> idx.add([{"id": "a", "text": "Cats purr when content."}])           # doctest: +SKIP
    >>> [h.doc_id for h in idx.search("why do cats purr", mode="hybrid")]   # doctest: +SKIP
    ['a']
"""

from __future__ import annotations

from embedstack.chunking import ChunkingParams
from embedstack.index._types import AddResult, BM25Params, Hit, IndexStats
from embedstack.index.core import Index
from embedstack.index.filters import parse_filter_args
from embedstack.index.protocols import DEFAULT_MODE, Searchable, SearchOptions, SearchPlan

__all__ = [
    "DEFAULT_MODE",
    "AddResult",
    "BM25Params",
    "ChunkingParams",
    "Hit",
    "Index",
    "IndexStats",
    "SearchOptions",
    "SearchPlan",
    "Searchable",
    "parse_filter_args",
]
