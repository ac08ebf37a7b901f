"""ColBERT token vectors of an :class:`~embedstack.index.Index`, for late-interaction scoring.

An index created with ``colbert="NAME_OR_DIR"`` (or any :class:`LateEncoder`, such as a
:class:`~embedstack.encoders.colbert.LateInteractionEncoder`) stores, next to each dense
segment, the ColBERT document token vectors of the same chunks (the text the dense side
embeds, title included, passed to ``encode_documents``), so that
:meth:`Index.colbert_scores` scores candidates by MaxSim with only the query encoded. Files
under ``colbert/`` (all ``allow_pickle=False``, memory-mapped when read)::

    seg-000001.vectors.npy   (n_tokens, dim) float32 | float16 | int8   the rows' tokens
    seg-000001.offsets.npy   (rows + 1,) int64    row i owns tokens [offsets[i], offsets[i+1])
    seg-000001.scales.npy    (n_tokens,) float32  int8 only: token ≈ code × scale

Segment ``N`` here has exactly the rows of dense segment ``N`` (same chunks, same order),
so everything the dense side knows applies unchanged: a row is live when a ``chunks`` row
in SQLite points at it, and deletes need nothing here. The files follow the dense commit
protocol: written and fsynced before the SQLite commit that registers segment ``N``,
removed when that commit fails, and removed by the next writer when SQLite does not
register ``N``. Compaction rewrites the live rows under the new segment number without
re-encoding or re-quantising them.

Precision (``colbert_precision``): ``"float16"`` (default) halves the bytes of float32 and
gives the same SciFact nDCG@10 in a top-50 rerank; ``"int8"`` (symmetric per-token scale,
as :meth:`~embedstack.encoders.multivector.TokenVectors.astype`) quarters them
(``benchmarks/results/colbert_rerank*.md``). ColBERTv2 (Santhanam et al. 2022) compresses
further with centroids and residuals; plain per-token storage keeps scoring exact at
float32 and needs no training.

Scoring is MaxSim (Khattab & Zaharia 2020, ``S(q, d) = Σ_i max_j q_i · d_j``) of the query's
token vectors against each candidate chunk, and a document scores the maximum over its live
chunks (as dense search does). Only the candidates' rows are read: their token ranges are
gathered from the memory-mapped files, so the cost is one query encoding plus
``O(candidate tokens)``, independent of the corpus size.

The encoder side (``colbert=`` arguments, the manifest record, loading the recorded model)
is :mod:`embedstack.index.late_model`'s.

A chunk is encoded with the encoder's ``doc_maxlen``: a chunk window longer than that (the
dense window is set by the dense encoder) is scored on its first ``doc_maxlen`` tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embedstack.encoders.multivector import TokenVectors
from embedstack.errors import DimensionMismatch, IndexCorrupt
from embedstack.index.dense import segment_name
from embedstack.index.late_model import LateEncoder
from embedstack.index.manifest import fsync_dir, save_npy

__all__ = [
    "DIR",
    "LateSegment",
    "encode_chunks",
    "load_segment",
    "segment_files",
    "validate",
    "write_rows",
    "write_segment",
]

DIR = "colbert"
_PARTS = ("vectors", "offsets", "scales")
_DTYPES = {"float32": np.float32, "float16": np.float16, "int8": np.int8}
_ENCODE_BATCH = 256  # chunks per encode_documents call (bounds the float32 peak)
_CHECK_BLOCK = 1 << 16  # tokens per finiteness check in validate()


# --- segments --------------------------------------------------------------------------------


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenated ``arange(s, s + n)`` of every (start, length), as one int64 array."""
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    shift = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    return np.arange(total, dtype=np.int64) + shift


@dataclass
class LateSegment:
    """The token vectors of one segment (memory-mapped when loaded).

    Attributes:
        id: segment number (shared with the dense segment).
        n_rows: chunk rows in the segment.
        vectors: ``(n_tokens, dim)`` float32 | float16 | int8 codes.
        offsets: ``(n_rows + 1,)`` int64; row ``i`` owns tokens
            ``offsets[i]:offsets[i + 1]``.
        scales: ``(n_tokens,)`` float32 per-token scales for int8, else None.
    """

    id: int
    n_rows: int
    vectors: np.ndarray
    offsets: np.ndarray
    scales: np.ndarray | None

    def gather(self, rows: np.ndarray) -> TokenVectors:
        """The token vectors of ``rows`` (any order), reading only their token ranges."""
        r = np.asarray(rows, dtype=np.int64)
        starts = np.asarray(self.offsets[r], dtype=np.int64)
        lengths = np.asarray(self.offsets[r + 1], dtype=np.int64) - starts
        idx = _ranges(starts, lengths)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        scales = None if self.scales is None else np.asarray(self.scales[idx], dtype=np.float32)
        return TokenVectors(np.asarray(self.vectors[idx]), offsets, scales)


def segment_files(segment: int, precision: str) -> list[str]:
    """File names of ColBERT segment ``segment`` stored at ``precision``."""
    parts = _PARTS if precision == "int8" else _PARTS[:2]
    return [f"{segment_name(segment)}.{part}.npy" for part in parts]


def write_segment(root: Path, segment: int, tokens: TokenVectors) -> list[str]:
    """Write one batch's token vectors (text ``i`` = chunk row ``i``, already at the stored
    precision) durably; returns the file names.

    The files are not registered anywhere: the SQLite commit of the batch registers them.
    """
    root.mkdir(exist_ok=True)
    names = segment_files(segment, tokens.precision)
    arrays = [tokens.vectors, tokens.offsets.astype(np.int64)]
    if tokens.scales is not None:
        arrays.append(tokens.scales.astype(np.float32))
    for name, arr in zip(names, arrays, strict=True):
        save_npy(root / name, arr)
    fsync_dir(root)
    return names


def write_rows(root: Path, seg: LateSegment, mask: np.ndarray, new_id: int) -> list[str]:
    """Compaction: write the rows selected by ``mask`` as segment ``new_id``, renumbered
    like the dense rows (the k-th kept row becomes row k), with the same stored codes."""
    return write_segment(root, new_id, seg.gather(np.flatnonzero(mask)))


def _load(path: Path) -> np.ndarray:
    try:
        arr: np.ndarray = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise IndexCorrupt(f"cannot read {path}: {exc}") from exc
    return arr


def load_segment(root: Path, segment: int, n_rows: int, dim: int, precision: str) -> LateSegment:
    """Memory-map a registered segment, checking shapes, dtypes and the offsets' ends.

    Raises:
        IndexCorrupt: a file is missing, unreadable, or of the wrong shape or dtype.
    """
    names = segment_files(segment, precision)
    vectors, offsets = _load(root / names[0]), _load(root / names[1])
    want = np.dtype(_DTYPES[precision])
    if vectors.ndim != 2 or vectors.shape[1] != dim or vectors.dtype != want:
        raise IndexCorrupt(
            f"{root / names[0]} holds {vectors.dtype}{vectors.shape}, expected {want}(n, {dim})"
        )
    if offsets.shape != (n_rows + 1,) or offsets.dtype != np.int64:
        raise IndexCorrupt(
            f"{root / names[1]} holds {offsets.dtype}{offsets.shape}, expected int64"
            f"({n_rows + 1},): one offset per row of dense segment {segment}, plus one"
        )
    if int(offsets[0]) != 0 or int(offsets[-1]) != len(vectors):
        raise IndexCorrupt(f"{root / names[1]}: offsets must run from 0 to {len(vectors)}")
    scales = None
    if precision == "int8":
        scales = _load(root / names[2])
        if scales.shape != (len(vectors),) or scales.dtype != np.float32:
            raise IndexCorrupt(
                f"{root / names[2]} holds {scales.dtype}{scales.shape}, expected "
                f"float32({len(vectors)},)"
            )
    return LateSegment(segment, n_rows, vectors, offsets, scales)


def validate(seg: LateSegment, where: Path) -> None:
    """Full check (``Index.check``): offsets never decrease, values finite, int8 scales > 0
    (shapes, dtypes and row counts are checked by :func:`load_segment`)."""
    offsets = np.asarray(seg.offsets)
    ok = bool(np.all(np.diff(offsets) >= 0))
    for start in range(0, len(seg.vectors), _CHECK_BLOCK):
        if not ok:
            break
        block = slice(start, start + _CHECK_BLOCK)
        if seg.scales is None:
            ok = bool(np.isfinite(np.asarray(seg.vectors[block])).all())
        else:
            s = np.asarray(seg.scales[block])
            ok = bool((np.isfinite(s) & (s > 0)).all())
    if not ok:
        raise IndexCorrupt(f"{where}: colbert segment {seg.id} has invalid offsets or values")


# --- writing and scoring ---------------------------------------------------------------------


def encode_chunks(
    encoder: LateEncoder, texts: Sequence[str], dim: int, precision: str
) -> TokenVectors:
    """Document token vectors of ``texts`` (one text per chunk row) at ``precision``.

    Raises:
        DimensionMismatch: the encoder returned another number of texts or dimension.
    """
    parts = []
    for start in range(0, len(texts), _ENCODE_BATCH):
        part = list(texts[start : start + _ENCODE_BATCH])
        tokens = encoder.encode_documents(part)
        if not isinstance(tokens, TokenVectors) or len(tokens) != len(part) or tokens.dim != dim:
            got = (len(tokens), tokens.dim) if isinstance(tokens, TokenVectors) else tokens
            raise DimensionMismatch(
                f"the ColBERT encoder returned {got!r}, expected TokenVectors of {len(part)} "
                f"texts, {dim}-d"
            )
        parts.append(tokens.astype(precision))
    return TokenVectors.concat(parts)
