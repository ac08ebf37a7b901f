"""Storage layer: the hybrid :class:`Index` (SQLite documents, dense segments, BM25).

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

__all__ = [
    "AddResult",
    "BM25Params",
    "ChunkingParams",
    "Hit",
    "Index",
    "IndexStats",
    "parse_filter_args",
]
