"""Tests for embedstack.vectors: brute-force oracles, properties, and typed errors."""

from __future__ import annotations

import dataclasses
import doctest
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from embedstack import vectors as V
from embedstack.errors import DimensionMismatch, InvalidInput

FAST = settings(max_examples=30, deadline=None, database=None)
METRICS = ["cosine", "dot", "euclidean", "manhattan"]
EXACT_METRICS = ["dot", "euclidean", "manhattan"]  # exact in float32 on small integers
AWKWARD_CHUNKS = [5, 17]


# ----------------------------------------------------------------------------- helpers


def brute_topk(s: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k by a full stable sort: descending score, ties to the lower index."""
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, order, axis=1), order


def assert_valid_topk(scores: np.ndarray, idx: np.ndarray, full: np.ndarray, k: int) -> None:
    """Weak oracle for float scores that chunked BLAS may round differently."""
    kk = min(k, full.shape[1])
    assert scores.shape == idx.shape == (full.shape[0], kk)
    assert scores.dtype == np.float32 and idx.dtype == np.int64
    for row in idx:
        assert len(set(row.tolist())) == kk
    np.testing.assert_allclose(scores, np.take_along_axis(full, idx, axis=1), atol=1e-5)
    assert np.all(np.diff(scores, axis=1) <= 0)
    np.testing.assert_allclose(scores, -np.sort(-full, axis=1)[:, :kk], atol=1e-5)


def small_ints(rows: int, dim: int) -> st.SearchStrategy[np.ndarray]:
    """Integer-valued vectors: every dot product is exact, and ties are common."""
    return hnp.arrays(np.int8, (rows, dim), elements=st.integers(-3, 3)).map(
        lambda a: a.astype(np.float32)
    )


@st.composite
def corpora(draw: st.DrawFn, max_docs: int = 40) -> tuple[np.ndarray, np.ndarray, int]:
    dim = draw(st.integers(1, 6))
    queries = draw(small_ints(draw(st.integers(1, 5)), dim))
    docs = draw(small_ints(draw(st.integers(0, max_docs)), dim))
    return queries, docs, draw(st.integers(1, max_docs + 5))


floats = st.floats(-100, 100, allow_nan=False, width=32)


def float_matrices(max_rows: int = 6, max_dim: int = 12) -> st.SearchStrategy[np.ndarray]:
    shape = st.tuples(st.integers(1, max_rows), st.integers(1, max_dim))
    return hnp.arrays(np.float32, shape, elements=floats)


def test_public_names_exist_and_docstring_examples_run() -> None:
    assert all(hasattr(V, name) for name in V.__all__)
    # every public name is re-exported from the submodule that defines it
    defined = {name for module in (V._float, V._int8, V._binary) for name in module.__all__}
    assert defined == set(V.__all__)
    # doctest.testmod only reads a module's own objects: run each submodule's examples
    results = [doctest.testmod(m) for m in (V, V._common, V._float, V._int8, V._binary)]
    assert sum(r.failed for r in results) == 0
    assert sum(r.attempted for r in results) >= 4  # normalize, truncate, pairwise, topk


# --------------------------------------------------------------------- normalize/pairwise


@FAST
@given(x=float_matrices())
def test_normalize_unit_norm_idempotent_zero_rows(x: np.ndarray) -> None:
    x[0] = 0.0
    y = V.normalize(x)
    assert y.dtype == np.float32 and y.shape == x.shape
    norms = np.linalg.norm(x.astype(np.float64), axis=1)
    big = norms > 1e-3
    np.testing.assert_allclose(np.linalg.norm(y[big], axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(V.normalize(y[big]), y[big], atol=1e-6)
    assert np.all(y[0] == 0.0)


def test_normalize_hand_example_and_1d() -> None:
    np.testing.assert_allclose(V.normalize([3.0, 4.0]), [3 / 5, 4 / 5], rtol=1e-6)
    assert V.normalize(np.zeros((2, 3))).tolist() == [[0.0] * 3] * 2


def test_pairwise_hand_examples() -> None:
    a, b = [[1.0, 0.0]], [[0.0, 2.0], [3.0, 4.0]]
    expected = {
        "cosine": [0.0, 3 / 5],
        "dot": [0.0, 3.0],
        "euclidean": [-math.sqrt(1 + 4), -math.sqrt(2**2 + 4**2)],
        "manhattan": [-(1 + 2), -(2 + 4)],
    }
    for metric, row in expected.items():
        got = V.pairwise(a, b, metric)  # type: ignore[arg-type]
        assert got.dtype == np.float32 and got.shape == (1, 2)
        np.testing.assert_allclose(got[0], row, rtol=1e-6, atol=1e-7)
    assert V.pairwise([1.0, 0.0], b).shape == (1, 2)  # 1-D is one row


# ---------------------------------------------------------------------------------- topk


@pytest.mark.parametrize("metric", EXACT_METRICS)
@pytest.mark.parametrize("chunk", AWKWARD_CHUNKS)
@FAST
@given(data=corpora(), query_chunk=st.sampled_from([1, 2, 1024]))
def test_topk_equals_brute_force_exactly(
    metric: str, chunk: int, data: tuple[np.ndarray, np.ndarray, int], query_chunk: int
) -> None:
    q, d, k = data
    scores, idx = V.topk(q, d, k, metric=metric, chunk_size=chunk, query_chunk_size=query_chunk)  # type: ignore[arg-type]
    want_s, want_i = brute_topk(V.pairwise(q, d, metric), k)  # type: ignore[arg-type]
    assert idx.dtype == np.int64 and scores.dtype == np.float32
    np.testing.assert_array_equal(idx, want_i)
    np.testing.assert_array_equal(scores, want_s)


@pytest.mark.parametrize("chunk", AWKWARD_CHUNKS)
@FAST
@given(data=corpora())
def test_topk_cosine_matches_brute_force(
    chunk: int, data: tuple[np.ndarray, np.ndarray, int]
) -> None:
    q, d, k = data
    scores, idx = V.topk(q, d, k, metric="cosine", chunk_size=chunk, query_chunk_size=2)
    assert_valid_topk(scores, idx, V.pairwise(q, d, "cosine"), k)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("chunk", [*AWKWARD_CHUNKS, 65536])
def test_topk_ties_go_to_lower_index(metric: str, chunk: int) -> None:
    docs = np.ones((40, 3), dtype=np.float32)
    _, idx = V.topk(np.ones((2, 3)), docs, 7, metric=metric, chunk_size=chunk)  # type: ignore[arg-type]
    assert idx.tolist() == [list(range(7))] * 2
    # Interleaved ties, a pattern where a bare argpartition picks arbitrary tied indices.
    values = [(7 * i) % 4 for i in range(40)]
    score = {
        "cosine": lambda v: float(v > 0),
        "dot": lambda v: 3.0 * v,
        "euclidean": lambda v: -abs(3.0 - v),
        "manhattan": lambda v: -abs(3.0 - v),
    }[metric]
    for k in (3, 7, 12):
        _, idx = V.topk([[3.0]], np.array(values, np.float32)[:, None], k, metric=metric)  # type: ignore[arg-type]
        want = sorted(range(40), key=lambda i: (-score(values[i]), i))[:k]
        assert idx.tolist() == [want]


def test_topk_k_larger_than_corpus_empty_corpus_and_empty_queries() -> None:
    docs = np.eye(3, dtype=np.float32)
    scores, idx = V.topk(np.ones((2, 3)), docs, 10, chunk_size=2)
    assert scores.shape == idx.shape == (2, 3)
    np.testing.assert_allclose(scores, np.full((2, 3), 1 / math.sqrt(3)), rtol=1e-6)
    assert idx.tolist() == [[0, 1, 2]] * 2
    scores, idx = V.topk(np.ones((2, 3)), np.empty((0, 3)), 5)
    assert scores.shape == idx.shape == (2, 0)
    assert scores.dtype == np.float32 and idx.dtype == np.int64
    scores, idx = V.topk(np.empty((0, 3)), docs, 2)
    assert scores.shape == idx.shape == (0, 2)
    assert V.topk([1.0, 0.0, 0.0], docs, 1)[1].tolist() == [[0]]


# ------------------------------------------------------------------------------ truncate


@FAST
@given(x=float_matrices(max_dim=12), data=st.data())
def test_truncate_unit_norm_and_prefix_direction(x: np.ndarray, data: st.DataObject) -> None:
    dim = data.draw(st.integers(1, x.shape[1]))
    t = V.truncate(x, dim)
    prefix = x[:, :dim].astype(np.float64)
    norms = np.linalg.norm(prefix, axis=1)
    big = norms > 1e-3
    assert t.shape == (x.shape[0], dim) and t.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(t[big], axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(t[big] * norms[big, None], prefix[big], rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(V.truncate(x, dim, renormalize=False), x[:, :dim])


def test_truncate_hand_example_and_bad_dims() -> None:
    np.testing.assert_allclose(V.truncate([3.0, 4.0, 12.0], 2), [3 / 5, 4 / 5], rtol=1e-6)
    for bad in (0, 4):
        with pytest.raises(DimensionMismatch, match="between 1 and 3"):
            V.truncate(np.ones((2, 3)), bad)
    with pytest.raises(InvalidInput):
        V.truncate(np.ones(3), 1.5)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------- int8


@FAST
@given(x=float_matrices(max_rows=8))
def test_int8_round_trip_within_half_a_step(x: np.ndarray) -> None:
    cal = V.calibrate_int8(x)
    codes = V.quantize_int8(x, cal)
    assert codes.dtype == np.int8 and codes.shape == x.shape
    back = V.dequantize_int8(codes, cal)
    half_step = (cal.high.astype(np.float64) - cal.low) / 255 / 2
    tol = 1e-6 * (np.abs(x) + 1)
    assert np.all(np.abs(back - x.astype(np.float64)) <= half_step + tol)


@FAST
@given(x=float_matrices(max_rows=8, max_dim=6), data=st.data())
def test_int8_scores_equal_dot_with_dequantized(x: np.ndarray, data: st.DataObject) -> None:
    cal = V.calibrate_int8(x, quantile=0.1)
    codes = V.quantize_int8(x, cal)
    q = data.draw(hnp.arrays(np.float32, (3, x.shape[1]), elements=floats))
    deq = V.dequantize_int8(codes, cal).astype(np.float64)
    scale = np.abs(q).sum() * (np.abs(deq).max() + 1)
    want = q.astype(np.float64) @ deq.T
    np.testing.assert_allclose(V.int8_scores(q, codes, cal), want, atol=1e-5 * scale + 1e-30)
    # cosine: float32 error of (q*scale)·c + q·offset, relative to the decoded norm
    step, offset = cal.affine()
    qn = q / np.maximum(np.linalg.norm(q.astype(np.float64), axis=1, keepdims=True), 1e-12)
    magnitude = np.abs(qn) @ (np.abs(step * codes) + np.abs(offset)).T
    dn = np.linalg.norm(deq, axis=1)
    tol = 1e-5 * magnitude / np.maximum(dn, 1e-12) + 1e-5
    cos = V.int8_scores(q, codes, cal, "cosine")
    assert np.all(np.abs(cos - V.pairwise(q, deq, "cosine")) <= tol)


def test_int8_clipping_constant_dims_and_quantiles() -> None:
    x = np.array([[0.0, 5.0], [1.0, 5.0], [2.0, 5.0]], dtype=np.float32)
    cal = V.calibrate_int8(x)
    assert cal.low.tolist() == [0.0, 5.0] and cal.high.tolist() == [2.0, 5.0]
    codes = V.quantize_int8([[-10.0, 5.0], [10.0, 7.0], [0.5, 5.0]], cal)
    assert codes[:, 0].tolist() == [-128, 127, round(0.5 / (2 / 255)) - 128]
    assert codes[:, 1].tolist() == [-128] * 3
    back = V.dequantize_int8(codes, cal)
    np.testing.assert_allclose(back[:2], [[0.0, 5.0], [2.0, 5.0]], atol=1e-6)
    data = np.arange(101, dtype=np.float32)[:, None]
    qcal = V.calibrate_int8(data, quantile=0.1)
    assert qcal.low.tolist() == [10.0] and qcal.high.tolist() == [90.0]


def test_int8_calibration_serialises_and_is_frozen() -> None:
    cal = V.calibrate_int8(np.random.default_rng(0).normal(size=(20, 5)).astype(np.float32))
    again = V.Int8Calibration.from_dict(json.loads(json.dumps(cal.to_dict())))
    np.testing.assert_array_equal(again.low, cal.low)
    np.testing.assert_array_equal(again.high, cal.high)
    assert again.low.dtype == np.float32 and again.dim == 5
    with pytest.raises(dataclasses.FrozenInstanceError):
        cal.low = cal.high  # type: ignore[misc]
    with pytest.raises(ValueError):
        cal.low[0] = 1.0
    with pytest.raises(InvalidInput):
        V.Int8Calibration.from_dict({"low": [0.0]})


@pytest.mark.parametrize("chunk", AWKWARD_CHUNKS)
@FAST
@given(data=corpora(), metric=st.sampled_from(["dot", "cosine"]))
def test_int8_topk_matches_brute_force(
    chunk: int, data: tuple[np.ndarray, np.ndarray, int], metric: str
) -> None:
    q, d, k = data
    cal = V.Int8Calibration(low=np.full(d.shape[1], -3.0), high=np.full(d.shape[1], 3.0))
    codes = V.quantize_int8(d, cal)
    scores, idx = V.int8_topk(q, codes, cal, k, metric=metric, chunk_size=chunk)  # type: ignore[arg-type]
    assert_valid_topk(scores, idx, V.int8_scores(q, codes, cal, metric), k)  # type: ignore[arg-type]


def test_int8_topk_ties_exact_with_unit_scale() -> None:
    cal = V.Int8Calibration(low=np.full(2, -128.0), high=np.full(2, 127.0))  # scale 1, offset 0
    codes = np.array([[1, 2], [3, 0], [1, 2], [3, 0], [0, 0]], dtype=np.int8)
    scores, idx = V.int8_topk([[1.0, 1.0]], codes, cal, 4, chunk_size=2)
    assert idx.tolist() == [[0, 1, 2, 3]] and scores.tolist() == [[1 + 2, 3 + 0, 1 + 2, 3 + 0]]


# -------------------------------------------------------------------------------- binary


@FAST
@given(x=float_matrices(max_dim=20))
def test_binary_pack_unpack_is_sign(x: np.ndarray) -> None:
    bits = V.quantize_binary(x)
    assert bits.dtype == np.uint8 and bits.shape == (x.shape[0], math.ceil(x.shape[1] / 8))
    np.testing.assert_array_equal(V.unpack_binary(bits, x.shape[1]), np.where(x > 0, 1.0, -1.0))


@FAST
@given(data=st.data(), nbytes=st.integers(1, 20))
def test_hamming_equals_naive_bit_count(data: st.DataObject, nbytes: int) -> None:
    qb = data.draw(hnp.arrays(np.uint8, (3, nbytes)))
    db = data.draw(hnp.arrays(np.uint8, (data.draw(st.integers(0, 9)), nbytes)))
    naive = (np.unpackbits(qb, axis=1)[:, None, :] != np.unpackbits(db, axis=1)[None]).sum(-1)
    np.testing.assert_array_equal(V.hamming_distance(qb, db), naive)


def test_popcount_fallback_matches_numpy() -> None:
    x = np.random.default_rng(1).integers(0, 2**63, size=500, dtype=np.uint64) * np.uint64(3)
    np.testing.assert_array_equal(V._binary._popcount_swar(x), np.bitwise_count(x))


@pytest.mark.parametrize("chunk", AWKWARD_CHUNKS)
@FAST
@given(data=corpora())
def test_binary_topk_equals_brute_force(
    chunk: int, data: tuple[np.ndarray, np.ndarray, int]
) -> None:
    q, d, k = data
    qb, db = V.quantize_binary(q), V.quantize_binary(d)
    dist, idx = V.binary_topk(qb, db, k, chunk_size=chunk, query_chunk_size=2)
    neg, want_i = brute_topk(-V.hamming_distance(qb, db), k)
    np.testing.assert_array_equal(idx, want_i)
    np.testing.assert_array_equal(dist, -neg)


@FAST
@given(data=corpora())
def test_rescore_with_all_candidates_equals_exact_topk(
    data: tuple[np.ndarray, np.ndarray, int],
) -> None:
    q, d, k = data
    bits, n = V.quantize_binary(d), max(d.shape[0], k)
    want = V.topk(q, d, k, metric="dot", chunk_size=5)
    got = V.binary_search_rescore(q, bits, k, rescore=d, candidates=n, query_chunk_size=2)
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(got[0], want[0])
    cal = V.Int8Calibration(low=np.full(d.shape[1], -128.0), high=np.full(d.shape[1], 127.0))
    got8 = V.binary_search_rescore(q, bits, k, rescore=(V.quantize_int8(d, cal), cal), candidates=n)
    np.testing.assert_array_equal(got8[1], want[1])
    signs = V.unpack_binary(bits, d.shape[1])
    got_bits = V.binary_search_rescore(q, bits, k, candidates=n)
    np.testing.assert_array_equal(got_bits[1], V.topk(q, signs, k, metric="dot")[1])


def test_rescore_hand_example_and_candidate_limit() -> None:
    docs = np.array([[1.0, 1.0], [2.0, 3.0], [-1.0, -1.0], [3.0, 2.0]], dtype=np.float32)
    q = np.array([[1.0, 2.0]], dtype=np.float32)
    # All of docs 0, 1, 3 share q's bits (1, 1); rescoring orders them by the float dot.
    scores, idx = V.binary_search_rescore(q, V.quantize_binary(docs), 2, rescore=docs)
    assert idx.tolist() == [[1, 3]] and scores.tolist() == [[1 * 2 + 2 * 3, 1 * 3 + 2 * 2]]
    # One candidate per result: Hamming ties go to the lowest indices 0, 1.
    _, idx = V.binary_search_rescore(
        q, V.quantize_binary(docs), 2, rescore=docs, rescore_multiplier=1
    )
    assert idx.tolist() == [[1, 0]]
    empty = V.binary_search_rescore(q, np.empty((0, 1), np.uint8), 3)
    assert empty[0].shape == empty[1].shape == (1, 0)


# -------------------------------------------------------------------------------- errors


def test_bad_inputs_raise_typed_errors() -> None:
    ones = np.ones((2, 3))
    with pytest.raises(DimensionMismatch, match="3.*4"):
        V.pairwise(ones, np.ones((2, 4)))
    with pytest.raises(DimensionMismatch):
        V.topk(ones, np.ones((2, 4)), 1)
    for bad in (np.nan, np.inf):
        with pytest.raises(InvalidInput, match="NaN"):
            V.pairwise([[1.0, bad]], [[1.0, 0.0]])
    with pytest.raises(InvalidInput, match="cosine, dot, euclidean, manhattan"):
        V.pairwise(ones, ones, "hamming")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="dot, cosine"):
        V.int8_scores(ones, np.ones((2, 3), np.int8), V.calibrate_int8(ones), "euclidean")  # type: ignore[arg-type]
    for k in (0, -1, True, 1.0):
        with pytest.raises(InvalidInput, match="k must be"):
            V.topk(ones, ones, k)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="chunk_size"):
        V.topk(ones, ones, 1, chunk_size=0)
    with pytest.raises(InvalidInput):
        V.pairwise(np.ones((2, 2, 2)), ones)
    with pytest.raises(InvalidInput):
        V.normalize([["a", "b"]])
    with pytest.raises(InvalidInput):
        V.normalize([[1.0, 2.0], [3.0]])
    with pytest.raises(InvalidInput):
        V.normalize([1e39])  # beyond float32


def test_bad_quantization_inputs_raise_typed_errors() -> None:
    cal = V.calibrate_int8(np.ones((2, 3)))
    with pytest.raises(DimensionMismatch):
        V.quantize_int8(np.ones((2, 4)), cal)
    with pytest.raises(InvalidInput, match="int8"):
        V.dequantize_int8(np.ones((2, 3)), cal)
    with pytest.raises(InvalidInput, match="low <= high"):
        V.Int8Calibration(low=np.ones(2), high=np.zeros(2))
    with pytest.raises(DimensionMismatch):
        V.Int8Calibration(low=np.ones(2), high=np.ones(3))
    for q in (0.5, -0.1):
        with pytest.raises(InvalidInput, match="quantile"):
            V.calibrate_int8(np.ones((2, 3)), quantile=q)
    with pytest.raises(InvalidInput):
        V.calibrate_int8(np.empty((0, 3)))
    with pytest.raises(DimensionMismatch):
        V.unpack_binary(np.zeros((1, 2), np.uint8), 20)
    with pytest.raises(DimensionMismatch, match="bytes"):
        V.hamming_distance(np.zeros((1, 2), np.uint8), np.zeros((1, 3), np.uint8))
    with pytest.raises(InvalidInput, match="uint8"):
        V.binary_topk(np.zeros((1, 2)), np.zeros((1, 2)), 1)
    bits = np.zeros((4, 1), np.uint8)
    with pytest.raises(DimensionMismatch):
        V.binary_search_rescore(np.ones((1, 12)), bits, 1)
    with pytest.raises(DimensionMismatch):
        V.binary_search_rescore(np.ones((1, 3)), bits, 1, rescore=np.ones((3, 3)))
    with pytest.raises(InvalidInput, match="candidates"):
        V.binary_search_rescore(np.ones((1, 3)), bits, 3, candidates=2)
