"""Float vectors: L2 normalization, Matryoshka truncation, all-pairs similarity, exact top-k.

Matryoshka truncation follows Kusupati et al. 2022.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from embedstack._typing import FloatArray, IntArray, Metric
from embedstack.errors import DimensionMismatch, InvalidInput
from embedstack.vectors._common import (
    DOC_CHUNK,
    EPS,
    QUERY_CHUNK,
    as_float,
    as_matrix,
    check_dims,
    check_metric,
    chunked_topk,
    prepare,
    unit_rows,
)

__all__ = ["normalize", "pairwise", "topk", "truncate"]


def normalize(x: npt.ArrayLike, *, eps: float = EPS) -> FloatArray:
    """L2-normalize each row.

    Args:
        x: ``(dim,)`` or ``(n, dim)`` finite numbers.
        eps: Rows whose norm is below ``eps`` are divided by ``eps``, so zero rows stay zero.

    Returns:
        float32 array of ``x``'s shape whose non-zero rows have unit L2 norm.

    Raises:
        InvalidInput: ``x`` is not 1-D/2-D finite numbers, or ``eps`` is not positive.

    Example:
        >>> normalize([[3.0, 4.0], [0.0, 0.0]]).tolist()
        [[0.6000000238418579, 0.800000011920929], [0.0, 0.0]]
    """
    if not eps > 0:
        raise InvalidInput(f"eps must be positive, got {eps!r}")
    return unit_rows(as_float(x, "x"), eps)


def truncate(v: npt.ArrayLike, dim: int, *, renormalize: bool = True) -> FloatArray:
    """Matryoshka truncation: keep the first ``dim`` coordinates (Kusupati et al. 2022).

    Matryoshka-trained encoders pack the most information into the leading coordinates, so a
    prefix is itself a usable, smaller embedding once re-normalized.

    Args:
        v: ``(D,)`` or ``(n, D)`` finite numbers.
        dim: Coordinates to keep, ``1 <= dim <= D``.
        renormalize: L2-normalize the truncated rows (zero rows stay zero).

    Returns:
        float32 ``(dim,)`` or ``(n, dim)``.

    Raises:
        DimensionMismatch: ``dim`` outside ``[1, D]``.
        InvalidInput: ``v`` is not 1-D/2-D finite numbers, or ``dim`` is not an integer.

    Example:
        >>> truncate([3.0, 4.0, 12.0], 2).tolist()
        [0.6000000238418579, 0.800000011920929]
    """
    arr = as_float(v, "v")
    if isinstance(dim, bool) or not isinstance(dim, int | np.integer):
        raise InvalidInput(f"dim must be an integer, got {dim!r}")
    full = arr.shape[-1]
    if not 1 <= dim <= full:
        raise DimensionMismatch(f"dim must be between 1 and {full} (the vectors' size), got {dim}")
    out = arr[..., :dim]
    return unit_rows(out) if renormalize else out.copy()


def _scores(q: FloatArray, d: FloatArray, metric: str) -> FloatArray:
    """Scores of prepared (cosine: unit) rows, higher is more similar, ``(nq, nd)`` float32."""
    if metric in ("cosine", "dot"):
        return np.asarray(q @ d.T, dtype=np.float32)
    if metric == "euclidean":
        sq = np.einsum("ij,ij->i", q, q)[:, None] + np.einsum("ij,ij->i", d, d)[None, :]
        sq -= 2 * (q @ d.T)
        return -np.sqrt(np.maximum(sq, 0, out=sq))
    acc = np.zeros((q.shape[0], d.shape[0]), dtype=np.float32)  # manhattan, one dim at a time
    for j in range(q.shape[1]):
        acc += np.abs(q[:, j, None] - d[None, :, j])
    return -acc


def pairwise(a: npt.ArrayLike, b: npt.ArrayLike, metric: Metric = "cosine") -> FloatArray:
    """All-pairs similarity, higher is more similar.

    ``cosine`` and ``dot`` are what they say; ``euclidean`` and ``manhattan`` return the
    *negated* distance. Euclidean uses the expanded form ``|a|² + |b|² − 2a·b`` (float32, so
    distances between near-duplicates carry rounding noise).

    Args:
        a: ``(na, dim)`` or ``(dim,)`` (one row) finite numbers.
        b: ``(nb, dim)`` or ``(dim,)``.
        metric: One of ``cosine``, ``dot``, ``euclidean``, ``manhattan``.

    Returns:
        ``(na, nb)`` float32 scores.

    Raises:
        DimensionMismatch: ``a`` and ``b`` differ in dimension.
        InvalidInput: Unknown metric, non-numeric, wrong rank, or non-finite input.

    Example:
        >>> pairwise([[1.0, 0.0]], [[0.0, 2.0], [3.0, 4.0]], "euclidean").tolist()
        [[-2.2360680103302, -4.4721360206604]]
    """
    check_metric(metric)
    qa, qb = as_matrix(a, "a"), as_matrix(b, "b")
    check_dims(qa, qb, "a", "b")
    return _scores(prepare(qa, metric), prepare(qb, metric), metric)


def topk(
    queries: npt.ArrayLike,
    docs: npt.ArrayLike,
    k: int,
    *,
    metric: Metric = "cosine",
    chunk_size: int = DOC_CHUNK,
    query_chunk_size: int = QUERY_CHUNK,
) -> tuple[FloatArray, IntArray]:
    """Exact top-k documents per query, chunked so memory stays bounded.

    Scores come from :func:`pairwise` semantics (higher is better; cosine normalizes both
    sides). Each ``(query_chunk_size, chunk_size)`` block keeps its exact top-k and is merged
    into the running best, so the result equals brute force for any chunk sizes.

    Args:
        queries: ``(nq, dim)`` or ``(dim,)`` (one row) finite numbers.
        docs: ``(n_docs, dim)`` finite numbers; ``(0, dim)`` is an empty corpus.
        k: Results per query, ``>= 1``; more than ``n_docs`` returns all documents.
        metric: One of ``cosine``, ``dot``, ``euclidean``, ``manhattan``.
        chunk_size: Documents scored at once.
        query_chunk_size: Queries scored at once.

    Returns:
        ``(scores, indices)``: ``(nq, min(k, n_docs))`` float32 sorted by descending score,
        ties broken by the lower document index, and the matching int64 document indices.

    Raises:
        DimensionMismatch: ``queries`` and ``docs`` differ in dimension.
        InvalidInput: ``k`` or a chunk size below 1, unknown metric, or bad arrays.

    Example:
        >>> scores, idx = topk([[1.0, 0.0]], [[0.0, 1.0], [1.0, 0.0], [1.0, 0.0]], 2)
        >>> idx.tolist(), scores.tolist()
        ([[1, 2]], [[1.0, 1.0]])
    """
    check_metric(metric)
    q, d = as_matrix(queries, "queries"), as_matrix(docs, "docs")
    check_dims(q, d, "queries", "docs")
    q = prepare(q, metric)

    def score(q0: int, q1: int, d0: int, d1: int) -> FloatArray:
        return _scores(q[q0:q1], prepare(d[d0:d1], metric), metric)

    return chunked_topk(q.shape[0], d.shape[0], k, score, chunk_size, query_chunk_size, np.float32)
