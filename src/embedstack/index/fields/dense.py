"""The local dense field: chunk vectors in ``dense/`` segment files, searched exactly or
through an in-memory HNSW graph (see :mod:`embedstack.index.dense` for the file format and
the search, :mod:`embedstack.index.ann` for the graph)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from embedstack import vectors
from embedstack._typing import FloatArray, IntArray
from embedstack.encoders import TextEncoder
from embedstack.errors import DimensionMismatch, IndexCorrupt
from embedstack.index import dense
from embedstack.index.ann import HnswGraph, ann_search
from embedstack.index.fields.base import Batch, DocHits, Rewrite, Snapshot
from embedstack.index.fields.segments import SegmentFiles

__all__ = ["DIR", "DenseField"]

DIR = "dense"


class DenseField(SegmentFiles):
    """Dense chunk vectors (float32, int8 or binary with int8 rescoring).

    Args:
        root: the ``dense/`` folder.
        encoder: the index's text encoder.
        dim: stored dimension (a Matryoshka truncation when below ``full_dim``).
        full_dim: the encoder's output dimension.
        precision: ``"float32"``, ``"int8"`` or ``"binary"``.
        ann: None (exact search) or ``"hnsw"``.
    """

    name = "dense"

    def __init__(self, root: Path, encoder: TextEncoder, dim: int, full_dim: int,
                 precision: str, ann: str | None) -> None:  # fmt: skip
        super().__init__(root)
        self.encoder = encoder
        self.dim, self.full_dim = dim, full_dim
        self.precision = precision
        self.ann = ann
        self._segments: list[dense.DenseSegment] = []
        self._graph: HnswGraph | None = None

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
        self.loaded[segment] = dense.write_segment(
            self.root, segment, prepared, self.precision, row_keys
        )

    def refresh(self, snapshot: Snapshot) -> None:
        out = []
        for rows in snapshot.segments:
            seg = self.loaded.get(rows.id)
            if not isinstance(seg, dense.DenseSegment):
                seg = self._load(rows.id, rows.n_rows, rows.row_keys)
            out.append(dense.DenseSegment(seg.id, seg.data, seg.calibration, seg.codes,
                                          rows.row_keys))  # fmt: skip
        self._segments = out
        self.loaded = {seg.id: seg for seg in out}
        self._graph = None

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

    def rewrite(self, rewrites: Sequence[Rewrite]) -> None:
        for rw in rewrites:
            old = self.loaded.get(rw.old.id)
            if not isinstance(old, dense.DenseSegment):
                old = self._load(rw.old.id, rw.old.n_rows, rw.old.row_keys)
            dense.write_rows(self.root, old, rw.mask, rw.new, self.precision)

    # --- reads ---------------------------------------------------------------------------------

    def encode_queries(self, queries: list[str]) -> FloatArray:
        """``(len(queries), dim)`` float32 query vectors (truncated like the stored ones)."""
        q = np.asarray(self.encoder.encode_queries(queries), dtype=np.float32)
        return vectors.truncate(q, self.dim) if q.shape[1] != self.dim else q

    def _hnsw(self) -> HnswGraph:
        if self._graph is None:
            self._graph = HnswGraph.build(self._segments, self.dim)
        return self._graph

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
