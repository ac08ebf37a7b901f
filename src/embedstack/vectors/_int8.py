"""int8 scalar quantization: per-dimension calibrated ranges, codes, and float-query
scoring and top-k over the codes without decoding the corpus (Shakir, Aarsen & Lee 2024).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from embedstack._typing import FloatArray, Int8Array, IntArray
from embedstack.errors import DimensionMismatch, InvalidInput
from embedstack.vectors._common import (
    DOC_CHUNK,
    EPS,
    INT8_METRICS,
    QUERY_CHUNK,
    as_codes,
    as_float,
    as_matrix,
    check_dims,
    check_metric,
    chunked_topk,
    prepare,
)

__all__ = [
    "Int8Calibration",
    "calibrate_int8",
    "dequantize_int8",
    "int8_scores",
    "int8_topk",
    "quantize_int8",
]


@dataclass(frozen=True, eq=False)
class Int8Calibration:
    """Per-dimension ranges that int8 codes map onto: ``[low, high]`` ↔ ``[-128, 127]``.

    Attributes:
        low: ``(dim,)`` float32, read-only.
        high: ``(dim,)`` float32, read-only, ``high >= low``; ``high == low`` is allowed
            (a constant dimension, every code decodes to ``low``).
    """

    low: FloatArray
    high: FloatArray

    def __post_init__(self) -> None:
        low, high = as_float(self.low, "low").copy(), as_float(self.high, "high").copy()
        if low.ndim != 1 or low.shape != high.shape:
            raise DimensionMismatch(
                f"low and high must be 1-D of equal length, got {low.shape} and {high.shape}"
            )
        if np.any(low > high):
            raise InvalidInput("calibration needs low <= high in every dimension")
        for name, arr in (("low", low), ("high", high)):
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)

    @property
    def dim(self) -> int:
        """Number of dimensions."""
        return int(self.low.shape[0])

    def affine(self) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """``(scale, offset)``, float64 ``(dim,)``, with ``value = offset + scale * code``."""
        low = self.low.astype(np.float64)
        scale = (self.high.astype(np.float64) - low) / 255.0
        return scale, low + 128.0 * scale

    def to_dict(self) -> dict[str, list[float]]:
        """JSON-serialisable form; float32 values survive :meth:`from_dict` exactly."""
        return {"low": self.low.tolist(), "high": self.high.tolist()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Int8Calibration:
        """Inverse of :meth:`to_dict`; raises :class:`InvalidInput` on missing keys."""
        if not isinstance(data, Mapping) or not {"low", "high"} <= data.keys():
            raise InvalidInput("an int8 calibration needs a mapping with 'low' and 'high' lists")
        return cls(low=np.asarray(data["low"]), high=np.asarray(data["high"]))


def calibrate_int8(vectors: npt.ArrayLike, *, quantile: float | None = None) -> Int8Calibration:
    """Per-dimension int8 ranges from sample vectors (Shakir, Aarsen & Lee 2024).

    Args:
        vectors: ``(n, dim)`` finite numbers, ``n >= 1`` (a representative sample).
        quantile: None for each dimension's min/max, or ``q`` in ``[0, 0.5)`` for the
            ``[q, 1 - q]`` quantiles, which clips outliers so the 256 levels are not wasted.

    Returns:
        The :class:`Int8Calibration`.

    Raises:
        InvalidInput: No vectors, bad values, or ``quantile`` outside ``[0, 0.5)``.
    """
    x = as_matrix(vectors, "vectors")
    if x.shape[0] == 0:
        raise InvalidInput("calibrate_int8 needs at least one vector")
    if quantile is None:
        return Int8Calibration(low=x.min(axis=0), high=x.max(axis=0))
    if not isinstance(quantile, float | int) or not 0 <= quantile < 0.5:
        raise InvalidInput(f"quantile must be a number in [0, 0.5), got {quantile!r}")
    low, high = np.quantile(x.astype(np.float64), [quantile, 1.0 - quantile], axis=0)
    return Int8Calibration(low=low, high=np.maximum(high, low))


def check_calibration(n_dims: int, calibration: Int8Calibration, name: str) -> None:
    if not isinstance(calibration, Int8Calibration):
        raise InvalidInput(f"calibration must be an Int8Calibration, got {type(calibration)}")
    if n_dims != calibration.dim:
        raise DimensionMismatch(
            f"{name} have dimension {n_dims} but the calibration has {calibration.dim}"
        )


def quantize_int8(v: npt.ArrayLike, calibration: Int8Calibration) -> Int8Array:
    """Map each dimension's ``[low, high]`` linearly onto ``[-128, 127]``, clipping outside.

    Inside the range, ``dequantize_int8`` recovers each value within half a step,
    ``(high - low) / 255 / 2``. Constant dimensions (``low == high``) get code -128.

    Args:
        v: ``(n, dim)`` or ``(dim,)`` (one row) finite numbers.
        calibration: From :func:`calibrate_int8`.

    Returns:
        ``(n, dim)`` int8 codes.

    Raises:
        DimensionMismatch: ``dim`` differs from the calibration's.
    """
    x = as_matrix(v, "v")
    check_calibration(x.shape[1], calibration, "vectors")
    scale, _ = calibration.affine()
    steps = (x - calibration.low.astype(np.float64)) / np.where(scale > 0, scale, 1.0)
    codes = np.where(scale > 0, np.clip(np.rint(steps), 0, 255) - 128, -128)
    return codes.astype(np.int8)


def dequantize_int8(codes: npt.ArrayLike, calibration: Int8Calibration) -> FloatArray:
    """``(n, dim)`` float32 ``offset + scale * code``, the inverse of :func:`quantize_int8`."""
    c = as_codes(codes, "codes", np.int8)
    check_calibration(c.shape[1], calibration, "codes")
    scale, offset = calibration.affine()
    return (offset + scale * c).astype(np.float32)


def _int8_block(q: FloatArray, codes: Int8Array, cal: Int8Calibration, cosine: bool) -> FloatArray:
    """``q · dequant(codes)`` as ``(q * scale) · codes + q · offset``, ``(nq, nc)`` float32."""
    scale, offset = cal.affine()
    s = (q * scale.astype(np.float32)) @ codes.astype(np.float32).T
    s += (q @ offset).astype(np.float32)[:, None]
    if cosine:  # decoded norms of this block only; zero documents score 0
        norms = np.linalg.norm(offset + scale * codes.astype(np.float64), axis=1)
        cos = s / np.maximum(norms, EPS)
        return np.clip(cos, -1.0, 1.0).astype(np.float32)
    return s


def _int8_inputs(
    queries: npt.ArrayLike, codes: npt.ArrayLike, calibration: Int8Calibration, metric: str
) -> tuple[FloatArray, Int8Array]:
    check_metric(metric, INT8_METRICS)
    q, c = as_matrix(queries, "queries"), as_codes(codes, "codes", np.int8)
    check_dims(q, c, "queries", "codes")
    check_calibration(c.shape[1], calibration, "codes")
    return prepare(q, metric), c


def int8_scores(
    queries: npt.ArrayLike,
    codes: npt.ArrayLike,
    calibration: Int8Calibration,
    metric: Literal["dot", "cosine"] = "dot",
) -> FloatArray:
    """Float queries against int8 documents without decoding the whole corpus.

    Uses ``q · (offset + scale ⊙ c) = (q ⊙ scale) · c + q · offset``, in document blocks of
    65 536 codes. ``cosine`` normalizes the queries and divides by each decoded document's
    norm floored at 1e-12 like :func:`normalize` (one block at a time), so a decoded zero
    document scores 0; one whose norm is tiny next to the calibration range carries float32
    cancellation noise (clipped to ``[-1, 1]``).

    Args:
        queries: ``(nq, dim)`` or ``(dim,)`` finite numbers.
        codes: ``(nd, dim)`` int8 from :func:`quantize_int8`.
        calibration: The calibration the codes were made with.
        metric: ``dot`` or ``cosine``.

    Returns:
        ``(nq, nd)`` float32, equal (to rounding) to ``pairwise(queries, dequantize_int8(codes,
        calibration), metric)``.

    Raises:
        DimensionMismatch: Dimensions of queries, codes and calibration disagree.
        InvalidInput: Unknown metric or bad arrays.
    """
    q, c = _int8_inputs(queries, codes, calibration, metric)
    out = np.empty((q.shape[0], c.shape[0]), dtype=np.float32)
    for d0 in range(0, c.shape[0], DOC_CHUNK):
        out[:, d0 : d0 + DOC_CHUNK] = _int8_block(
            q, c[d0 : d0 + DOC_CHUNK], calibration, metric == "cosine"
        )
    return out


def int8_topk(
    queries: npt.ArrayLike,
    codes: npt.ArrayLike,
    calibration: Int8Calibration,
    k: int,
    *,
    metric: Literal["dot", "cosine"] = "dot",
    chunk_size: int = DOC_CHUNK,
    query_chunk_size: int = QUERY_CHUNK,
) -> tuple[FloatArray, IntArray]:
    """Exact top-k of :func:`int8_scores`, chunked and tie-broken like :func:`topk`.

    Returns:
        ``(scores, indices)``: ``(nq, min(k, nd))`` float32 descending and int64.
    """
    q, c = _int8_inputs(queries, codes, calibration, metric)

    def score(q0: int, q1: int, d0: int, d1: int) -> FloatArray:
        return _int8_block(q[q0:q1], c[d0:d1], calibration, metric == "cosine")

    return chunked_topk(q.shape[0], c.shape[0], k, score, chunk_size, query_chunk_size, np.float32)
