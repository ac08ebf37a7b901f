"""Learned-sparse (SPLADE) postings of an :class:`~embedstack.index.Index`.

An index created with ``sparse="splade-tiny"`` (or any
:class:`~embedstack.encoders.splade.SparseTextEncoder`) stores, next to each dense segment,
the SPLADE term weights of the same chunks, as an inverted index: the CSR form of the
``(vocab × rows)`` matrix, i.e. for each term the rows that contain it. Files under
``sparse/`` (all ``allow_pickle=False``, memory-mapped when read)::

    seg-000001.terms.npy     (vocab + 1,) int64  term t's postings are [terms[t], terms[t+1])
    seg-000001.rows.npy      (nnz,) int32        chunk rows, ascending within each term
    seg-000001.weights.npy   (nnz,) float32      the chunk's weight of the term (> 0)

Segment ``N`` here has exactly the rows of dense segment ``N`` (same chunks, same order),
so everything the dense side knows applies unchanged: a row is live when a ``chunks`` row
in SQLite points at it, filters and deletes are the same per-segment row masks, and the
best row of a document locates its chunk span. The files follow the dense commit protocol:
written and fsynced before the SQLite commit that registers segment ``N``, removed when
that commit fails, and removed by the next writer when SQLite does not register ``N``.

Scoring is the SPLADE dot product (Formal et al. 2021): for each query term, the postings
of the term add ``query weight × row weight`` to their rows (a ``bincount``, numpy only),
so only rows sharing a term with the query are touched. Rows are masked before top-k, and
chunk scores become document scores by their maximum, as for dense search.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from embedstack._typing import IntArray
from embedstack.encoders.splade import SparseTextEncoder, SparseVectors
from embedstack.errors import DimensionMismatch, IndexCorrupt, InvalidInput, ModelMismatch
from embedstack.index.dense import segment_name
from embedstack.index.fields.base import DocHits, aggregate, empty_hits
from embedstack.index.manifest import fsync_dir, save_npy

__all__ = [
    "DIR",
    "SparseSegment",
    "check_encoder",
    "load_segment",
    "manifest_entry",
    "merge_rows",
    "no_store",
    "resolve_encoder",
    "search_docs",
    "segment_files",
    "validate",
    "write_rows",
    "write_segment",
]

DIR = "sparse"
_PARTS = ("terms", "rows", "weights")


@dataclass
class SparseSegment:
    """The postings of one segment (memory-mapped).

    Attributes:
        id: segment number (shared with the dense segment).
        n_rows: chunk rows in the segment.
        terms: ``(vocab + 1,)`` int64 offsets of each term's postings.
        rows: ``(nnz,)`` int32 rows, ascending within a term.
        weights: ``(nnz,)`` float32 weights.
    """

    id: int
    n_rows: int
    terms: np.ndarray
    rows: np.ndarray
    weights: np.ndarray

    def scores(self, term_ids: np.ndarray, term_weights: np.ndarray) -> np.ndarray:
        """``(n_rows,)`` float64 dot products of one query with every row."""
        starts = np.asarray(self.terms[term_ids], dtype=np.int64)
        lengths = np.asarray(self.terms[term_ids + 1], dtype=np.int64) - starts
        total = int(lengths.sum())
        if total == 0:
            return np.zeros(self.n_rows, dtype=np.float64)
        shift = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
        postings = np.arange(total, dtype=np.int64) + shift
        contrib = np.repeat(term_weights.astype(np.float64), lengths) * self.weights[postings]
        return np.bincount(self.rows[postings], weights=contrib, minlength=self.n_rows)


def segment_files(segment: int) -> list[str]:
    """File names of sparse segment ``segment``."""
    name = segment_name(segment)
    return [f"{name}.{part}.npy" for part in _PARTS]


def _invert(
    row_ids: np.ndarray, term_ids: np.ndarray, weights: np.ndarray, vocab: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    order = np.lexsort((row_ids, term_ids))  # by term, then row
    terms = np.zeros(vocab + 1, dtype=np.int64)
    np.cumsum(np.bincount(term_ids, minlength=vocab), out=terms[1:])
    return terms, row_ids[order].astype(np.int32), weights[order].astype(np.float32)


def _write(
    root: Path, segment: int, n_rows: int, arrays: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> SparseSegment:
    root.mkdir(exist_ok=True)
    for name, arr in zip(segment_files(segment), arrays, strict=True):
        save_npy(root / name, arr)
    fsync_dir(root)
    return SparseSegment(segment, n_rows, *arrays)


def write_segment(root: Path, segment: int, vectors: SparseVectors) -> SparseSegment:
    """Invert one batch's chunk vectors (row ``i`` = chunk row ``i``) and write them durably.

    The files are not registered anywhere: the SQLite commit of the batch registers them.
    """
    row_ids = np.repeat(np.arange(len(vectors), dtype=np.int64), np.diff(vectors.indptr))
    arrays = _invert(row_ids, vectors.indices.astype(np.int64), vectors.values, vectors.vocab_size)
    return _write(root, segment, len(vectors), arrays)


def write_rows(root: Path, seg: SparseSegment, mask: np.ndarray, new_id: int) -> list[str]:
    """Compaction: write the rows selected by ``mask`` as segment ``new_id``, renumbered
    like the dense rows (the k-th kept row becomes row k)."""
    return merge_rows(root, [(seg, mask)], new_id)


def merge_rows(
    root: Path, parts: Sequence[tuple[SparseSegment, np.ndarray]], new_id: int
) -> list[str]:
    """Merging: the rows of each segment of ``parts`` selected by its mask, one segment
    after the other and renumbered from 0 like the dense rows, as segment ``new_id``
    (weights copied unchanged)."""
    rows_out, terms_out, weights_out = [], [], []
    vocab, shift = 0, 0
    for seg, mask in parts:
        mask = np.asarray(mask, dtype=np.bool_)
        vocab = len(seg.terms) - 1
        term_ids = np.repeat(np.arange(vocab, dtype=np.int64), np.diff(np.asarray(seg.terms)))
        rows = np.asarray(seg.rows, dtype=np.int64)
        keep = mask[rows]
        renumber = np.cumsum(mask) - 1 + shift
        rows_out.append(renumber[rows[keep]])
        terms_out.append(term_ids[keep])
        weights_out.append(np.asarray(seg.weights)[keep])
        shift += int(mask.sum())
    arrays = _invert(np.concatenate(rows_out), np.concatenate(terms_out),
                     np.concatenate(weights_out), vocab)  # fmt: skip
    _write(root, new_id, shift, arrays)
    return segment_files(new_id)


def _load(path: Path, dtype: type, length: int | None) -> np.ndarray:
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise IndexCorrupt(f"cannot read {path}: {exc}") from exc
    if arr.ndim != 1 or arr.dtype != np.dtype(dtype) or (length is not None and len(arr) != length):
        raise IndexCorrupt(
            f"{path} holds {arr.dtype}{arr.shape}, expected {np.dtype(dtype)}"
            f"({length if length is not None else 'n'},)"
        )
    return arr


def load_segment(root: Path, segment: int, n_rows: int, vocab: int) -> SparseSegment:
    """Memory-map a registered segment, checking dtypes and lengths.

    Raises:
        IndexCorrupt: a file is missing, unreadable, or of the wrong dtype or length.
    """
    names = segment_files(segment)
    terms = _load(root / names[0], np.int64, vocab + 1)
    nnz = int(terms[-1])
    return SparseSegment(
        segment,
        n_rows,
        terms,
        _load(root / names[1], np.int32, nnz),
        _load(root / names[2], np.float32, nnz),
    )


def validate(seg: SparseSegment, where: Path) -> None:
    """Full check (``Index.check``): offsets ascend, rows in range, weights finite > 0."""
    terms = np.asarray(seg.terms)
    rows = np.asarray(seg.rows)
    weights = np.asarray(seg.weights)
    ok = terms[0] == 0 and bool(np.all(np.diff(terms) >= 0))
    ok = ok and (not len(rows) or (int(rows.min()) >= 0 and int(rows.max()) < seg.n_rows))
    if not ok or not bool(np.all(np.isfinite(weights) & (weights > 0))):
        raise IndexCorrupt(f"{where}: sparse segment {seg.id} has invalid postings")


def search_docs(
    segments: list[SparseSegment],
    row_keys: list[IntArray],
    masks: list[np.ndarray],
    queries: SparseVectors,
    depth: int,
) -> list[DocHits]:
    """The ``depth`` best documents per query by max chunk dot product over allowed rows.

    Only rows with a positive score (sharing a term with the query) are candidates, so a
    query can return fewer than ``depth`` documents.
    """
    out: list[DocHits] = []
    for qi in range(len(queries)):
        q_ids, q_w = queries.row(qi)
        q_ids = np.asarray(q_ids, dtype=np.int64)
        parts: list[tuple[np.ndarray, ...]] = []
        for seg, keys, mask in zip(segments, row_keys, masks, strict=True):
            if not mask.any():
                continue
            s = seg.scores(q_ids, np.asarray(q_w))
            rows = np.flatnonzero((s > 0) & mask)
            parts.append((s[rows], keys[rows], np.full(len(rows), seg.id, np.int64), rows))
        if not parts:
            out.append(empty_hits())
            continue
        hits = aggregate(*(np.concatenate([p[j] for p in parts]) for j in range(4)))
        out.append(hits.head(depth))
    return out


# --- the encoder of an index -----------------------------------------------------------------


def resolve_encoder(encoder: object, options: dict[str, Any] | None) -> SparseTextEncoder:
    """A sparse encoder from a registry name / folder (built with ``options``) or as given.

    Raises:
        InvalidInput: not a name, path or sparse encoder.
    """
    if isinstance(encoder, str | os.PathLike):
        from embedstack.encoders.splade import SparseEncoder

        return SparseEncoder(os.fspath(encoder), **(options or {}))
    if isinstance(encoder, SparseTextEncoder):
        return encoder
    raise InvalidInput(
        f"sparse must be a model name, a folder or a SparseEncoder, got {type(encoder).__name__}"
    )


def manifest_entry(encoder: SparseTextEncoder, options: dict[str, Any] | None) -> dict[str, Any]:
    """The manifest's ``sparse`` record."""
    return {
        "name": encoder.name,
        "model_id": encoder.model_id,
        "vocab_size": int(encoder.vocab_size),
        "options": dict(options or {}),
    }


def check_encoder(encoder: SparseTextEncoder, record: dict[str, Any], path: Path) -> None:
    """Raise :class:`ModelMismatch` unless ``encoder`` produced the stored postings."""
    if int(encoder.vocab_size) != int(record["vocab_size"]):
        raise DimensionMismatch(
            f"{path} holds sparse postings over {record['vocab_size']} terms; {encoder.model_id}"
            f" has {encoder.vocab_size}"
        )
    if encoder.model_id != record["model_id"]:
        raise ModelMismatch(
            f"{path} holds sparse postings from {record['model_id']}, not {encoder.model_id}: "
            "open it with the same sparse model"
        )


def no_store(path: Path) -> InvalidInput:
    """The error for a sparse search on an index without sparse postings."""
    return InvalidInput(
        f"{path} has no sparse postings: create the index with "
        "Index.create(..., sparse='splade-tiny') to search with mode='sparse'"
    )
