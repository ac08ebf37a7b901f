"""The local dense field: chunk vectors in ``dense/`` segment files, searched exactly or
through a persisted HNSW graph (see :mod:`embedstack.index.dense` for the file format and
the search, :mod:`embedstack.index.ann` for the graph, :mod:`embedstack.index.ann_files`
for its files).

With ``ann="hnsw"`` the writer grows the graph as it writes each segment (before SQLite
commits it: rows of a segment that is never committed are dead rows, masked like deleted
ones), saves it when it has grown by half since the last save (and at least
``PERSIST_MIN_ROWS`` rows) and when the index is closed, and rebuilds it from scratch only
when most of its rows belong to segments that are gone (after :meth:`Index.compact`).
Opening an index then loads the saved graph instead of rebuilding it; segments written
after the last save are added to it.

Merges (:mod:`embedstack.index._merge`) write the merged segment through :meth:`rewrite`
under a new number; once the merge is committed (:meth:`release` without ``reclaim``) the
writer's graph holds it as an alias of its sources' graph rows (:meth:`HnswGraph.remap
<embedstack.index.ann.HnswGraph.remap>`): no insertion, no dead rows but the deleted
ones, so merges never make the graph rebuild. Aliased rows count as unsaved rows for the
save thresholds. A graph that lacks a source (a reader's in-memory graph, or a saved graph
older than the merge) adds the merged segment's rows like any new segment's; its sources'
rows are then dead rows. For int8 and binary indexes an alias keeps the graph's vectors of
the source rows (decoded before the merge re-quantized them, at most a step away).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from embedstack import vectors
from embedstack._typing import FloatArray, IntArray
from embedstack.encoders import TextEncoder
from embedstack.errors import DimensionMismatch, IndexCorrupt
from embedstack.index import ann_files, dense
from embedstack.index.ann import HnswGraph, ann_search
from embedstack.index.fields.base import (
    Batch,
    DocHits,
    FieldStats,
    Rewrite,
    Snapshot,
    merges,
)
from embedstack.index.fields.segments import SegmentFiles, dir_bytes
from embedstack.index.readahead import read_ahead

__all__ = ["DIR", "DenseField"]

DIR = "dense"
PERSIST_MIN_ROWS = 50_000  # save the graph during writes once this many rows are unsaved ...
PERSIST_GROWTH = 0.5  # ... and they are at least this share of the saved rows (and at close)
REBUILD_DEAD = 0.5  # rebuild when more than this share of the graph's rows are dead


class DenseField(SegmentFiles):
    """Dense chunk vectors (float32, int8 or binary with int8 rescoring).

    Args:
        root: the ``dense/`` folder.
        encoder: the index's text encoder.
        dim: stored dimension (a Matryoshka truncation when below ``full_dim``).
        full_dim: the encoder's output dimension.
        precision: ``"float32"``, ``"int8"`` or ``"binary"``.
        ann: None (exact search) or ``"hnsw"``.
        readonly: a reader: loads the saved graph and never saves one.
    """

    name = "dense"

    def __init__(self, root: Path, encoder: TextEncoder, dim: int, full_dim: int,
                 precision: str, ann: str | None, readonly: bool = False) -> None:  # fmt: skip
        super().__init__(root)
        self.encoder = encoder
        self.dim, self.full_dim = dim, full_dim
        self.precision = precision
        self.ann = ann
        self.readonly = readonly
        self._segments: list[dense.DenseSegment] = []
        self._graph: HnswGraph | None = None
        self._stale = False  # compacted: rebuild the graph at the next refresh
        self._merging: dict[int, list[tuple[int, np.ndarray]]] = {}  # uncommitted merges
        self._look = False  # a reader refreshed: look for a newer saved graph

    def files(self, segment: int) -> list[str]:
        return dense.segment_files(segment, self.precision)

    # --- writes --------------------------------------------------------------------------------

    def prepare(self, batch: Batch) -> FloatArray:
        texts = batch.chunks
        emb = np.asarray(self.encoder.encode_documents(texts), dtype=np.float32)
        if emb.shape != (len(texts), self.full_dim):
            raise DimensionMismatch(
                f"the encoder returned {emb.shape}, expected ({len(texts)}, {self.full_dim})"
            )
        return vectors.truncate(emb, self.dim) if self.dim != self.full_dim else emb

    def write(self, batch: Batch, prepared: FloatArray, segment: int, keys: IntArray) -> None:
        row_keys = batch.row_keys(keys)
        seg = dense.write_segment(self.root, segment, prepared, self.precision, row_keys)
        self.loaded[segment] = seg
        if self.ann == "hnsw":
            self._hnsw().add(segment, seg.floats())
            self._persist(final=False)

    def refresh(self, snapshot: Snapshot) -> None:
        out, fresh = [], []
        for rows in snapshot.segments:
            seg = self.loaded.get(rows.id)
            if not isinstance(seg, dense.DenseSegment):
                seg = self._load(rows.id, rows.n_rows, rows.row_keys)
                fresh += dense.segment_files(rows.id, self.precision)
            out.append(dense.DenseSegment(seg.id, seg.data, seg.calibration, seg.codes,
                                          rows.row_keys))  # fmt: skip
        self._segments = out
        self.loaded = {seg.id: seg for seg in out}
        read_ahead(self.root / name for name in fresh)  # mapped, searched from now on
        self._look = self.readonly
        if self._stale and not self.readonly:
            self._stale = False
            self._hnsw()

    def release(self, segments: Sequence[int], *, reclaim: bool = True) -> None:
        merged, self._merging = self._merging, {}
        super().release(segments)
        if self.ann != "hnsw" or not segments:
            return
        if reclaim:
            self._stale = True  # compaction: rebuild over the new segments once refreshed
        elif self._graph is not None:  # a merge: its rows are in the graph already
            for new, sources in merged.items():
                self._graph.remap(new, sources)

    def close(self) -> None:
        """Save the graph's unsaved rows (writers), so the next open loads, not rebuilds."""
        if self.ann == "hnsw":
            self._persist(final=True)

    def build_graph(self) -> None:
        """Writers switching to ``ann="hnsw"`` (:meth:`Index.set_ann`): bring the graph over
        every current segment up to date and save it now, as the first search would (the
        newest saved graph is loaded and extended when there is one, else one is built)."""
        self._hnsw()
        self._persist(final=True)

    def use_ann(self, ann: str | None) -> None:
        """Search through the graph (``"hnsw"``) or exactly (None) from now on; None forgets
        the graph and deletes its files. Call it once the manifest records ``ann``."""
        self.ann = ann
        if ann is None:
            self._graph, self._stale = None, False
            ann_files.remove_older(self.root, 0)  # graph 0 never exists: every graph goes

    def _kept(self) -> set[str]:
        """The newest saved graph; none for exact search, so that recovery deletes graph
        files a switch to exact (or an interrupted switch to HNSW) left behind."""
        number = ann_files.newest(self.root) if self.ann else 0
        return {*ann_files.graph_files(number), ann_files.alias_file(number)} if number else set()

    def stats(self) -> FieldStats:
        files = [self.root / name for name in self._kept()] if self.ann else []
        graph = sum(f.stat().st_size for f in files if f.exists())
        total = dir_bytes(self.root)
        return FieldStats({self.name: total - graph, **({"hnsw": graph} if graph else {})})

    def _load(self, segment: int, n_rows: int, row_keys: IntArray) -> dense.DenseSegment:
        return dense.load_segment(self.root, segment, n_rows, self.dim, self.precision, row_keys)

    def check(self, snapshot: Snapshot) -> None:
        for rows in snapshot.segments:
            seg = self._load(rows.id, rows.n_rows, rows.row_keys)
            head = np.asarray(seg.floats(slice(0, min(rows.n_rows, 1024))))
            if not np.isfinite(head).all():
                raise IndexCorrupt(
                    f"{self.root.parent}: dense segment {rows.id} holds non-finite values"
                )
        if self.ann == "hnsw":
            self._check_graph(snapshot)

    def _check_graph(self, snapshot: Snapshot) -> None:
        """The saved graph reads, and each registered segment it holds has the registered
        row count and, at its first row, the segment's vector."""
        graph = ann_files.load(self.root, self.dim)
        if graph is None:
            return
        registered = {rows.id: rows for rows in snapshot.segments}
        for (seg_id, n), offset in zip(graph.covered, graph.offsets().tolist(), strict=False):
            rows = registered.get(seg_id)
            if rows is None or n == 0:
                continue
            seg = self._load(rows.id, rows.n_rows, rows.row_keys)
            if n != rows.n_rows or not np.allclose(
                graph.graph.reconstruct(offset), seg.floats(slice(0, 1))[0], atol=1e-5
            ):
                raise IndexCorrupt(
                    f"{self.root}: the HNSW graph disagrees with dense segment {seg_id}"
                )
        for seg_id, pos in graph.aliases.items():
            rows = registered.get(seg_id)
            if rows is None or not len(pos):
                continue
            seg = self._load(rows.id, rows.n_rows, rows.row_keys)
            cal = seg.calibration  # merges may have re-quantized the row: a step away
            tol = 1e-5 if cal is None else float(np.max(cal.high - cal.low)) / 255 + 1e-5
            if len(pos) != rows.n_rows or not np.allclose(
                graph.graph.reconstruct(int(pos[0])), seg.floats(slice(0, 1))[0], atol=tol
            ):
                raise IndexCorrupt(
                    f"{self.root}: the HNSW graph's alias disagrees with dense segment {seg_id}"
                )

    def rewrite(self, rewrites: Sequence[Rewrite]) -> None:
        for new, group in merges(rewrites):
            parts = []
            for rw in group:
                old = self.loaded.get(rw.old.id)
                if not isinstance(old, dense.DenseSegment):
                    old = self._load(rw.old.id, rw.old.n_rows, rw.old.row_keys)
                parts.append((old, rw.mask))
            dense.merge_rows(self.root, parts, new, self.precision)
            if self.ann == "hnsw":  # remapped in the graph once committed (release)
                self._merging[new] = [(rw.old.id, rw.mask) for rw in group]

    def discard(self, segments: Sequence[int], keys: IntArray) -> None:
        super().discard(segments, keys)
        for seg in segments:
            self._merging.pop(seg, None)

    # --- reads ---------------------------------------------------------------------------------

    def encode_queries(self, queries: list[str]) -> FloatArray:
        """``(len(queries), dim)`` float32 query vectors (truncated like the stored ones)."""
        q = np.asarray(self.encoder.encode_queries(queries), dtype=np.float32)
        return vectors.truncate(q, self.dim) if q.shape[1] != self.dim else q

    def _hnsw(self) -> HnswGraph:
        """The graph, holding every current segment: kept, loaded, extended or rebuilt."""
        graph = self._graph
        if graph is None or (self._look and ann_files.newest(self.root) > graph.number):
            graph = self._load_saved() or graph
        self._look = False
        if graph is None or graph.n_rows - graph.live_rows(self._segments) > (
            REBUILD_DEAD * graph.n_rows
        ):
            graph = HnswGraph.build(self._segments, self.dim)
            self._graph = graph
            self._persist(final=True)
        else:
            graph.extend(self._segments)
            self._graph = graph
            self._persist(final=False)
        return graph

    def _load_saved(self) -> HnswGraph | None:
        """The newest saved graph; None when there is none or it cannot be read (twice: a
        writer may have replaced it meanwhile), so that it is rebuilt (and check() reports
        a damaged one)."""
        for _ in range(2):
            try:
                return ann_files.load(self.root, self.dim)
            except IndexCorrupt:
                continue
        return None

    def _persist(self, *, final: bool) -> None:
        """Writers: save the graph when its unsaved rows call for it (``final``: any)."""
        graph = self._graph
        if graph is None or self.readonly:
            return
        unsaved = graph.n_rows - graph.persisted + graph.remapped
        due = unsaved >= max(PERSIST_MIN_ROWS, PERSIST_GROWTH * graph.persisted)
        if (unsaved or not graph.number) and graph.n_rows and (final or due):
            ann_files.save(self.root, graph, self.dim)
            ann_files.remove_older(self.root, graph.number)

    def search(
        self, queries: list[str], snapshot: Snapshot, allowed: IntArray | None, depth: int
    ) -> list[DocHits]:
        q = self.encode_queries(queries)
        masks = snapshot.masks(allowed)
        if self.ann == "hnsw":
            return ann_search(self._segments, self._hnsw, q, masks, depth)
        return dense.search_docs(self._segments, q, masks, depth)

    def score_rows(
        self, query: str, snapshot: Snapshot, rows: dict[int, list[tuple[int, int]]]
    ) -> Iterable[tuple[int, float]]:
        """Stored-vector scores of chunk rows, exactly as dense search scores them."""
        q = self.encode_queries([query])
        segments = {seg.id: seg for seg in self._segments}
        scored: list[tuple[int, float]] = []
        for seg_id, pairs in rows.items():
            seg = segments.get(seg_id)
            if seg is None:  # committed after this reader's snapshot: not visible yet
                continue
            r = np.asarray([row for row, _ in pairs], dtype=np.int64)
            if seg.calibration is None:
                s = (q @ np.asarray(seg.data[r], dtype=np.float32).T)[0]
            else:
                codes = seg.data if seg.codes is None else seg.codes
                s = vectors.int8_scores(q, np.asarray(codes[r]), seg.calibration)[0]
            scored += zip((key for _, key in pairs), s.tolist(), strict=True)
        return scored
