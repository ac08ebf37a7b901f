"""Vector math for embedding retrieval: normalization, similarity, exact top-k, quantization.

Pure numpy, no I/O. One convention holds everywhere: **a higher score is more similar**, so
distances (euclidean, manhattan) come back negated; only :func:`hamming_distance` and
:func:`binary_topk` return plain distances (lower is more similar), as their names say.
Every top-k returns ``(scores, indices)`` sorted best first, ties broken by the lower document
index, and is chunked over documents and queries so memory stays bounded by the chunk sizes.

Matryoshka truncation follows Kusupati et al. 2022; int8 and binary quantization with
rescoring follow Yamada et al. 2021 and Shakir, Aarsen & Lee 2024 (Hugging Face blog).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np
import numpy.typing as npt

from embedstack._typing import FloatArray, Int8Array, IntArray, Metric, UInt8Array
from embedstack.errors import DimensionMismatch, InvalidInput

__all__ = [
    "Int8Calibration",
    "binary_search_rescore",
    "binary_topk",
    "calibrate_int8",
    "dequantize_int8",
    "hamming_distance",
    "int8_scores",
    "int8_topk",
    "normalize",
    "pairwise",
    "quantize_binary",
    "quantize_int8",
    "topk",
    "truncate",
    "unpack_binary",
]

_METRICS: tuple[str, ...] = get_args(Metric)
_INT8_METRICS = ("dot", "cosine")
_DOC_CHUNK = 65536
_QUERY_CHUNK = 1024
_EPS = 1e-12

# ------------------------------------------------------------------------------ validation


def _as_float(x: npt.ArrayLike, name: str) -> FloatArray:
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


def _as_matrix(x: npt.ArrayLike, name: str) -> FloatArray:
    """``x`` validated as float32 of shape ``(n, dim)``; a 1-D input becomes one row."""
    return np.atleast_2d(_as_float(x, name))


def _as_codes(codes: npt.ArrayLike, name: str, dtype: type[np.integer[Any]]) -> Any:
    """``codes`` as a 2-D array of exactly ``dtype`` (int8 codes or uint8 packed bits)."""
    arr = np.atleast_2d(np.asarray(codes))
    if arr.dtype != dtype:
        raise InvalidInput(f"{name} must have dtype {np.dtype(dtype)}, got {arr.dtype}")
    if arr.ndim != 2:
        raise InvalidInput(f"{name} must be 1-D or 2-D, got shape {arr.shape}")
    return arr


def _check_dims(a: np.ndarray, b: np.ndarray, a_name: str, b_name: str, unit: str = "") -> None:
    if a.shape[1] != b.shape[1]:
        raise DimensionMismatch(
            f"{a_name} have dimension {a.shape[1]}{unit} but {b_name} have {b.shape[1]}{unit}"
        )


def _check_metric(metric: str, allowed: tuple[str, ...] = _METRICS) -> None:
    if metric not in allowed:
        raise InvalidInput(f"unknown metric {metric!r}; choose one of: {', '.join(allowed)}")


def _check_positive(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise InvalidInput(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


# --------------------------------------------------------------------------- float vectors


def _unit(x: FloatArray, eps: float = _EPS) -> FloatArray:
    x64 = x.astype(np.float64)
    norms = np.sqrt(np.sum(x64 * x64, axis=-1, keepdims=True))
    return (x64 / np.maximum(norms, eps)).astype(np.float32)


def normalize(x: npt.ArrayLike, *, eps: float = _EPS) -> FloatArray:
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
    return _unit(_as_float(x, "x"), eps)


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
    arr = _as_float(v, "v")
    if isinstance(dim, bool) or not isinstance(dim, int | np.integer):
        raise InvalidInput(f"dim must be an integer, got {dim!r}")
    full = arr.shape[-1]
    if not 1 <= dim <= full:
        raise DimensionMismatch(f"dim must be between 1 and {full} (the vectors' size), got {dim}")
    out = arr[..., :dim]
    return _unit(out) if renormalize else out.copy()


def _prepare(x: FloatArray, metric: str) -> FloatArray:
    return _unit(x) if metric == "cosine" else x


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
    _check_metric(metric)
    qa, qb = _as_matrix(a, "a"), _as_matrix(b, "b")
    _check_dims(qa, qb, "a", "b")
    return _scores(_prepare(qa, metric), _prepare(qb, metric), metric)


# ------------------------------------------------------------------------------ exact top-k


def _select(s: np.ndarray, k: int) -> tuple[np.ndarray, IntArray]:
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


def _chunked_topk(
    n_queries: int,
    n_docs: int,
    k: int,
    score: Callable[[int, int, int, int], np.ndarray],
    chunk_size: int,
    query_chunk_size: int,
    dtype: type[np.number[Any]],
) -> tuple[Any, IntArray]:
    """Top-k of ``score(q0, q1, d0, d1)`` blocks, merged across doc chunks per query chunk."""
    k = _check_positive(k, "k")
    chunk_size = _check_positive(chunk_size, "chunk_size")
    query_chunk_size = _check_positive(query_chunk_size, "query_chunk_size")
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
            s, cols = _select(np.asarray(score(q0, q1, d0, d1), dtype=dtype), kk)
            all_s = np.concatenate([best_s, s], axis=1)
            all_i = np.concatenate([best_i, cols + d0], axis=1)
            order = np.lexsort((all_i, -all_s))[:, :kk]
            best_s = np.take_along_axis(all_s, order, axis=1)
            best_i = np.take_along_axis(all_i, order, axis=1)
        scores[q0:q1], indices[q0:q1] = best_s, best_i
    return scores, indices


def topk(
    queries: npt.ArrayLike,
    docs: npt.ArrayLike,
    k: int,
    *,
    metric: Metric = "cosine",
    chunk_size: int = _DOC_CHUNK,
    query_chunk_size: int = _QUERY_CHUNK,
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
    _check_metric(metric)
    q, d = _as_matrix(queries, "queries"), _as_matrix(docs, "docs")
    _check_dims(q, d, "queries", "docs")
    q = _prepare(q, metric)

    def score(q0: int, q1: int, d0: int, d1: int) -> FloatArray:
        return _scores(q[q0:q1], _prepare(d[d0:d1], metric), metric)

    return _chunked_topk(q.shape[0], d.shape[0], k, score, chunk_size, query_chunk_size, np.float32)


# ---------------------------------------------------------------------- int8 quantization


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
        low, high = _as_float(self.low, "low").copy(), _as_float(self.high, "high").copy()
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
    x = _as_matrix(vectors, "vectors")
    if x.shape[0] == 0:
        raise InvalidInput("calibrate_int8 needs at least one vector")
    if quantile is None:
        return Int8Calibration(low=x.min(axis=0), high=x.max(axis=0))
    if not isinstance(quantile, float | int) or not 0 <= quantile < 0.5:
        raise InvalidInput(f"quantile must be a number in [0, 0.5), got {quantile!r}")
    low, high = np.quantile(x.astype(np.float64), [quantile, 1.0 - quantile], axis=0)
    return Int8Calibration(low=low, high=np.maximum(high, low))


def _check_calibration(n_dims: int, calibration: Int8Calibration, name: str) -> None:
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
    x = _as_matrix(v, "v")
    _check_calibration(x.shape[1], calibration, "vectors")
    scale, _ = calibration.affine()
    steps = (x - calibration.low.astype(np.float64)) / np.where(scale > 0, scale, 1.0)
    codes = np.where(scale > 0, np.clip(np.rint(steps), 0, 255) - 128, -128)
    return codes.astype(np.int8)


def dequantize_int8(codes: npt.ArrayLike, calibration: Int8Calibration) -> FloatArray:
    """``(n, dim)`` float32 ``offset + scale * code``, the inverse of :func:`quantize_int8`."""
    c = _as_codes(codes, "codes", np.int8)
    _check_calibration(c.shape[1], calibration, "codes")
    scale, offset = calibration.affine()
    return (offset + scale * c).astype(np.float32)


def _int8_block(q: FloatArray, codes: Int8Array, cal: Int8Calibration, cosine: bool) -> FloatArray:
    """``q · dequant(codes)`` as ``(q * scale) · codes + q · offset``, ``(nq, nc)`` float32."""
    scale, offset = cal.affine()
    s = (q * scale.astype(np.float32)) @ codes.astype(np.float32).T
    s += (q @ offset).astype(np.float32)[:, None]
    if cosine:  # decoded norms of this block only; zero documents score 0
        norms = np.linalg.norm(offset + scale * codes.astype(np.float64), axis=1)
        cos = s / np.maximum(norms, _EPS)
        return np.clip(cos, -1.0, 1.0).astype(np.float32)
    return s


def _int8_inputs(
    queries: npt.ArrayLike, codes: npt.ArrayLike, calibration: Int8Calibration, metric: str
) -> tuple[FloatArray, Int8Array]:
    _check_metric(metric, _INT8_METRICS)
    q, c = _as_matrix(queries, "queries"), _as_codes(codes, "codes", np.int8)
    _check_dims(q, c, "queries", "codes")
    _check_calibration(c.shape[1], calibration, "codes")
    return _prepare(q, metric), c


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
    for d0 in range(0, c.shape[0], _DOC_CHUNK):
        out[:, d0 : d0 + _DOC_CHUNK] = _int8_block(
            q, c[d0 : d0 + _DOC_CHUNK], calibration, metric == "cosine"
        )
    return out


def int8_topk(
    queries: npt.ArrayLike,
    codes: npt.ArrayLike,
    calibration: Int8Calibration,
    k: int,
    *,
    metric: Literal["dot", "cosine"] = "dot",
    chunk_size: int = _DOC_CHUNK,
    query_chunk_size: int = _QUERY_CHUNK,
) -> tuple[FloatArray, IntArray]:
    """Exact top-k of :func:`int8_scores`, chunked and tie-broken like :func:`topk`.

    Returns:
        ``(scores, indices)``: ``(nq, min(k, nd))`` float32 descending and int64.
    """
    q, c = _int8_inputs(queries, codes, calibration, metric)

    def score(q0: int, q1: int, d0: int, d1: int) -> FloatArray:
        return _int8_block(q[q0:q1], c[d0:d1], calibration, metric == "cosine")

    return _chunked_topk(q.shape[0], c.shape[0], k, score, chunk_size, query_chunk_size, np.float32)


# -------------------------------------------------------------------- binary quantization


def quantize_binary(v: npt.ArrayLike) -> UInt8Array:
    """Sign bits (``x > 0`` → 1), packed big-endian 8 per byte with ``np.packbits``.

    Returns:
        ``(n, ceil(dim / 8))`` uint8; padding bits are 0.
    """
    return np.packbits(_as_matrix(v, "v") > 0, axis=1)


def unpack_binary(bits: npt.ArrayLike, dim: int) -> FloatArray:
    """``(n, dim)`` float32 in ``{-1, +1}`` from :func:`quantize_binary` output."""
    b = _as_codes(bits, "bits", np.uint8)
    dim = _check_positive(dim, "dim")
    if b.shape[1] != -(-dim // 8):
        raise DimensionMismatch(
            f"{dim} dimensions pack into {-(-dim // 8)} bytes per row, bits have {b.shape[1]}"
        )
    return np.unpackbits(b, axis=1, count=dim).astype(np.float32) * 2 - 1


_SWAR = (0x5555555555555555, 0x3333333333333333, 0x0F0F0F0F0F0F0F0F, 0x0101010101010101)


def _popcount_swar(x: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """Bit count of each uint64 (for numpy < 2.0, which lacks ``np.bitwise_count``)."""
    m1, m2, m4, h01 = (np.uint64(c) for c in _SWAR)
    x = x - ((x >> np.uint64(1)) & m1)
    x = (x & m2) + ((x >> np.uint64(2)) & m2)
    x = (x + (x >> np.uint64(4))) & m4
    return (x * h01) >> np.uint64(56)


_popcount = getattr(np, "bitwise_count", _popcount_swar)


def _words(bits: UInt8Array) -> npt.NDArray[np.uint64]:
    """Packed bytes zero-padded to whole uint64 words, ``(n, ceil(nbytes / 8))``."""
    pad = -bits.shape[1] % 8
    if pad:
        bits = np.pad(bits, ((0, 0), (0, pad)))
    return np.ascontiguousarray(bits).view(np.uint64)


def _hamming(qw: npt.NDArray[np.uint64], dw: npt.NDArray[np.uint64]) -> IntArray:
    out = np.zeros((qw.shape[0], dw.shape[0]), dtype=np.int64)
    for j in range(qw.shape[1]):  # one word at a time keeps memory at (nq, nd)
        out += _popcount(qw[:, j, None] ^ dw[None, :, j])
    return out


def _bit_inputs(query_bits: npt.ArrayLike, doc_bits: npt.ArrayLike) -> tuple[Any, Any]:
    qb = _as_codes(query_bits, "query_bits", np.uint8)
    db = _as_codes(doc_bits, "doc_bits", np.uint8)
    _check_dims(qb, db, "query_bits", "doc_bits", unit=" bytes")
    return _words(qb), _words(db)


def hamming_distance(query_bits: npt.ArrayLike, doc_bits: npt.ArrayLike) -> IntArray:
    """``(nq, nd)`` int64 count of differing bits (XOR then popcount)."""
    return _hamming(*_bit_inputs(query_bits, doc_bits))


def binary_topk(
    query_bits: npt.ArrayLike,
    doc_bits: npt.ArrayLike,
    k: int,
    *,
    chunk_size: int = _DOC_CHUNK,
    query_chunk_size: int = _QUERY_CHUNK,
) -> tuple[IntArray, IntArray]:
    """The ``k`` documents nearest in Hamming distance, chunked like :func:`topk`.

    Returns:
        ``(distances, indices)``: int64 ``(nq, min(k, nd))``, distances **ascending** (plain
        distances, not negated), ties broken by the lower document index.
    """
    qw, dw = _bit_inputs(query_bits, doc_bits)

    def score(q0: int, q1: int, d0: int, d1: int) -> IntArray:
        return -_hamming(qw[q0:q1], dw[d0:d1])

    neg, idx = _chunked_topk(
        qw.shape[0], dw.shape[0], k, score, chunk_size, query_chunk_size, np.int64
    )
    return -neg, idx


Rescore = npt.ArrayLike | tuple[npt.ArrayLike, Int8Calibration] | None


def _rescorer(
    rescore: Rescore, doc_bits: UInt8Array, dim: int
) -> Callable[[FloatArray, IntArray], FloatArray]:
    """A function ``(queries (m, dim), candidates (m, c)) -> (m, c)`` float32 dot scores."""
    n = doc_bits.shape[0]
    if isinstance(rescore, tuple) and len(rescore) == 2 and isinstance(rescore[1], Int8Calibration):
        cal = rescore[1]
        codes = _as_codes(rescore[0], "rescore codes", np.int8)
        _check_calibration(codes.shape[1], cal, "rescore codes")
        scale, offset = cal.affine()
        docs, shift = codes, (scale.astype(np.float32), offset)
    elif rescore is None:
        docs, shift = None, None
    else:
        docs, shift = _as_matrix(rescore, "rescore"), None
    if docs is not None and docs.shape != (n, dim):
        raise DimensionMismatch(f"rescore vectors have shape {docs.shape}, expected {(n, dim)}")

    def score(q: FloatArray, cand: IntArray) -> FloatArray:
        if docs is None:
            flat = doc_bits[cand.ravel()]
            gathered = unpack_binary(flat, dim).reshape(*cand.shape, dim)
        else:
            gathered = docs[cand].astype(np.float32, copy=False)
        if shift is None:
            return np.einsum("qd,qcd->qc", q, gathered)
        s = np.einsum("qd,qcd->qc", q * shift[0], gathered)
        return s + (q @ shift[1]).astype(np.float32)[:, None]

    return score


def binary_search_rescore(
    queries: npt.ArrayLike,
    doc_bits: npt.ArrayLike,
    k: int,
    *,
    rescore: Rescore = None,
    candidates: int | None = None,
    rescore_multiplier: int = 4,
    query_chunk_size: int = 256,
) -> tuple[FloatArray, IntArray]:
    """Binary search, then rescoring of the candidates with the float query.

    Hamming search over sign bits retrieves ``candidates`` (default ``k * rescore_multiplier``)
    per query; only those are rescored by dot product of the *float* query with better document
    vectors, which recovers most of the float ranking quality at a fraction of the memory
    (Yamada et al. 2021, "Efficient Passage Retrieval with Hashing"; Shakir, Aarsen & Lee 2024,
    "Binary and Scalar Embedding Quantization", Hugging Face blog). Use normalized vectors for
    cosine.

    Args:
        queries: ``(nq, dim)`` or ``(dim,)`` float queries.
        doc_bits: ``(nd, ceil(dim / 8))`` uint8 from :func:`quantize_binary`.
        k: Final results per query, ``>= 1``.
        rescore: The document vectors to rescore with: ``(nd, dim)`` floats, a tuple
            ``(codes, calibration)`` of int8 codes, or None for the ±1 unpacked bits.
        candidates: Hamming candidates per query, ``>= k``; overrides the multiplier.
        rescore_multiplier: Candidates per result when ``candidates`` is None.
        query_chunk_size: Queries rescored at once (memory ``chunk * candidates * dim``).

    Returns:
        ``(scores, indices)``: ``(nq, min(k, nd))`` float32 dot scores descending, ties to the
        lower index, and int64 indices into the original documents.

    Raises:
        DimensionMismatch: Queries, bits, and rescore vectors disagree in dimension or count.
        InvalidInput: ``k``, ``candidates`` or the multiplier invalid, or bad arrays.
    """
    q = _as_matrix(queries, "queries")
    db = _as_codes(doc_bits, "doc_bits", np.uint8)
    dim, k = q.shape[1], _check_positive(k, "k")
    if db.shape[1] != -(-dim // 8):
        raise DimensionMismatch(
            f"queries have dimension {dim} ({-(-dim // 8)} bytes packed), "
            f"doc_bits have {db.shape[1]} bytes per row"
        )
    if candidates is None:
        n_cand = k * _check_positive(rescore_multiplier, "rescore_multiplier")
    elif _check_positive(candidates, "candidates") < k:
        raise InvalidInput(f"candidates ({candidates}) must be at least k ({k})")
    else:
        n_cand = int(candidates)
    query_chunk_size = _check_positive(query_chunk_size, "query_chunk_size")
    score = _rescorer(rescore, db, dim)
    _, cand = binary_topk(quantize_binary(q), db, n_cand)
    kk = min(k, cand.shape[1])
    scores = np.empty((q.shape[0], kk), dtype=np.float32)
    indices = np.empty((q.shape[0], kk), dtype=np.int64)
    for q0 in range(0, q.shape[0], query_chunk_size):
        c = cand[q0 : q0 + query_chunk_size]
        s = score(q[q0 : q0 + query_chunk_size], c)
        order = np.lexsort((c, -s))[:, :kk]
        scores[q0 : q0 + len(c)] = np.take_along_axis(s, order, axis=1)
        indices[q0 : q0 + len(c)] = np.take_along_axis(c, order, axis=1)
    return scores, indices
