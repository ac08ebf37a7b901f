"""The local SPLADE field: learned-sparse postings in ``sparse/`` segment files (format and
scoring in :mod:`embedstack.index.sparse`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from embedstack._typing import IntArray
from embedstack.encoders.splade import SparseTextEncoder, SparseVectors
from embedstack.errors import DimensionMismatch, IndexCorrupt
from embedstack.index import sparse
from embedstack.index.fields.base import Batch, DocHits, Rewrite, Snapshot, merges
from embedstack.index.fields.segments import SegmentFiles

__all__ = ["DIR", "SparseField"]

DIR = sparse.DIR


class SparseField(SegmentFiles):
    """SPLADE postings of every chunk (Formal et al. 2021).

    Args:
        root: the ``sparse/`` folder.
        record: the manifest's ``sparse`` record.
        encoder: the sparse encoder, or None to load the recorded one when first needed.
    """

    name = "sparse"

    def __init__(self, root: Path, record: dict[str, Any],
                 encoder: SparseTextEncoder | None = None) -> None:  # fmt: skip
        super().__init__(root, encoder)
        self.record = record
        self.vocab = int(record["vocab_size"])

    def encoder(self) -> SparseTextEncoder:
        """The sparse encoder, loaded from the manifest record on first use.

        Raises:
            ModelMismatch: the recorded model's weights changed.
        """
        found: SparseTextEncoder = self._lazy_encoder(
            self.record, sparse.resolve_encoder, sparse.check_encoder
        )
        return found

    def files(self, segment: int) -> list[str]:
        return sparse.segment_files(segment)

    def _get(self, segment: int, n_rows: int) -> sparse.SparseSegment:
        seg = self.loaded.get(segment)
        if not isinstance(seg, sparse.SparseSegment):
            seg = sparse.load_segment(self.root, segment, n_rows, self.vocab)
            self.loaded[segment] = seg
        return seg

    def prepare(self, batch: Batch) -> SparseVectors:
        texts = batch.chunks
        vecs = self.encoder().encode_documents(texts)
        if len(vecs) != len(texts) or vecs.vocab_size != self.vocab:
            raise DimensionMismatch(
                f"the sparse encoder returned {len(vecs)} rows over {vecs.vocab_size} terms, "
                f"expected {len(texts)} over {self.vocab}"
            )
        return vecs

    def write(self, batch: Batch, prepared: SparseVectors, segment: int, keys: IntArray) -> None:
        self.loaded[segment] = sparse.write_segment(self.root, segment, prepared)

    def refresh(self, snapshot: Snapshot) -> None:
        """Map every registered segment now (cheap: memory maps), so that a reader holds
        them before a writer's merge deletes their files.

        Raises:
            IndexCorrupt: a registered segment's file is missing (the reload retries when
                a writer committed meanwhile). A damaged one is left to fail when searched
                or checked, so that it does not stop the index from opening.
        """
        self._retain(snapshot)
        for rows in snapshot.segments:
            try:
                self._get(rows.id, rows.n_rows)
            except IndexCorrupt:
                if all((self.root / name).exists() for name in self.files(rows.id)):
                    continue
                raise

    def check(self, snapshot: Snapshot) -> None:
        for rows in snapshot.segments:
            seg = sparse.load_segment(self.root, rows.id, rows.n_rows, self.vocab)
            sparse.validate(seg, self.root)

    def rewrite(self, rewrites: Sequence[Rewrite]) -> None:
        for new, group in merges(rewrites):
            parts = [(self._get(rw.old.id, rw.old.n_rows), rw.mask) for rw in group]
            sparse.merge_rows(self.root, parts, new)

    def search(
        self, queries: list[str], snapshot: Snapshot, allowed: IntArray | None, depth: int
    ) -> list[DocHits]:
        q = self.encoder().encode_queries(queries)
        segments = [self._get(rows.id, rows.n_rows) for rows in snapshot.segments]
        keys = [rows.row_keys for rows in snapshot.segments]
        return sparse.search_docs(segments, keys, snapshot.masks(allowed), q, depth)
