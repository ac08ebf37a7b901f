"""Approximate dense search with an HNSW graph (Malkov & Yashunin 2018) from faiss.

The graph is built in memory over every stored row (decoded to float32 for int8 and binary
indexes) the first time an ``ann="hnsw"`` index is searched after a write, and is not
persisted: the ``.npy`` segments stay the single copy of the vectors on disk. Deleted and
filtered-out rows are excluded *inside* the graph search with a faiss ``IDSelectorBitmap``,
so they never take result slots. When a filter leaves few rows (under 5 % of them, or fewer
than ``20 * depth``) an exact scan of those rows is both faster and exact, and is used
instead. Requires the ``ann`` extra (``faiss-cpu``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from embedstack._typing import FloatArray, IntArray
from embedstack.errors import require
from embedstack.index import dense
from embedstack.index.fields.base import DocHits, aggregate

__all__ = ["HnswGraph", "ann_search", "require_faiss"]

M = 32  # graph degree: faiss's and hnswlib's recommended range for 384-d text embeddings
EF_CONSTRUCTION = 128
EF_SEARCH_MIN = 128
_SELECTIVE = 0.05


def require_faiss() -> Any:
    """Import faiss or raise :class:`MissingDependency` naming the ``ann`` extra."""
    return require("faiss", "ann", "HNSW search (ann='hnsw')")


@dataclass
class HnswGraph:
    """An HNSW graph over the rows of a list of segments (global row = offset + row)."""

    graph: Any
    offsets: IntArray  # (n_segments + 1,)
    keys: IntArray  # (n_rows,) doc key of each global row
    seg_ids: IntArray  # (n_rows,)
    rows: IntArray  # (n_rows,) row within its segment

    @classmethod
    def build(cls, segments: list[dense.DenseSegment], dim: int) -> HnswGraph:
        faiss = require_faiss()
        graph = faiss.IndexHNSWFlat(dim, M, faiss.METRIC_INNER_PRODUCT)
        graph.hnsw.efConstruction = EF_CONSTRUCTION
        sizes = [len(s) for s in segments]
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        for seg in segments:
            if len(seg):
                graph.add(np.ascontiguousarray(seg.floats(), dtype=np.float32))
        cat = lambda parts: np.concatenate(parts) if parts else np.zeros(0, np.int64)  # noqa: E731
        return cls(
            graph,
            offsets,
            cat([s.row_keys for s in segments]).astype(np.int64),
            cat([np.full(len(s), s.id, np.int64) for s in segments]),
            cat([np.arange(len(s), dtype=np.int64) for s in segments]),
        )

    def search(
        self, q: FloatArray, allowed: np.ndarray, n_rows: int
    ) -> tuple[FloatArray, IntArray]:
        """Top ``n_rows`` allowed global rows per query: ``(scores, rows)``, -1 rows padded."""
        faiss = require_faiss()
        bitmap = np.packbits(allowed.astype(np.uint8), bitorder="little")
        sel = faiss.IDSelectorBitmap(len(allowed), faiss.swig_ptr(bitmap))
        params = faiss.SearchParametersHNSW(sel=sel, efSearch=max(EF_SEARCH_MIN, 2 * n_rows))
        scores, rows = self.graph.search(np.ascontiguousarray(q), n_rows, params=params)
        return scores.astype(np.float32), rows.astype(np.int64)


def ann_search(
    segments: list[dense.DenseSegment],
    graph: Callable[[], HnswGraph],
    q: FloatArray,
    masks: list[np.ndarray],
    depth: int,
) -> list[DocHits]:
    """Dense document search through the HNSW graph ``graph()`` (built on first need by
    the caller, over ``segments``); see the module docstring."""
    allowed = np.concatenate(masks) if masks else np.zeros(0, np.bool_)
    n_allowed = int(allowed.sum())
    if n_allowed == 0 or n_allowed < max(_SELECTIVE * len(allowed), 20 * depth):
        return dense.search_docs(segments, q, masks, depth)
    hnsw = graph()
    out: list[DocHits] = []
    for qi in range(len(q)):
        fetch = min(2 * depth, n_allowed)
        while True:
            scores, rows = hnsw.search(q[qi : qi + 1], allowed, fetch)
            ok = rows[0] >= 0
            r = rows[0][ok]
            hits = aggregate(scores[0][ok], hnsw.keys[r], hnsw.seg_ids[r], hnsw.rows[r])
            if len(hits.keys) >= depth or fetch >= n_allowed:
                break
            fetch = min(fetch * 4, n_allowed)
        out.append(hits.head(depth))
    return out
