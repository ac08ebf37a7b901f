"""SPLADE: sparse vector math, the encoder against the formula, ONNX == torch, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from embedstack import InvalidInput, ModelNotFound, load_encoder
from embedstack.encoders.registry import get_model
from embedstack.encoders.splade import SparseEncoder, SparseVectors, score
from test_splade_helpers import build_tiny_mlm

TEXTS = [
    "Cats purr.",
    "The stock market fell, and stocks rose again in Paris!",
    "what is the capital of france",
    "Protein genes in cancer cells: results of a study with patients " * 3,
]


@pytest.fixture(scope="module")
def mlm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_mlm(tmp_path_factory.mktemp("mlm") / "model")


@pytest.fixture(scope="module")
def torch_encoder(mlm_dir: Path) -> SparseEncoder:
    return SparseEncoder(str(mlm_dir), backend="torch")


# --- SparseVectors ---------------------------------------------------------------------------


def test_from_dense_keeps_positive_entries_in_term_order() -> None:
    w = np.array([[0, 2.0, -1, 0.5], [0, 0, 0, 0], [3.0, 0, 1.0, 0]], dtype=np.float32)
    v = SparseVectors.from_dense(w)
    assert v.indptr.tolist() == [0, 2, 2, 4]
    assert v.indices.tolist() == [1, 3, 0, 2]
    assert v.values.tolist() == [2.0, 0.5, 3.0, 1.0]
    np.testing.assert_array_equal(v.to_dense(), np.maximum(w, 0))
    assert len(v) == 3 and v.nnz == 4


def test_top_k_keeps_the_heaviest_terms_ties_to_lower_ids() -> None:
    w = np.array([[1.0, 3.0, 1.0, 2.0, 1.0]], dtype=np.float32)
    v = SparseVectors.from_dense(w, top_k=3)
    assert v.indices.tolist() == [0, 1, 3]  # 3.0, 2.0, and the first of the 1.0 ties
    assert SparseVectors.from_dense(w, top_k=10).nnz == 5


def test_take_and_concat_round_trip() -> None:
    rng = np.random.default_rng(0)
    w = np.where(rng.random((6, 20)) < 0.3, rng.random((6, 20)), 0).astype(np.float32)
    v = SparseVectors.from_dense(w)
    np.testing.assert_array_equal(v.take([4, 0, 4]).to_dense(), w[[4, 0, 4]])
    both = SparseVectors.concat([v.take([0, 1]), v.take([2, 3, 4, 5])], 20)
    np.testing.assert_array_equal(both.to_dense(), w)
    assert len(SparseVectors.concat([], 20)) == 0


def test_inconsistent_arrays_are_rejected() -> None:
    ok = np.array([0, 1], np.int64)
    with pytest.raises(InvalidInput):
        SparseVectors(
            np.array([0, 2], np.int64), np.array([1], np.int32), np.ones(1, np.float32), 5
        )
    with pytest.raises(InvalidInput):
        SparseVectors(ok, np.array([7], np.int32), np.ones(1, np.float32), 5)
    with pytest.raises(InvalidInput):
        SparseVectors(ok, np.array([1], np.int32), np.ones(2, np.float32), 5)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6), st.integers(0, 7), st.integers(1, 30), st.integers(0, 2**31 - 1))
def test_score_is_the_dot_product(nq: int, nd: int, vocab: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    q = np.where(rng.random((nq, vocab)) < 0.3, rng.random((nq, vocab)), 0).astype(np.float32)
    d = np.where(rng.random((nd, vocab)) < 0.3, rng.random((nd, vocab)), 0).astype(np.float32)
    got = score(SparseVectors.from_dense(q), SparseVectors.from_dense(d))
    assert got.shape == (nq, nd) and got.dtype == np.float32
    np.testing.assert_allclose(got, q @ d.T, rtol=1e-5, atol=1e-6)


def test_to_dicts_names_terms_heaviest_first(torch_encoder: SparseEncoder) -> None:
    v = SparseVectors.from_dense(np.array([[0, 0.5, 2.0] + [0] * 145], dtype=np.float32))
    assert list(v.to_dicts(torch_encoder.tokenizer)[0].items()) == [
        ("[unused1]", 2.0),
        ("[unused0]", 0.5),
    ]


# --- the encoder -----------------------------------------------------------------------------


def _formula(folder: Path, texts: list[str]) -> np.ndarray:
    """SPLADE v2 max pooling written out, one text at a time (no padding involved)."""
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModelForMaskedLM

    model = AutoModelForMaskedLM.from_pretrained(folder).eval()
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    rows = []
    with torch.no_grad():
        for text in texts:
            ids = torch.tensor([tok.encode(text).ids])
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0]
            rows.append(torch.log1p(torch.relu(logits)).max(dim=0).values.numpy())
    return np.stack(rows)


def test_torch_backend_matches_the_formula(mlm_dir: Path, torch_encoder: SparseEncoder) -> None:
    got = torch_encoder.encode_documents(TEXTS)  # batched and padded together
    assert len(got) == len(TEXTS) and got.vocab_size == 148
    want = _formula(mlm_dir, TEXTS)
    assert (want > 0).sum() > 20 and ((want > 0).mean() < 0.8)  # sparse-ish, not degenerate
    np.testing.assert_allclose(got.to_dense(), want, atol=1e-5)


def test_onnx_matches_torch(mlm_dir: Path, torch_encoder: SparseEncoder, tmp_path: Path) -> None:
    onnx = SparseEncoder(str(mlm_dir), backend="onnx", cache_dir=tmp_path, batch_tokens=24)
    got = onnx.encode_documents(TEXTS)
    want = torch_encoder.encode_documents(TEXTS)
    np.testing.assert_allclose(got.to_dense(), want.to_dense(), atol=1e-4)
    assert onnx.model_id == torch_encoder.model_id
    assert list((tmp_path / "onnx").iterdir())[0].name.startswith("splade-")


def test_order_and_batching_do_not_change_results(torch_encoder: SparseEncoder) -> None:
    whole = torch_encoder.encode_documents(TEXTS).to_dense()
    one_by_one = np.concatenate([torch_encoder.encode_documents([t]).to_dense() for t in TEXTS])
    np.testing.assert_allclose(whole, one_by_one, atol=1e-5)
    streamed = list(torch_encoder.iter_encode_documents(TEXTS, chunk_size=3))
    assert [len(s) for s in streamed] == [3, 1]
    np.testing.assert_allclose(SparseVectors.concat(streamed, 148).to_dense(), whole, atol=1e-6)


def test_top_k_per_side(mlm_dir: Path) -> None:
    enc = SparseEncoder(str(mlm_dir), backend="torch", query_top_k=5)
    q, d = enc.encode_queries(TEXTS), enc.encode_documents(TEXTS)
    assert np.diff(q.indptr).max() == 5 and np.diff(d.indptr).max() > 5
    full = d.to_dense()
    for i in range(len(TEXTS)):  # the kept query terms are the 5 heaviest document-side ones
        assert np.sort(full[i])[-5:].min() <= q.row(i)[1].min() + 1e-6
    scores = enc.score(q, d)
    np.testing.assert_allclose(scores, q.to_dense() @ full.T, rtol=1e-5)


@pytest.mark.parametrize("bad", [[], ["ok", "  "], "a string", [3]])
def test_bad_input_is_invalid_input(torch_encoder: SparseEncoder, bad: object) -> None:
    with pytest.raises(InvalidInput):
        torch_encoder.encode_documents(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "option", [{"top_k": 0}, {"doc_top_k": 2.5}, {"max_length": 10**6}, {"backend": "tensorflow"}]
)
def test_bad_options(mlm_dir: Path, option: dict[str, object]) -> None:
    with pytest.raises(InvalidInput):
        SparseEncoder(str(mlm_dir), **option)  # type: ignore[arg-type]


def test_dense_models_are_refused() -> None:
    with pytest.raises(InvalidInput, match="dense model"):
        SparseEncoder("all-MiniLM-L6-v2")
    with pytest.raises(InvalidInput, match="SparseEncoder"):
        load_encoder("splade-tiny")


def test_unfetched_splade_tiny_says_how_to_fetch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMBEDSTACK_CACHE_DIR", str(tmp_path))
    spec = get_model("splade-tiny")
    assert (spec.kind, spec.license, spec.dim) == ("sparse", "apache-2.0", 30522)
    assert spec.bundled_path() is None
    with pytest.raises(ModelNotFound, match="embedstack models fetch splade-tiny"):
        SparseEncoder("splade-tiny")


def test_folder_shipping_its_own_graph_skips_the_export(mlm_dir: Path, tmp_path: Path) -> None:
    """The runtime's ``Head.shipped`` seam: a folder's own ``splade.onnx`` replaces the
    export, so no cache entry is written and torch is not needed."""
    import shutil

    exported = SparseEncoder(str(mlm_dir), backend="onnx", cache_dir=tmp_path / "a")
    folder = tmp_path / "shipped"
    shutil.copytree(mlm_dir, folder)
    shutil.copy(exported._model.path, folder / "splade.onnx")  # type: ignore[attr-defined]
    shipped = SparseEncoder(str(folder), backend="onnx", cache_dir=tmp_path / "b")
    assert shipped._model.path == folder / "splade.onnx"  # type: ignore[attr-defined]
    assert not (tmp_path / "b").exists()
    np.testing.assert_array_equal(
        shipped.encode_documents(TEXTS).to_dense(), exported.encode_documents(TEXTS).to_dense()
    )
