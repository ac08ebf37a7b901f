"""Adapters to other ecosystems, and distributed ingestion: an edge layer, like ``cli/`` and
``server/``.

Each module needs an optional extra and is imported only when asked for by name, so
``import embedstack`` never loads LangChain, LlamaIndex or Ray:

- :mod:`embedstack.integrations.langchain`: ``EmbedstackEmbeddings`` (a LangChain
  ``Embeddings`` over an embedstack encoder) and ``EmbedstackVectorStore`` (a LangChain
  ``VectorStore`` over any :class:`~embedstack.index.Index`); extra ``langchain``.
- :mod:`embedstack.integrations.llamaindex`: ``EmbedstackEmbedding`` (a LlamaIndex
  ``BaseEmbedding``); extra ``llamaindex``.
- :mod:`embedstack.integrations.ray_ingest`: ``ingest()``, reading, chunking and encoding a
  corpus on a Ray cluster and writing it to an index; extra ``ray``.

These modules use only the library's public surface (encoders, ``Index``) plus, for Ray, the
index's own chunker and the document readers of :mod:`embedstack.index.sources`, so that
every path produces the same chunks and ids.
"""

from __future__ import annotations

__all__: list[str] = []
