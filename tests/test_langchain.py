"""The LangChain adapters against LangChain's own standard test suites (``langchain-tests``),
plus what those suites do not cover: prefixes, filters, scores, any backend, bad input."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("langchain_tests")

from langchain_core.documents import Document  # noqa: E402
from langchain_core.embeddings import DeterministicFakeEmbedding, Embeddings  # noqa: E402
from langchain_core.vectorstores import VectorStore  # noqa: E402
from langchain_tests.integration_tests import (  # noqa: E402
    EmbeddingsIntegrationTests,
    VectorStoreIntegrationTests,
)
from langchain_tests.unit_tests import EmbeddingsUnitTests  # noqa: E402

from embedstack import DimensionMismatch, HashEncoder, Index, InvalidInput  # noqa: E402
from embedstack.integrations.langchain import (  # noqa: E402
    EmbedstackEmbeddings,
    EmbedstackVectorStore,
    LangChainEncoder,
)


class PrefixedHash(HashEncoder):
    """A hashing encoder with E5-style prefixes, to see which one each call applies."""

    def encode_queries(self, texts: Any) -> Any:
        return self.encode([f"query: {t}" for t in texts])

    def encode_documents(self, texts: Any) -> Any:
        return self.encode([f"passage: {t}" for t in texts])


# --- the standard suites ----------------------------------------------------------------------


class TestEmbeddingsUnit(EmbeddingsUnitTests):
    @property
    def embeddings_class(self) -> type[EmbedstackEmbeddings]:
        return EmbedstackEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return {"model": HashEncoder(64)}


class TestEmbeddingsIntegration(EmbeddingsIntegrationTests):
    @property
    def embeddings_class(self) -> type[EmbedstackEmbeddings]:
        return EmbedstackEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return {"model": HashEncoder(64)}


class TestEmbeddingsIntegrationMiniLM(EmbeddingsIntegrationTests):
    """The same suite over the real bundled model (tier 1)."""

    @property
    def embeddings_class(self) -> type[EmbedstackEmbeddings]:
        return EmbedstackEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return {"model": "all-MiniLM-L6-v2", "encoder_options": {"show_progress": False}}


class TestVectorStoreStandard(VectorStoreIntegrationTests):
    """LangChain's suite with its own embeddings (DeterministicFakeEmbedding), wrapped as an
    embedstack encoder: the index stores and searches the suite's vectors."""

    @pytest.fixture()
    def vectorstore(self, tmp_path: Path) -> Iterator[VectorStore]:  # type: ignore[override]
        embeddings = self.get_embeddings()
        index = Index.create(tmp_path / "idx", encoder=LangChainEncoder(embeddings))
        store = EmbedstackVectorStore(index, embeddings)
        yield store
        store.close()


class TestVectorStoreHashEncoder(VectorStoreIntegrationTests):
    """The suite again with embedstack's own encoder and the store's default embeddings."""

    @pytest.fixture()
    def vectorstore(self, tmp_path: Path) -> Iterator[VectorStore]:  # type: ignore[override]
        store = EmbedstackVectorStore(Index.create(tmp_path / "idx", encoder=HashEncoder(64)))
        yield store
        store.close()


# --- beyond the suites ------------------------------------------------------------------------


def test_embeddings_apply_the_models_query_and_document_prefixes() -> None:
    enc = PrefixedHash(64)
    emb = EmbedstackEmbeddings(enc)
    doc = np.asarray(emb.embed_documents(["cats purr"])[0], dtype=np.float32)
    query = np.asarray(emb.embed_query("cats purr"), dtype=np.float32)
    np.testing.assert_allclose(doc, enc.encode(["passage: cats purr"])[0], atol=1e-6)
    np.testing.assert_allclose(query, enc.encode(["query: cats purr"])[0], atol=1e-6)
    assert not np.allclose(doc, query)
    assert emb.embed_documents([]) == []


async def test_async_embeddings_equal_the_sync_ones() -> None:
    emb = EmbedstackEmbeddings(HashEncoder(32))
    assert await emb.aembed_query("a cat") == emb.embed_query("a cat")
    assert await emb.aembed_documents(["a", "b c"]) == emb.embed_documents(["a", "b c"])


def test_embeddings_refuse_bad_input_with_typed_errors() -> None:
    emb = EmbedstackEmbeddings(HashEncoder(32))
    with pytest.raises(InvalidInput):
        emb.embed_documents(["ok", "  "])
    with pytest.raises(InvalidInput):
        emb.embed_query(3)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        EmbedstackEmbeddings(42)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        EmbedstackEmbeddings(HashEncoder(8), encoder_options={"batch_size": 2})


def _store(tmp_path: Path) -> EmbedstackVectorStore:
    store = EmbedstackVectorStore(Index.create(tmp_path / "idx", encoder=HashEncoder(64)))
    store.add_texts(
        ["cats purr on the sofa", "dogs bark at the mailman", "cats chase mice at night"],
        metadatas=[
            {"animal": "cat", "year": 2020},
            {"animal": "dog", "year": 2021},
            {"animal": "cat", "year": 2023},
        ],  # fmt: skip
        ids=["c1", "d1", "c2"],
    )
    return store


def test_filters_pass_through_in_embedstacks_filter_language(tmp_path: Path) -> None:
    store = _store(tmp_path)
    found = store.similarity_search("cats", k=3, filter={"animal": "cat", "year": {"$gte": 2021}})
    assert [d.id for d in found] == ["c2"]
    found = store.similarity_search(
        "animals", k=3, filter={"$or": [{"year": 2020}, {"year": 2021}]}
    )
    assert sorted(d.id for d in found) == ["c1", "d1"]
    with pytest.raises(InvalidInput):
        store.similarity_search("cats", filter={"year": {"$near": 1}})
    store.close()


def test_scores_are_the_index_cosines_and_relevance_maps_them_to_0_1(tmp_path: Path) -> None:
    store = _store(tmp_path)
    scored = store.similarity_search_with_score("cats chase mice", k=3)
    enc = store.index.encoder
    q = enc.encode_queries(["cats chase mice"])[0]
    for doc, score in scored:
        stored = store.index.get(doc.id)
        assert stored is not None
        assert score == pytest.approx(
            float(enc.encode_documents([stored["text"]])[0] @ q), abs=1e-5
        )
    relevance = store.similarity_search_with_relevance_scores("cats chase mice", k=3)
    assert [r for _, r in relevance] == pytest.approx([(s + 1) / 2 for _, s in scored])
    hybrid = store.similarity_search("mailman", k=1, mode="bm25")
    assert [d.id for d in hybrid] == ["d1"]
    store.close()


def test_search_by_vector_ranks_as_the_text_query_it_encodes(tmp_path: Path) -> None:
    store = _store(tmp_path)
    for query, flt in (("cats chase mice", None), ("animals", {"year": {"$gte": 2021}})):
        vec = store.embeddings.embed_query(query)
        by_text = store.similarity_search_with_score(query, k=3, filter=flt)
        by_vec = store.similarity_search_with_score_by_vector(vec, k=3, filter=flt)
        assert [d.id for d, _ in by_vec] == [d.id for d, _ in by_text]
        assert [s for _, s in by_vec] == pytest.approx([s for _, s in by_text], abs=1e-6)
        scaled = [3.0 * x for x in vec]  # a vector's length does not change the cosine
        assert [d.id for d in store.similarity_search_by_vector(scaled, k=3, filter=flt)] == [
            d.id for d, _ in by_text
        ]
    store.add_texts(["a kitten and its mice"], [{"animal": "cat", "year": 2024}], ids=["k1"])
    vec = store.embeddings.embed_query("kitten mice")
    assert store.similarity_search_by_vector(vec, k=1)[0].id == "k1"  # sees later writes
    with pytest.raises(DimensionMismatch):
        store.similarity_search_by_vector([1.0] * 63)
    for bad in ([float("nan")] * 64, ["x"] * 64):
        with pytest.raises(InvalidInput):
            store.similarity_search_by_vector(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="dense"):
        store.similarity_search_by_vector(vec, mode="bm25")
    store.close()
    store.close()


async def test_async_search_by_vector_equals_the_sync_one(tmp_path: Path) -> None:
    store = _store(tmp_path)
    vec = store.embeddings.embed_query("cats")
    got = await store.asimilarity_search_by_vector(vec, k=2)
    assert [d.id for d in got] == [d.id for d in store.similarity_search_by_vector(vec, k=2)]
    store.close()


def test_add_texts_titles_upsert_and_bad_input(tmp_path: Path) -> None:
    store = _store(tmp_path)
    assert store.add_texts(["cats purr on the sofa"], [{"animal": "cat", "year": 2020}],
                           ids=["c1"]) == ["c1"]  # fmt: skip
    assert len(store.index) == 3
    (generated,) = store.add_texts(["a bird sings"])
    assert store.get_by_ids([generated])[0].page_content == "a bird sings"
    for bad in (
        lambda: store.add_texts(["a", "b"], metadatas=[{}]),
        lambda: store.add_texts(["a"], ids=["x", "y"]),
        lambda: store.add_texts(["   "]),
        lambda: store.add_texts(["a"], metadatas=[{"f": object()}]),
        lambda: store.add_texts(["a"], colour="red"),
        lambda: store.delete(None),
    ):
        with pytest.raises(InvalidInput):
            bad()
    assert len(store.index) == 4
    with pytest.raises(InvalidInput):
        store.similarity_search_by_vector([0.0] * 64)  # no direction: not a query
    with pytest.raises(InvalidInput):
        EmbedstackVectorStore("not an index")  # type: ignore[arg-type]
    store.close()


def test_from_texts_creates_then_reopens_the_same_index(tmp_path: Path) -> None:
    path = tmp_path / "idx"
    emb = EmbedstackEmbeddings(HashEncoder(64))
    store = EmbedstackVectorStore.from_texts(["cats purr", "dogs bark"], emb, ids=["a", "b"],
                                             path=path)  # fmt: skip
    store.close()
    again = EmbedstackVectorStore.from_texts(["mice squeak"], emb, ids=["c"], path=path)
    assert sorted(d.id for d in again.similarity_search("animals", k=5)) == ["a", "b", "c"]
    again.close()
    with pytest.raises(InvalidInput):
        EmbedstackVectorStore.from_texts(["x"], emb)


def test_a_langchain_encoder_normalizes_and_checks_its_vectors() -> None:
    fake = DeterministicFakeEmbedding(size=8)
    enc = LangChainEncoder(fake, name="fake-8")
    vecs = enc.encode_documents(["a", "b"])
    assert vecs.shape == (2, 8)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, rtol=1e-5)
    assert enc.model_id.startswith("langchain:fake-8@")

    class Broken(Embeddings):
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return [[0.0] * 8 for _ in texts]

        def embed_query(self, text: str) -> list[float]:
            return [1.0] * 8

    with pytest.raises(InvalidInput):
        LangChainEncoder(Broken()).encode_documents(["a"])
    with pytest.raises(InvalidInput):
        LangChainEncoder(Broken(), dim=4).encode_queries(["a"])
    with pytest.raises(InvalidInput):
        LangChainEncoder("nope")  # type: ignore[arg-type]


def test_document_round_trip_keeps_id_text_and_metadata(tmp_path: Path) -> None:
    store = _store(tmp_path)
    (doc,) = store.get_by_ids(["d1"])
    assert doc == Document(id="d1", page_content="dogs bark at the mailman",
                           metadata={"animal": "dog", "year": 2021})  # fmt: skip
    store.delete(["d1", "missing"])
    assert store.get_by_ids(["d1", "c1"])[0].id == "c1"
    store.close()
