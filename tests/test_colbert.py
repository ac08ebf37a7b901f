"""ColBERT: MaxSim against the double-loop formula, storage precisions, the encoder's input
format against a hand-built forward pass, ONNX == torch, reranker and small index."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from embedstack import DimensionMismatch, IndexCorrupt, InvalidInput, ModelMismatch
from embedstack.encoders import multivector
from embedstack.encoders.colbert import (
    ColbertIndex,
    ColbertReranker,
    LateInteractionEncoder,
    read_linear_head,
)
from embedstack.encoders.multivector import TokenVectors, maxsim, maxsim_many
from test_splade_helpers import build_tiny_bert, vocab

DOCS = [
    "Cats purr, dogs bark!",
    "The stock market fell.",
    "Paris is the capital of France.",
    "Cancer cells and genes: a study with patients.",
]


def _unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _brute(q: np.ndarray, docs: list[np.ndarray]) -> list[float]:
    """Khattab & Zaharia (2020), eq. 3, as two Python loops."""
    out = []
    for d in docs:
        total = 0.0
        for qi in q:
            total += max((float(np.dot(qi, dj)) for dj in d), default=0.0)
        out.append(total if len(d) else 0.0)
    return out


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 9),
    st.lists(st.integers(0, 12), min_size=1, max_size=8),
    st.integers(1, 16),
    st.integers(0, 2**31 - 1),
    st.sampled_from([3, 7, 1 << 16]),
)
def test_maxsim_equals_the_double_loop(
    nq: int, lengths: list[int], dim: int, seed: int, block: int
) -> None:
    rng = np.random.default_rng(seed)
    q = _unit(rng, nq, dim)
    docs = [_unit(rng, n, dim) for n in lengths]
    tv = TokenVectors.from_arrays(docs)
    old = multivector._BLOCK
    multivector._BLOCK = block  # awkward block sizes cut through documents
    try:
        got = maxsim(q, tv)
    finally:
        multivector._BLOCK = old
    np.testing.assert_allclose(got, _brute(q, docs), rtol=1e-5, atol=1e-5)
    assert got.dtype == np.float32


def test_maxsim_many_and_dimension_check() -> None:
    rng = np.random.default_rng(1)
    docs = TokenVectors.from_arrays([_unit(rng, n, 8) for n in (3, 5)])
    queries = TokenVectors.from_arrays([_unit(rng, n, 8) for n in (2, 4, 1)])
    many = maxsim_many(queries, docs)
    assert many.shape == (3, 2)
    for i in range(3):
        np.testing.assert_allclose(many[i], maxsim(queries.doc(i), docs), rtol=1e-6)
    with pytest.raises(DimensionMismatch):
        maxsim(_unit(rng, 2, 4), docs)


@pytest.mark.parametrize("precision", ["float16", "int8"])
def test_reduced_precision_storage_is_within_its_error_bound(precision: str) -> None:
    rng = np.random.default_rng(2)
    dim, nq = 64, 16
    docs = TokenVectors.from_arrays([_unit(rng, int(n), dim) for n in rng.integers(1, 40, 30)])
    q = _unit(rng, nq, dim)
    small = docs.astype(precision)
    assert small.precision == precision and small.vectors.nbytes < docs.vectors.nbytes / 1.9
    # each stored component is off by at most half a step: 2^-11 relative (fp16) or
    # max|x| / 254 (int8); a dot product moves by at most ||q||_1 times that
    step = np.abs(docs.vectors).max(axis=1) * (2.0**-11 if precision == "float16" else 1 / 254)
    bound = nq * float(np.abs(q).sum(axis=1).max()) * float(step.max())
    err = np.abs(maxsim(q, small) - maxsim(q, docs)).max()
    assert 0 < err <= bound
    np.testing.assert_allclose(small.floats(), docs.floats(), atol=float(step.max()) + 1e-7)


def test_token_vectors_take_concat_save_load(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    arrays = [_unit(rng, n, 6) for n in (2, 0, 4, 1)]
    tv = TokenVectors.from_arrays(arrays).astype("int8")
    picked = tv.take([2, 0])
    np.testing.assert_array_equal(picked.doc(0), tv.doc(2))
    np.testing.assert_array_equal(
        TokenVectors.concat([tv.take([0, 1]), tv.take([2, 3])]).floats(), tv.floats()
    )
    tv.save(tmp_path / "tv")
    back = TokenVectors.load(tmp_path / "tv")
    assert isinstance(back.vectors, np.memmap) and back.precision == "int8"
    np.testing.assert_array_equal(back.floats(), tv.floats())
    assert back.lengths.tolist() == [2, 0, 4, 1]
    with pytest.raises(IndexCorrupt):
        TokenVectors.load(tmp_path / "nothing")
    with pytest.raises(InvalidInput):
        TokenVectors(np.zeros((3, 2), np.float32), np.array([0, 2], np.int64))
    with pytest.raises(InvalidInput):
        TokenVectors(np.zeros((3, 2), np.int8), np.array([0, 3], np.int64))
    with pytest.raises(InvalidInput):
        tv.astype("bfloat16")


# --- the encoder ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("colbert") / "m", linear_dim=12)


@pytest.fixture(scope="module")
def encoder(tiny: Path) -> LateInteractionEncoder:
    return LateInteractionEncoder(str(tiny), query_maxlen=12, doc_maxlen=16)


def _forward(folder: Path, ids: list[int], attend: int) -> np.ndarray:
    """Hand-built ColBERT forward pass: BERT, linear head, L2 normalization."""
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(folder).eval()
    mask = torch.zeros(1, len(ids), dtype=torch.long)
    mask[0, :attend] = 1
    with torch.no_grad():
        h = model(input_ids=torch.tensor([ids]), attention_mask=mask).last_hidden_state[0]
    w = read_linear_head(folder, 32)
    assert w is not None
    out = h.numpy() @ w.T
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def test_queries_are_marked_and_augmented(tiny: Path, encoder: LateInteractionEncoder) -> None:
    v = vocab()
    q = encoder.encode_queries(["What cats purr?"])
    assert len(q) == 1 and q.lengths.tolist() == [12] and q.dim == 12
    ids = [v["[CLS]"], v["[unused0]"], v["what"], v["cats"], v["purr"], v["?"], v["[SEP]"]]
    want = _forward(tiny, ids + [v["[MASK]"]] * 5, attend=len(ids))
    np.testing.assert_allclose(q.doc(0), want, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(q.vectors, axis=1), 1, atol=1e-6)


def test_documents_are_marked_truncated_and_drop_punctuation(
    tiny: Path, encoder: LateInteractionEncoder
) -> None:
    v = vocab()
    d = encoder.encode_documents(["Cats purr, dogs bark!", "the sea " * 20])
    ids = [
        v["[CLS]"],
        v["[unused1]"],
        v["cats"],
        v["purr"],
        v[","],
        v["dogs"],
        v["bark"],
        v["!"],
        v["[SEP]"],
    ]
    full = _forward(tiny, ids, attend=len(ids))
    keep = [i for i, t in enumerate(ids) if t not in (v[","], v["!"])]
    np.testing.assert_allclose(d.doc(0), full[keep], atol=1e-5)
    assert d.lengths.tolist() == [7, 16]  # the second is cut at doc_maxlen


def test_no_head_and_no_markers(tmp_path: Path) -> None:
    folder = build_tiny_bert(tmp_path / "plain")
    enc = LateInteractionEncoder(str(folder), markers=False)
    assert enc.head is None and enc.dim == 32 and not enc.query_augmentation  # no head: off
    assert enc.encode_queries(["cats purr"]).lengths.tolist() == [4]  # [CLS] cats purr [SEP]
    forced = LateInteractionEncoder(str(folder), markers=False, query_augmentation=True)
    assert forced.encode_queries(["cats purr"]).lengths.tolist() == [32]
    with pytest.raises(DimensionMismatch):
        LateInteractionEncoder(str(folder), dim=128)


def test_maxlens_come_from_artifact_metadata(tiny: Path, tmp_path: Path) -> None:
    """ColBERT's artifact.metadata sets the default lengths; explicit options win."""
    import json
    import shutil

    from embedstack import ModelNotFound

    folder = tmp_path / "meta"
    shutil.copytree(tiny, folder)
    plain = LateInteractionEncoder(str(folder))
    assert (plain.query_maxlen, plain.doc_maxlen) == (32, 180)  # no file: the defaults
    (folder / "artifact.metadata").write_text(json.dumps({"query_maxlen": 10, "doc_maxlen": 20}))
    enc = LateInteractionEncoder(str(folder))
    assert (enc.query_maxlen, enc.doc_maxlen) == (10, 20)
    assert enc.encode_queries(["cats"]).lengths.tolist() == [10]
    assert enc.encode_documents(["the sea " * 20]).lengths.tolist() == [20]
    assert LateInteractionEncoder(str(folder), query_maxlen=12).query_maxlen == 12
    (folder / "artifact.metadata").write_text(json.dumps({"doc_maxlen": 2}))
    with pytest.raises(InvalidInput, match=r"artifact.metadata: doc_maxlen must be an int"):
        LateInteractionEncoder(str(folder))
    (folder / "artifact.metadata").write_text("{not json")
    with pytest.raises(ModelNotFound, match="artifact.metadata"):
        LateInteractionEncoder(str(folder))


def test_onnx_matches_torch(tiny: Path, encoder: LateInteractionEncoder, tmp_path: Path) -> None:
    onnx = LateInteractionEncoder(
        str(tiny), backend="onnx", query_maxlen=12, doc_maxlen=16, cache_dir=tmp_path
    )
    for a, b in (
        (onnx.encode_documents(DOCS), encoder.encode_documents(DOCS)),
        (onnx.encode_queries(DOCS), encoder.encode_queries(DOCS)),
    ):
        assert a.lengths.tolist() == b.lengths.tolist()
        np.testing.assert_allclose(a.vectors, b.vectors, atol=1e-4)


def test_reranker_scores_in_input_order(encoder: LateInteractionEncoder) -> None:
    rr = ColbertReranker(encoder)
    assert rr.name == f"colbert:{encoder.name}"
    s = rr.score("cats purr", DOCS)
    assert s.shape == (4,) and s.dtype == np.float32
    np.testing.assert_allclose(rr.score("cats purr", DOCS[::-1]), s[::-1], rtol=1e-5)
    q = encoder.encode_queries(["cats purr"]).doc(0)
    np.testing.assert_allclose(
        s, _brute(q, [encoder.encode_documents([d]).doc(0) for d in DOCS]), rtol=1e-5
    )
    assert [i for i, _ in rr.rerank("cats purr", DOCS)] == np.argsort(-s, kind="stable").tolist()
    for query, docs in (("  ", DOCS), ("cats", []), ("cats", ["ok", ""])):
        with pytest.raises(InvalidInput):
            rr.score(query, docs)


def test_colbert_index_search_save_load(
    tmp_path: Path, tiny: Path, encoder: LateInteractionEncoder
) -> None:
    idx = ColbertIndex.build(encoder, DOCS, ids=["a", "b", "c", "d"], precision="float32")
    full = rerank = encoder.score("the market", encoder.encode_documents(DOCS))
    assert idx.search("the market", k=2) == [
        (["a", "b", "c", "d"][i], pytest.approx(float(full[i]))) for i in np.argsort(-full)[:2]
    ]
    rerank = idx.score("the market", ["d", "b"])
    np.testing.assert_allclose(rerank, full[[3, 1]], rtol=1e-6)
    half = ColbertIndex.build(encoder, DOCS)  # float16 by default
    assert half.vectors.precision == "float16" and half.ids == ["0", "1", "2", "3"]
    half.save(tmp_path / "cb")
    back = ColbertIndex.load(tmp_path / "cb", encoder)
    assert back.search("the market", k=4) == half.search("the market", k=4)
    other = LateInteractionEncoder(str(build_tiny_bert(tmp_path / "o", seed=5, linear_dim=12)))
    with pytest.raises(ModelMismatch):
        ColbertIndex.load(tmp_path / "cb", other)
    with pytest.raises(InvalidInput):
        idx.search("x", k=0)
    with pytest.raises(InvalidInput, match="not in"):
        idx.score("x", ["zz"])
    with pytest.raises(InvalidInput):
        ColbertIndex.build(encoder, DOCS, ids=["a", "a", "b", "c"])


def test_minilm_zero_shot_prefers_the_relevant_document() -> None:
    rr = ColbertReranker("all-MiniLM-L6-v2")
    assert rr.encoder.head is None and rr.encoder.dim == 384
    s = rr.score("do cats purr?", ["Stocks fell sharply today.", "Cats purr when they are happy."])
    assert s[1] > s[0]
