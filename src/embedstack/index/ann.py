"""Approximate dense search with an HNSW graph (Malkov & Yashunin 2018) from faiss.

The graph holds the rows of a list of segments, in the order they were added (graph row =
the segment's offset in that list + its row); rows are decoded to float32 for int8 and
binary indexes. It is grown incrementally as segments are written, persisted next to them
(:mod:`embedstack.index.ann_files`) and rebuilt from scratch only when most of its rows
belong to segments that are gone, which is what a compaction does. A segment made by
merging others (:mod:`embedstack.index._merge`) is not inserted again: it becomes an
*alias*, the graph rows its rows already have as rows of its sources (:meth:`HnswGraph.remap`),
so merges cost the graph nothing and leave no dead rows but the deleted ones.

A row is returned only when the current snapshot holds its segment and the row is live and
allowed: the snapshot's masks are scattered into a graph-order bitmap and applied *inside*
the graph search with a faiss ``IDSelectorBitmap``, so deleted, filtered-out, rolled-back
or compacted-away rows never take result slots; the search over-fetches (x4) until
``depth`` documents come back. When a filter leaves few rows (under 5 % of them, or fewer
than ``20 * depth``) an exact scan of those rows is both faster and exact, and is used
instead. Requires the ``ann`` extra (``faiss-cpu``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from embedstack._typing import FloatArray, IntArray
from embedstack.errors import require
from embedstack.index import dense
from embedstack.index.fields.base import DocHits, aggregate

__all__ = ["EVENTS", "HnswGraph", "ann_search", "require_faiss"]

M = 32  # graph degree: faiss's and hnswlib's recommended range for 384-d text embeddings
EF_CONSTRUCTION = 128
EF_SEARCH_MIN = 128
_SELECTIVE = 0.05
EVENTS: Counter[str] = Counter()  # "build", "load", "save", "added_rows": for tests and stats


def require_faiss() -> Any:
    """Import faiss or raise :class:`MissingDependency` naming the ``ann`` extra."""
    return require("faiss", "ann", "HNSW search (ann='hnsw')")


@dataclass
class HnswGraph:
    """An HNSW graph over the rows of the segments ``covered``, in that order.

    Attributes:
        graph: the faiss ``IndexHNSWFlat`` (inner product).
        covered: ``(segment id, n_rows)`` of each segment in the graph, in graph order.
        persisted: rows of the graph as last saved (0: never saved).
        number: the number of the file it was loaded from or saved to (0: none).
        viewed: the vectors are a read-only memory map of the saved file (loading is then
            nearly free); the first :meth:`add` copies the graph into memory.
        aliases: merged segments held through their sources' rows: segment id ->
            ``(n_rows,)`` int64 graph row of each of its rows.
        remapped: rows aliased since the graph was last saved (a reader that loads the
            saved graph would insert them again).
    """

    graph: Any
    covered: list[tuple[int, int]] = field(default_factory=list)
    persisted: int = 0
    number: int = 0
    viewed: bool = False
    aliases: dict[int, IntArray] = field(default_factory=dict)
    remapped: int = 0
    _owners: tuple[IntArray, IntArray] | None = field(default=None, repr=False)

    @classmethod
    def empty(cls, dim: int) -> HnswGraph:
        faiss = require_faiss()
        graph = faiss.IndexHNSWFlat(dim, M, faiss.METRIC_INNER_PRODUCT)
        graph.hnsw.efConstruction = EF_CONSTRUCTION
        return cls(graph)

    @classmethod
    def build(cls, segments: list[dense.DenseSegment], dim: int) -> HnswGraph:
        """A new graph over every row of ``segments``."""
        EVENTS["build"] += 1
        out = cls.empty(dim)
        for seg in segments:
            out.add(seg.id, seg.floats())
        return out

    @property
    def n_rows(self) -> int:
        return sum(n for _, n in self.covered)

    def offsets(self) -> IntArray:
        """``(len(covered) + 1,)`` first graph row of each covered segment."""
        sizes = [n for _, n in self.covered]
        return np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]).astype(np.int64)

    def positions(self, segment: int) -> IntArray | None:
        """``(n_rows,)`` graph rows of ``segment``'s rows, None when the graph lacks it."""
        if segment in self.aliases:
            return self.aliases[segment]
        for (seg, n), start in zip(self.covered, self.offsets().tolist(), strict=False):
            if seg == segment:
                return np.arange(start, start + n, dtype=np.int64)
        return None

    def remap(self, segment: int, sources: list[tuple[int, np.ndarray]]) -> bool:
        """Hold merged segment ``segment`` as the rows of its ``sources`` (``(segment id,
        kept-row mask)``, in merge order) already in the graph; False (nothing changed)
        when a source is not in the graph, so that :meth:`extend` adds the segment."""
        parts = []
        for seg, mask in sources:
            pos = self.positions(seg)
            if pos is None or len(pos) != len(mask):
                return False
            parts.append(pos[np.asarray(mask, dtype=np.bool_)])
        for seg, _ in sources:  # merged away: an alias of it is no longer needed
            self.aliases.pop(seg, None)
        self.aliases[segment] = np.concatenate(parts).astype(np.int64)
        self.remapped += len(self.aliases[segment])
        self._owners = None
        return True

    def add(self, segment: int, rows: FloatArray) -> None:
        """Append segment ``segment``'s ``(n_rows, dim)`` float32 rows to the graph."""
        if segment in self.aliases or any(seg == segment for seg, _ in self.covered):
            return  # already in (a write retried over a graph that kept it)
        if len(rows):
            if self.viewed:  # faiss aborts on growing a memory-mapped vector: own it first
                faiss = require_faiss()
                self.graph = faiss.deserialize_index(faiss.serialize_index(self.graph))
                self.viewed = False
            self.graph.add(np.ascontiguousarray(rows, dtype=np.float32))
        self.covered.append((segment, len(rows)))
        self._owners = None
        EVENTS["added_rows"] += len(rows)

    def live_rows(self, segments: list[dense.DenseSegment]) -> int:
        """Graph rows that belong to ``segments`` (the rest are dead: gone segments)."""
        ids = {seg.id for seg in segments}
        blocks = sum(n for seg, n in self.covered if seg in ids)
        return blocks + sum(len(pos) for seg, pos in self.aliases.items() if seg in ids)

    def extend(self, segments: list[dense.DenseSegment]) -> None:
        """Add the segments of ``segments`` the graph does not hold yet."""
        have = {seg for seg, _ in self.covered} | set(self.aliases)
        for seg in segments:
            if seg.id not in have:
                self.add(seg.id, seg.floats())

    def bitmap(self, segments: list[dense.DenseSegment], masks: list[np.ndarray]) -> np.ndarray:
        """``(n_rows,)`` bool in graph order: True where the row is allowed by ``masks``."""
        out = np.zeros(self.n_rows, np.bool_)
        offsets = self.offsets().tolist()
        where = {seg: o for (seg, _), o in zip(self.covered, offsets, strict=False)}
        for seg, mask in zip(segments, masks, strict=True):
            o = where.get(seg.id)
            if o is not None:
                out[o : o + len(mask)] = mask
            elif seg.id in self.aliases:
                out[self.aliases[seg.id]] = mask
        return out

    def locate(self, rows: IntArray) -> tuple[IntArray, IntArray]:
        """Segment ids and rows within their segment of graph ``rows`` (an aliased
        segment's, for rows it holds)."""
        if not self.aliases:
            offsets = self.offsets()
            pos = np.searchsorted(offsets, rows, side="right") - 1
            block_ids = np.asarray([seg for seg, _ in self.covered], dtype=np.int64)
            return block_ids[pos], rows - offsets[pos]
        if self._owners is None:
            offsets = self.offsets()
            sizes = [n for _, n in self.covered]
            ids = np.repeat(np.asarray([seg for seg, _ in self.covered], np.int64), sizes)
            local = np.arange(self.n_rows, dtype=np.int64) - np.repeat(offsets[:-1], sizes)
            for seg, pos in self.aliases.items():
                ids[pos] = seg
                local[pos] = np.arange(len(pos), dtype=np.int64)
            self._owners = (ids, local)
        ids, local = self._owners
        return ids[rows], local[rows]

    def search(
        self, q: FloatArray, allowed: np.ndarray, n_rows: int
    ) -> tuple[FloatArray, IntArray]:
        """Top ``n_rows`` allowed graph rows per query: ``(scores, rows)``, -1 rows padded."""
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
    """Dense document search through the HNSW graph ``graph()`` (which holds every segment
    of ``segments``, and maybe dead ones); see the module docstring."""
    n_allowed = sum(int(m.sum()) for m in masks)
    n_rows = sum(len(m) for m in masks)
    if n_allowed == 0 or n_allowed < max(_SELECTIVE * n_rows, 20 * depth):
        return dense.search_docs(segments, q, masks, depth)
    hnsw = graph()
    allowed = hnsw.bitmap(segments, masks)
    by_id = {seg.id: seg for seg in segments}
    out: list[DocHits] = []
    for qi in range(len(q)):
        fetch = min(2 * depth, n_allowed)
        while True:
            scores, rows = hnsw.search(q[qi : qi + 1], allowed, fetch)
            ok = rows[0] >= 0
            seg_ids, local = hnsw.locate(rows[0][ok])
            keys = np.empty(len(local), np.int64)
            for sid in np.unique(seg_ids).tolist():
                at = seg_ids == sid
                keys[at] = by_id[sid].row_keys[local[at]]
            hits = aggregate(scores[0][ok], keys, seg_ids, local)
            if len(hits.keys) >= depth or fetch >= n_allowed:
                break
            fetch = min(fetch * 4, n_allowed)
        out.append(hits.head(depth))
    return out
