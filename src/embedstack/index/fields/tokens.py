"""The local token-vector field: ColBERT token vectors (or a split cross-encoder's document
states) in ``colbert/`` segment files, scored by late interaction (format and encoding in
:mod:`embedstack.index.late`, the encoder in :mod:`embedstack.index.late_model`)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embedstack._typing import IntArray
from embedstack.encoders.multivector import TokenVectors, maxsim
from embedstack.errors import DimensionMismatch
from embedstack.index import late, late_model
from embedstack.index.fields.base import Batch, Rewrite, Snapshot, merges
from embedstack.index.fields.segments import SegmentFiles

__all__ = ["DIR", "TokenField"]

DIR = late.DIR


class TokenField(SegmentFiles):
    """Per-chunk token vectors for late-interaction rescoring (Khattab & Zaharia 2020).

    Args:
        root: the ``colbert/`` folder.
        record: the manifest's ``colbert`` record.
        encoder: the ColBERT (or split) encoder, or None to load the recorded one when first
            needed.
    """

    name = "colbert"

    def __init__(self, root: Path, record: dict[str, Any],
                 encoder: late_model.LateEncoder | None = None) -> None:  # fmt: skip
        super().__init__(root, encoder)
        self.record = record
        self.dim = int(record["dim"])
        self.precision = str(record["precision"])

    def encoder(self) -> late_model.LateEncoder:
        """The encoder, loaded from the manifest record on first use.

        Raises:
            ModelMismatch: the recorded model's weights or document settings changed.
        """
        found: late_model.LateEncoder = self._lazy_encoder(
            self.record, late_model.resolve_encoder, late_model.check_encoder
        )
        return found

    def files(self, segment: int) -> list[str]:
        return late.segment_files(segment, self.precision)

    def _get(self, segment: int, n_rows: int) -> late.LateSegment:
        seg = self.loaded.get(segment)
        if not isinstance(seg, late.LateSegment):
            seg = late.load_segment(self.root, segment, n_rows, self.dim, self.precision)
            self.loaded[segment] = seg
        return seg

    def prepare(self, batch: Batch) -> TokenVectors:
        return late.encode_chunks(self.encoder(), batch.chunks, self.dim, self.precision)

    def write(self, batch: Batch, prepared: TokenVectors, segment: int, keys: IntArray) -> None:
        late.write_segment(self.root, segment, prepared)

    def refresh(self, snapshot: Snapshot) -> None:
        """Segments are mapped when first scored (a damaged one must not stop the index
        from opening), so a reader that scores a segment a writer merged away after the
        reader's last refresh gets IndexCorrupt, as after a compaction."""
        self._retain(snapshot)

    def check(self, snapshot: Snapshot) -> None:
        for rows in snapshot.segments:
            seg = late.load_segment(self.root, rows.id, rows.n_rows, self.dim, self.precision)
            late.validate(seg, self.root)

    def rewrite(self, rewrites: Sequence[Rewrite]) -> None:
        """Each new segment's token vectors are its sources' kept rows, gathered one
        source after the other with their stored codes and scales (nothing re-quantized:
        int8 scales are per token)."""
        for new, group in merges(rewrites):
            parts = [
                self._get(rw.old.id, rw.old.n_rows).gather(np.flatnonzero(rw.mask)) for rw in group
            ]
            late.write_segment(self.root, new, TokenVectors.concat(parts))

    def score_rows(
        self, query: str, snapshot: Snapshot, rows: dict[int, list[tuple[int, int]]]
    ) -> Iterable[tuple[int, float]]:
        """MaxSim of the query's tokens against each chunk row (a split cross-encoder's
        upper layers instead, for stored states); only the rows' tokens are read."""
        sizes = {seg.id: seg.n_rows for seg in snapshot.segments}
        parts: list[TokenVectors] = []
        owners: list[int] = []
        for seg_id in sorted(rows):
            if seg_id not in sizes:  # committed after this reader's snapshot: not visible yet
                continue
            pairs = sorted(rows[seg_id])  # ascending rows: sequential reads of the mapped file
            r = np.fromiter((row for row, _ in pairs), dtype=np.int64, count=len(pairs))
            parts.append(self._get(seg_id, sizes[seg_id]).gather(r))
            owners += [key for _, key in pairs]
        if not parts:
            return []
        encoder = self.encoder()
        q = encoder.encode_queries([query])
        if q.dim != self.dim:
            raise DimensionMismatch(
                f"the ColBERT encoder returned {q.dim}-d query tokens, not {self.dim}"
            )
        stored = TokenVectors.concat(parts)
        score_states = getattr(encoder, "score_states", None)  # a split encoder's upper layers
        scores = score_states(q.doc(0), stored) if score_states else maxsim(q.doc(0), stored)
        return zip(owners, scores.tolist(), strict=True)
