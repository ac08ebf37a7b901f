"""Binary quantization: sign bits packed 8 per byte, Hamming distance and top-k, and
binary search with rescoring of the candidates by the float query (Yamada et al. 2021;
Shakir, Aarsen & Lee 2024).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from embedstack._typing import FloatArray, IntArray, UInt8Array
from embedstack.errors import DimensionMismatch, InvalidInput
from embedstack.vectors._common import (
    DOC_CHUNK,
    QUERY_CHUNK,
    as_codes,
    as_matrix,
    check_dims,
    check_positive,
    chunked_topk,
)
from embedstack.vectors._int8 import Int8Calibration, check_calibration

__all__ = [
    "binary_search_rescore",
    "binary_topk",
    "hamming_distance",
    "quantize_binary",
    "unpack_binary",
]


def quantize_binary(v: npt.ArrayLike) -> UInt8Array:
    """Sign bits (``x > 0`` → 1), packed big-endian 8 per byte with ``np.packbits``.

    Returns:
        ``(n, ceil(dim / 8))`` uint8; padding bits are 0.
    """
    return np.packbits(as_matrix(v, "v") > 0, axis=1)


def unpack_binary(bits: npt.ArrayLike, dim: int) -> FloatArray:
    """``(n, dim)`` float32 in ``{-1, +1}`` from :func:`quantize_binary` output."""
    b = as_codes(bits, "bits", np.uint8)
    dim = check_positive(dim, "dim")
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
    qb = as_codes(query_bits, "query_bits", np.uint8)
    db = as_codes(doc_bits, "doc_bits", np.uint8)
    check_dims(qb, db, "query_bits", "doc_bits", unit=" bytes")
    return _words(qb), _words(db)


def hamming_distance(query_bits: npt.ArrayLike, doc_bits: npt.ArrayLike) -> IntArray:
    """``(nq, nd)`` int64 count of differing bits (XOR then popcount)."""
    return _hamming(*_bit_inputs(query_bits, doc_bits))


def binary_topk(
    query_bits: npt.ArrayLike,
    doc_bits: npt.ArrayLike,
    k: int,
    *,
    chunk_size: int = DOC_CHUNK,
    query_chunk_size: int = QUERY_CHUNK,
) -> tuple[IntArray, IntArray]:
    """The ``k`` documents nearest in Hamming distance, chunked like :func:`topk`.

    Returns:
        ``(distances, indices)``: int64 ``(nq, min(k, nd))``, distances **ascending** (plain
        distances, not negated), ties broken by the lower document index.
    """
    qw, dw = _bit_inputs(query_bits, doc_bits)

    def score(q0: int, q1: int, d0: int, d1: int) -> IntArray:
        return -_hamming(qw[q0:q1], dw[d0:d1])

    neg, idx = chunked_topk(
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
        codes = as_codes(rescore[0], "rescore codes", np.int8)
        check_calibration(codes.shape[1], cal, "rescore codes")
        scale, offset = cal.affine()
        docs, shift = codes, (scale.astype(np.float32), offset)
    elif rescore is None:
        docs, shift = None, None
    else:
        docs, shift = as_matrix(rescore, "rescore"), None
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
    q = as_matrix(queries, "queries")
    db = as_codes(doc_bits, "doc_bits", np.uint8)
    dim, k = q.shape[1], check_positive(k, "k")
    if db.shape[1] != -(-dim // 8):
        raise DimensionMismatch(
            f"queries have dimension {dim} ({-(-dim // 8)} bytes packed), "
            f"doc_bits have {db.shape[1]} bytes per row"
        )
    if candidates is None:
        n_cand = k * check_positive(rescore_multiplier, "rescore_multiplier")
    elif check_positive(candidates, "candidates") < k:
        raise InvalidInput(f"candidates ({candidates}) must be at least k ({k})")
    else:
        n_cand = int(candidates)
    query_chunk_size = check_positive(query_chunk_size, "query_chunk_size")
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
