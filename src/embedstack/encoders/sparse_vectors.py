"""Sparse term-weight vectors (CSR) and their dot products, in numpy.

:class:`SparseVectors` holds what :class:`~embedstack.encoders.splade.SparseEncoder`
produces: per text, the ``(term id, weight)`` pairs of its positive weights over the model's
vocabulary. :func:`score` is the dot product of queries and documents.

Example:
    >>> v = SparseVectors.from_dense(np.array([[0.0, 2.0, 1.0]], dtype=np.float32))
    >>> v.row(0)[0].tolist(), v.nnz
    ([1, 2], 2)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from embedstack._typing import FloatArray
from embedstack.errors import DimensionMismatch, InvalidInput

__all__ = ["SparseVectors", "score"]


@dataclass(frozen=True)
class SparseVectors:
    """Rows of term weights over a vocabulary, in CSR form.

    Attributes:
        indptr: ``(n + 1,)`` int64; row ``i`` is ``indices/values[indptr[i]:indptr[i+1]]``.
        indices: ``(nnz,)`` int32 term ids, ascending within a row.
        values: ``(nnz,)`` float32 weights, all ``> 0``.
        vocab_size: number of terms (columns).

    Raises:
        InvalidInput: inconsistent arrays.
    """

    indptr: np.ndarray
    indices: np.ndarray
    values: np.ndarray
    vocab_size: int

    def __post_init__(self) -> None:
        p, i, v = self.indptr, self.indices, self.values
        if p.ndim != 1 or len(p) < 1 or int(p[0]) != 0 or int(p[-1]) != len(i):
            raise InvalidInput("SparseVectors: indptr must start at 0 and end at nnz")
        if len(i) != len(v) or (len(p) > 1 and bool(np.any(np.diff(p) < 0))):
            raise InvalidInput("SparseVectors: indices and values must align with indptr")
        if len(i) and (int(i.min()) < 0 or int(i.max()) >= self.vocab_size):
            raise InvalidInput(f"SparseVectors: term ids must be in [0, {self.vocab_size})")

    def __len__(self) -> int:
        return len(self.indptr) - 1

    @property
    def nnz(self) -> int:
        """Stored (non-zero) weights in all rows."""
        return len(self.indices)

    def row(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """``(term ids, weights)`` of row ``i``."""
        a, b = int(self.indptr[i]), int(self.indptr[i + 1])
        return self.indices[a:b], self.values[a:b]

    def to_dense(self) -> FloatArray:
        """``(n, vocab_size)`` float32 (for small inputs: tests and inspection)."""
        out = np.zeros((len(self), self.vocab_size), dtype=np.float32)
        rows = np.repeat(np.arange(len(self)), np.diff(self.indptr))
        out[rows, self.indices] = self.values
        return out

    def to_dicts(self, tokenizer: Any) -> list[dict[str, float]]:
        """``[{token: weight}]`` per row, heaviest first; ``tokenizer`` maps ids to tokens
        (``id_to_token``, e.g. :attr:`SparseEncoder.tokenizer`)."""
        out = []
        for i in range(len(self)):
            ids, w = self.row(i)
            order = np.argsort(-w, kind="stable")
            out.append({str(tokenizer.id_to_token(int(ids[j]))): float(w[j]) for j in order})
        return out

    def take(self, rows: Iterable[int] | np.ndarray) -> SparseVectors:
        """The selected rows, in the given order."""
        sel = np.asarray(list(rows) if not isinstance(rows, np.ndarray) else rows, np.int64)
        starts, ends = self.indptr[sel], self.indptr[sel + 1]
        lengths = ends - starts
        indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        gather = _ranges(starts, lengths)
        return SparseVectors(indptr, self.indices[gather], self.values[gather], self.vocab_size)

    @staticmethod
    def concat(parts: list[SparseVectors], vocab_size: int) -> SparseVectors:
        """Rows of ``parts`` one after another (all over ``vocab_size`` terms)."""
        if any(p.vocab_size != vocab_size for p in parts):
            raise DimensionMismatch("cannot concatenate SparseVectors of different vocabularies")
        if not parts:
            return SparseVectors.from_dense(np.zeros((0, vocab_size), np.float32))
        offsets = np.cumsum([0] + [p.nnz for p in parts[:-1]])
        indptr = np.concatenate(
            [[0]] + [p.indptr[1:] + off for p, off in zip(parts, offsets, strict=True)]
        ).astype(np.int64)
        return SparseVectors(
            indptr,
            np.concatenate([p.indices for p in parts]),
            np.concatenate([p.values for p in parts]),
            vocab_size,
        )

    @classmethod
    def from_dense(cls, weights: np.ndarray, top_k: int | None = None) -> SparseVectors:
        """CSR of the positive entries of ``(n, vocab)`` ``weights``; with ``top_k``, only
        the ``top_k`` largest of each row (ties broken towards lower term ids)."""
        w = np.asarray(weights, dtype=np.float32)
        if w.ndim != 2:
            raise InvalidInput(f"weights must be (n, vocab), got shape {w.shape}")
        rows, cols = np.nonzero(w > 0)  # row-major: term ids ascend within a row
        vals = w[rows, cols]
        if top_k is not None:
            order = np.lexsort((cols, -vals, rows))  # by row, heaviest first, then term id
            starts = np.searchsorted(rows[order], rows[order], side="left")
            keep = np.sort(order[np.arange(len(order)) - starts < top_k])
            rows, cols, vals = rows[keep], cols[keep], vals[keep]
        indptr = np.zeros(len(w) + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=len(w)), out=indptr[1:])
        return cls(indptr, cols.astype(np.int32), vals.astype(np.float32), w.shape[1])


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + n)`` for each ``(s, n)``, vectorised."""
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    shift = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    return (np.arange(total, dtype=np.int64) + shift).astype(np.int64)


def score(queries: SparseVectors, documents: SparseVectors) -> FloatArray:
    """Dot products of every query with every document: ``(n_queries, n_docs)`` float32.

    Raises:
        DimensionMismatch: the two sides use different vocabularies.
    """
    if queries.vocab_size != documents.vocab_size:
        raise DimensionMismatch(
            f"queries have {queries.vocab_size} terms, documents {documents.vocab_size}"
        )
    out = np.zeros((len(queries), len(documents)), dtype=np.float32)
    if not len(documents) or not documents.nnz:
        return out
    doc_rows = np.repeat(np.arange(len(documents)), np.diff(documents.indptr))
    for q0 in range(0, len(queries), 64):
        q = queries.take(np.arange(q0, min(q0 + 64, len(queries)))).to_dense()
        contrib = q[:, documents.indices].astype(np.float64) * documents.values
        for j in range(len(q)):
            out[q0 + j] = np.bincount(doc_rows, weights=contrib[j], minlength=len(documents))
    return out
