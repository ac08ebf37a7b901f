"""The LangChain vector store over every backend: search by vector ranks as the text query
it encodes (the store's read-only second handle opens the same folder or URI)."""

from __future__ import annotations

import pytest
from _backends import Backend
from test_contract_api import corpus

pytest.importorskip("langchain_core")

from embedstack.integrations.langchain import EmbedstackVectorStore  # noqa: E402


def test_search_by_vector_equals_search_by_text(backend: Backend) -> None:
    idx = backend.create()
    store = EmbedstackVectorStore(idx)
    store.add_texts([d["text"] for d in corpus(12)], [d["metadata"] for d in corpus(12)],
                    ids=[d["id"] for d in corpus(12)])  # fmt: skip
    for query, flt in (("cat protein", None), ("dogs running", {"tag": "b"})):
        vec = store.embeddings.embed_query(query)
        by_text = store.similarity_search_with_score(query, k=5, filter=flt)
        by_vec = store.similarity_search_with_score_by_vector(vec, k=5, filter=flt)
        assert [d.id for d, _ in by_vec] == [d.id for d, _ in by_text]
        assert [s for _, s in by_vec] == pytest.approx([s for _, s in by_text], abs=1e-6)
    store.add_texts(["purr purr purr"], ids=["late"])
    assert store.similarity_search_by_vector(store.embeddings.embed_query("purr"), k=1)[0].id \
        == "late"  # fmt: skip
    store.close()
