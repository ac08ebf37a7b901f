"""What the float, int8 and binary kernels share: input validation, unit rows, and the
chunked exact top-k that merges blocks of scores (ties to the lower document index).

Private to :mod:`embedstack.vectors`; import the public names from there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, get_args

import numpy as np
import numpy.typing as npt

from embedstack._typing import FloatArray, IntArray, Metric
from embedstack.errors import DimensionMismatch, InvalidInput

__all__ = [
    "DOC_CHUNK",
    "EPS",
    "INT8_METRICS",
    "METRICS",
    "QUERY_CHUNK",
    "as_codes",
    "as_float",
    "as_matrix",
    "check_dims",
    "check_metric",
    "check_positive",
    "chunked_topk",
    "prepare",
    "select_topk",
    "unit_rows",
]

METRICS: tuple[str, ...] = get_args(Metric)
INT8_METRICS = ("dot", "cosine")
DOC_CHUNK = 65536
QUERY_CHUNK = 1024
EPS = 1e-12

# ------------------------------------------------------------------------------ validation


def as_float(x: npt.ArrayLike, name: str) -> FloatArray:
    """``x`` as a finite 1-D or 2-D float32 array, or :class:`InvalidInput`."""
    try:
        arr = np.asarray(x)
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"{name} must be a rectangular array of numbers: {exc}") from exc
    if arr.dtype.kind not in "biuf":
        raise InvalidInput(f"{name} must hold real numbers, got dtype {arr.dtype}")
    if arr.ndim not in (1, 2):
        raise InvalidInput(f"{name} must be 1-D or 2-D, got shape {arr.shape}")
    with np.errstate(over="ignore"):
        out = arr.astype(np.float32, copy=False)
    if not np.isfinite(out).all():
        raise InvalidInput(f"{name} contains NaN, infinite, or beyond-float32 values")
    return out


def as_matrix(x: npt.ArrayLike, name: str) -> FloatArray:
    """``x`` validated as float32 of shape ``(n, dim)``; a 1-D input becomes one row."""
    return np.atleast_2d(as_float(x, name))


def as_codes(codes: npt.ArrayLike, name: str, dtype: type[np.integer[Any]]) -> Any:
    """``codes`` as a 2-D array of exactly ``dtype`` (int8 codes or uint8 packed bits)."""
    arr = np.atleast_2d(np.asarray(codes))
    if arr.dtype != dtype:
        raise InvalidInput(f"{name} must have dtype {np.dtype(dtype)}, got {arr.dtype}")
    if arr.ndim != 2:
        raise InvalidInput(f"{name} must be 1-D or 2-D, got shape {arr.shape}")
    return arr


def check_dims(a: np.ndarray, b: np.ndarray, a_name: str, b_name: str, unit: str = "") -> None:
    if a.shape[1] != b.shape[1]:
        raise DimensionMismatch(
            f"{a_name} have dimension {a.shape[1]}{unit} but {b_name} have {b.shape[1]}{unit}"
        )


def check_metric(metric: str, allowed: tuple[str, ...] = METRICS) -> None:
    if metric not in allowed:
        raise InvalidInput(f"unknown metric {metric!r}; choose one of: {', '.join(allowed)}")


def check_positive(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise InvalidInput(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


# ------------------------------------------------------------------------------ unit rows


def unit_rows(x: FloatArray, eps: float = EPS) -> FloatArray:
    x64 = x.astype(np.float64)
    norms = np.sqrt(np.sum(x64 * x64, axis=-1, keepdims=True))
    return (x64 / np.maximum(norms, eps)).astype(np.float32)


def prepare(x: FloatArray, metric: str) -> FloatArray:
    return unit_rows(x) if metric == "cosine" else x


# ------------------------------------------------------------------------------ exact top-k


def select_topk(s: np.ndarray, k: int) -> tuple[np.ndarray, IntArray]:
    """The exact top-``k`` columns of each row of ``s``, ties to the lower column, unsorted."""
    n = s.shape[1]
    if n <= k:
        return s, np.broadcast_to(np.arange(n, dtype=np.int64), s.shape)
    # np.partition finds each row's k-th largest value t; a plain argpartition would pick an
    # arbitrary subset of the values tied at t, so ties at t are resolved by column order.
    t = np.partition(s, n - k, axis=1)[:, n - k, None]
    take = s > t
    need = k - take.sum(axis=1)
    eq = s == t
    ambiguous = np.flatnonzero(eq.sum(axis=1) > need)
    take |= eq
    if ambiguous.size:
        eq_a = eq[ambiguous]
        first = np.cumsum(eq_a, axis=1, dtype=np.int64) <= need[ambiguous, None]
        take[ambiguous] = (s[ambiguous] > t[ambiguous]) | (eq_a & first)
    cols = np.nonzero(take)[1].reshape(-1, k).astype(np.int64)
    return np.take_along_axis(s, cols, axis=1), cols


def chunked_topk(
    n_queries: int,
    n_docs: int,
    k: int,
    score: Callable[[int, int, int, int], np.ndarray],
    chunk_size: int,
    query_chunk_size: int,
    dtype: type[np.number[Any]],
) -> tuple[Any, IntArray]:
    """Top-k of ``score(q0, q1, d0, d1)`` blocks, merged across doc chunks per query chunk."""
    k = check_positive(k, "k")
    chunk_size = check_positive(chunk_size, "chunk_size")
    query_chunk_size = check_positive(query_chunk_size, "query_chunk_size")
    kk = min(k, n_docs)
    scores = np.empty((n_queries, kk), dtype=dtype)
    indices = np.empty((n_queries, kk), dtype=np.int64)
    if kk == 0:
        return scores, indices
    for q0 in range(0, n_queries, query_chunk_size):
        q1 = min(q0 + query_chunk_size, n_queries)
        best_s = np.empty((q1 - q0, 0), dtype=dtype)
        best_i = np.empty((q1 - q0, 0), dtype=np.int64)
        for d0 in range(0, n_docs, chunk_size):
            d1 = min(d0 + chunk_size, n_docs)
            s, cols = select_topk(np.asarray(score(q0, q1, d0, d1), dtype=dtype), kk)
            all_s = np.concatenate([best_s, s], axis=1)
            all_i = np.concatenate([best_i, cols + d0], axis=1)
            order = np.lexsort((all_i, -all_s))[:, :kk]
            best_s = np.take_along_axis(all_s, order, axis=1)
            best_i = np.take_along_axis(all_i, order, axis=1)
        scores[q0:q1], indices[q0:q1] = best_s, best_i
    return scores, indices
