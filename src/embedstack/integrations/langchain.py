"""LangChain adapters (extra ``langchain``): embeddings and a vector store over embedstack.

- :class:`EmbedstackEmbeddings`: a LangChain ``Embeddings`` over an embedstack encoder,
  with the model's query and document prefixes.
- :class:`EmbedstackVectorStore`: a LangChain ``VectorStore`` over any
  :class:`~embedstack.index.Index` (a local folder or an engine URI).
- :class:`LangChainEncoder`: any LangChain ``Embeddings`` as an embedstack encoder, so an
  index can store its vectors.

Both pass LangChain's own standard test suites (``langchain-tests``: ``EmbeddingsUnitTests``,
``EmbeddingsIntegrationTests``, ``VectorStoreIntegrationTests``; see
``tests/test_langchain.py``).

Example:
    >>> from embedstack.integrations.langchain import EmbedstackEmbeddings, EmbedstackVectorStore
    >>> store = EmbedstackVectorStore.from_texts(                          # doctest: +SKIP
    ...     ["Cats purr.", "Dogs bark."], EmbedstackEmbeddings(), path="idx")
    >>> store.similarity_search("kitten", k=1)[0].page_content             # doctest: +SKIP
    'Cats purr.'
"""

from __future__ import annotations

from embedstack.integrations.langchain_embeddings import EmbedstackEmbeddings, LangChainEncoder
from embedstack.integrations.langchain_vectorstore import EmbedstackVectorStore

__all__ = ["EmbedstackEmbeddings", "EmbedstackVectorStore", "LangChainEncoder"]
