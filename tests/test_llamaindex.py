"""The LlamaIndex embedding class by its contract: ``get_text_embedding(s)``,
``get_query_embedding``, their async variants, batching, prefixes and bad input."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

pytest.importorskip("llama_index.core")

from llama_index.core.base.embeddings.base import BaseEmbedding  # noqa: E402
from llama_index.core.schema import TextNode  # noqa: E402

from embedstack import HashEncoder, InvalidInput  # noqa: E402
from embedstack.integrations.llamaindex import EmbedstackEmbedding  # noqa: E402


class CountingPrefixedHash(HashEncoder):
    """E5-style prefixes, and a count of encoder calls (one per batch)."""

    calls = 0

    def encode_queries(self, texts: Any) -> Any:
        return self.encode([f"query: {t}" for t in texts])

    def encode_documents(self, texts: Any) -> Any:
        type(self).calls += 1
        return self.encode([f"passage: {t}" for t in texts])


def test_text_and_query_embeddings_use_the_models_prefixes() -> None:
    enc = CountingPrefixedHash(64)
    emb = EmbedstackEmbedding(enc)
    assert isinstance(emb, BaseEmbedding)
    assert emb.model_name == "hash-64"
    text = np.asarray(emb.get_text_embedding("cats purr"))
    query = np.asarray(emb.get_query_embedding("cats purr"))
    np.testing.assert_allclose(text, enc.encode(["passage: cats purr"])[0], atol=1e-6)
    np.testing.assert_allclose(query, enc.encode(["query: cats purr"])[0], atol=1e-6)
    assert np.linalg.norm(text) == pytest.approx(1.0, abs=1e-5)


def test_text_embeddings_are_batched_by_embed_batch_size() -> None:
    enc = CountingPrefixedHash(32)
    emb = EmbedstackEmbedding(enc, embed_batch_size=4)
    texts = [f"text number {i}" for i in range(10)]
    CountingPrefixedHash.calls = 0
    vecs = emb.get_text_embedding_batch(texts)
    assert CountingPrefixedHash.calls == -(-len(texts) // 4)  # ceil(10 / 4) encoder calls
    expected = enc.encode([f"passage: {t}" for t in texts])
    np.testing.assert_allclose(np.asarray(vecs), expected, atol=1e-6)
    assert emb.get_text_embedding_batch([]) == []


async def test_async_variants_equal_the_sync_ones() -> None:
    emb = EmbedstackEmbedding(CountingPrefixedHash(32), embed_batch_size=3)
    texts = ["a cat", "a dog", "a bird", "a fish"]
    assert await emb.aget_query_embedding("pets") == emb.get_query_embedding("pets")
    assert await emb.aget_text_embedding("a cat") == emb.get_text_embedding("a cat")
    assert await emb.aget_text_embedding_batch(texts) == emb.get_text_embedding_batch(texts)


def test_nodes_are_embedded_by_the_transform_call() -> None:
    emb = EmbedstackEmbedding(HashEncoder(16))
    nodes = emb([TextNode(text="cats purr"), TextNode(text="dogs bark")])
    assert [len(n.embedding or []) for n in nodes] == [16, 16]
    np.testing.assert_allclose(nodes[0].embedding or [], emb.get_text_embedding("cats purr"))


def test_bad_input_is_a_typed_error() -> None:
    emb = EmbedstackEmbedding(HashEncoder(16))
    with pytest.raises(InvalidInput):
        emb.get_text_embedding("   ")
    with pytest.raises(InvalidInput):
        emb.get_query_embedding(5)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        EmbedstackEmbedding(3.5)  # type: ignore[arg-type]


def test_loads_a_registry_model_by_name(hash_model: str) -> None:
    emb = EmbedstackEmbedding(hash_model)
    assert emb.model_name == hash_model
    assert len(emb.get_query_embedding("x y")) == 64
