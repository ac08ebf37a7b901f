"""A LangChain ``VectorStore`` over an embedstack :class:`~embedstack.index.Index`.

It uses only the index's public API (``upsert``, ``delete``, ``get``, ``search``), so it
works over every backend ``Index.create``/``Index.open`` route to (a local folder, or an
engine URI). Needs the ``langchain`` extra. Import through
:mod:`embedstack.integrations.langchain`.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from embedstack.errors import DimensionMismatch, IndexNotFound, InvalidInput, require
from embedstack.index import Hit, Index
from embedstack.index.protocols import SearchOptions
from embedstack.integrations._encoders import QueryVectors

require("langchain_core", "langchain", "the LangChain adapters")

from langchain_core.documents import Document  # noqa: E402 - after the extra's check
from langchain_core.embeddings import Embeddings  # noqa: E402
from langchain_core.vectorstores import VectorStore  # noqa: E402

from embedstack.integrations.langchain_embeddings import (  # noqa: E402
    EmbedstackEmbeddings,
    as_text_encoder,
    relevance,
)

__all__ = ["EmbedstackVectorStore"]


class EmbedstackVectorStore(VectorStore):
    """A LangChain ``VectorStore`` whose storage and search are an embedstack ``Index``.

    A LangChain document becomes an index document ``{"id", "text": page_content,
    "metadata"}``: the index chunks and embeds it with its own encoder (with the model's
    document prefix) and keeps the metadata as JSON. Adding a document whose id is stored
    replaces it (an upsert), so adding the same documents twice stores them once. Searches
    are dense (cosine) unless ``mode`` says otherwise (``"bm25"``, ``"hybrid"``, ...),
    and ``filter`` is embedstack's metadata filter language, passed through unchanged
    (``{"year": {"$gte": 2020}}``; see :mod:`embedstack.index.filters`).

    The store serializes calls to the index with a lock, so LangChain's async methods
    (which run the sync ones in worker threads) are safe. It does not close an index it was
    given; :meth:`close` does.

    Search by vector (:meth:`similarity_search_by_vector`) runs the index's own dense
    retriever with the given vector in place of an encoded query: the store opens a second,
    read-only handle on the same index (same folder or URI) whose encoder serves that
    vector, on first use, and closes it with :meth:`close`.

    Args:
        index: an open, writable :class:`~embedstack.index.Index` (any backend).
        embedding: the LangChain embeddings reported by :attr:`embeddings`; None reports an
            :class:`EmbedstackEmbeddings` over the index's own encoder. The index always
            embeds with its own encoder: pass one that wraps the same model.

    Raises:
        InvalidInput: ``index`` is not an Index.

    Example:
        >>> from embedstack.integrations.langchain import EmbedstackVectorStore
        >>> store = EmbedstackVectorStore(Index.create(tmp / "idx"))      # doctest: +SKIP
        >>> store.add_texts(["Cats purr."], metadatas=[{"year": 2021}], ids=["d1"])
        ['d1']                                                             # doctest: +SKIP
        >>> store.similarity_search("kitten", k=1, filter={"year": 2021})[0].id
        'd1'                                                               # doctest: +SKIP
    """

    def __init__(self, index: Index, embedding: Embeddings | None = None) -> None:
        for method in ("upsert", "delete", "get", "search"):
            if not callable(getattr(index, method, None)):
                raise InvalidInput(f"index must be an embedstack Index, got {type(index).__name__}")
        self.index = index
        self._embedding = embedding
        self._lock = threading.RLock()
        self._by_vector: tuple[Index, QueryVectors] | None = None

    @property
    def embeddings(self) -> Embeddings:
        """The query embeddings: those given, or the index's own encoder's."""
        if self._embedding is None:
            self._embedding = EmbedstackEmbeddings(self.index.encoder)
        return self._embedding

    def close(self) -> None:
        """Close the index (idempotent)."""
        with self._lock:
            if self._by_vector is not None:
                self._by_vector[0].close()
                self._by_vector = None
            self.index.close()

    # --- writes ----------------------------------------------------------------------------

    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: Sequence[str | None] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Add or replace texts as one atomic batch; returns their ids.

        Args:
            texts: the documents' texts (non-blank).
            metadatas: one JSON-serialisable dict per text, or None.
            ids: one id per text; a missing or None id gets a new random one.
            **kwargs: ``title`` (one str per text) is also accepted.

        Raises:
            InvalidInput: lengths that differ, a blank text, metadata that is not JSON, an
                id repeated in the batch, or an unknown keyword. Nothing is written.
        """
        items = list(texts)
        titles = kwargs.pop("titles", None)
        if kwargs:
            raise InvalidInput(f"unknown keyword(s) {sorted(kwargs)}: add_texts takes titles=")
        for name, given in (("metadatas", metadatas), ("ids", ids), ("titles", titles)):
            if given is not None and len(given) != len(items):
                raise InvalidInput(f"{len(given)} {name} for {len(items)} texts")
        doc_ids = [str(i) if i else uuid.uuid4().hex for i in (ids or [None] * len(items))]
        docs = [
            {"id": doc_id, "text": text, "metadata": dict(metadatas[n]) if metadatas else {},
             "title": titles[n] if titles else ""}
            for n, (doc_id, text) in enumerate(zip(doc_ids, items, strict=True))
        ]  # fmt: skip
        if docs:
            with self._lock:
                self.index.upsert(docs)
        return doc_ids

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        """Delete documents by id; ids the index does not hold are ignored.

        Returns:
            True (the deletion is one atomic batch).

        Raises:
            InvalidInput: ``ids`` None (deleting everything is not offered), or an unknown
                keyword.
        """
        if kwargs:
            raise InvalidInput(f"unknown keyword(s) {sorted(kwargs)} for delete")
        if ids is None:
            raise InvalidInput("pass the ids to delete; deleting everything is not offered")
        with self._lock:
            present = [i for i in dict.fromkeys(ids) if self.index.get(i) is not None]
            if present:
                self.index.delete(present)
        return True

    # --- reads -----------------------------------------------------------------------------

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """The stored documents among ``ids`` (missing ones are left out), in ``ids`` order."""
        out = []
        with self._lock:
            for doc_id in dict.fromkeys(ids):
                stored = self.index.get(doc_id)
                if stored is not None:
                    out.append(Document(id=stored["id"], page_content=stored["text"],
                                        metadata=stored.get("metadata") or {}))  # fmt: skip
        return out

    def _hits(self, query: str, k: int, filter: dict[str, Any] | None, **kwargs: Any) -> list[Hit]:
        kwargs.setdefault("mode", "dense")
        options = SearchOptions.build(None, k=k, filter=filter, **kwargs)
        with self._lock:
            return self.index.search(query, options)

    def similarity_search_with_score(
        self,
        query: str,
        k: int = 4,
        filter: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[tuple[Document, float]]:
        """The ``k`` best documents with their scores (cosine in ``mode="dense"``).

        Args:
            query: a non-blank query.
            k: how many documents at most.
            filter: an embedstack metadata filter (``{"lang": "en"}``).
            **kwargs: other :class:`~embedstack.SearchOptions` fields (``mode``, ...).

        Raises:
            InvalidInput: a blank query, a bad option or filter, a filter on a key no
                document has.
        """
        return [(_document(h), h.score) for h in self._hits(query, k, filter, **kwargs)]

    def similarity_search(
        self, query: str, k: int = 4, filter: dict[str, Any] | None = None, **kwargs: Any
    ) -> list[Document]:
        """The ``k`` best documents; see :meth:`similarity_search_with_score`."""
        return [doc for doc, _ in self.similarity_search_with_score(query, k, filter, **kwargs)]

    def _select_relevance_score_fn(self) -> Any:
        return relevance  # the dense score is a cosine similarity

    def similarity_search_with_score_by_vector(
        self,
        embedding: Sequence[float],
        k: int = 4,
        filter: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[tuple[Document, float]]:
        """The ``k`` best documents for a query vector, with their cosine scores.

        The index's dense retriever ranks them exactly as a text query encoded to this
        vector: each document scores its best chunk (the vector is L2-normalized first),
        filters apply before top-k, HNSW where the index has it.

        Args:
            embedding: ``(dim,)`` floats in the index's vector space (e.g. from
                :attr:`embeddings`' ``embed_query``); the index's full model dimension is
                truncated as the index truncates its queries.
            k, filter: as :meth:`similarity_search_with_score`.
            **kwargs: other :class:`~embedstack.SearchOptions` fields; ``mode`` may only
                be ``"dense"`` (the other retrievers need the query text).

        Raises:
            DimensionMismatch: a vector of another length than the index's dimension (or
                its model's full one).
            InvalidInput: a vector that is not finite or is all zeros, another ``mode``, a
                bad option or filter.
        """
        if kwargs.setdefault("mode", "dense") != "dense":
            raise InvalidInput(f"search by vector runs the dense retriever only, not mode="
                               f"{kwargs['mode']!r}: pass the query text for it")  # fmt: skip
        options = SearchOptions.build(None, k=k, filter=filter, **kwargs)
        vec = self._query_vector(embedding)
        with self._lock:
            handle, served = self._vector_handle()
            served.serve(vec)
            try:
                hits = handle.search("query vector", options)
            finally:
                served.serve(None)
        return [(_document(h), h.score) for h in hits]

    def similarity_search_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        filter: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        """The ``k`` best documents for a query vector; see
        :meth:`similarity_search_with_score_by_vector`."""
        found = self.similarity_search_with_score_by_vector(embedding, k, filter, **kwargs)
        return [doc for doc, _ in found]

    def _query_vector(self, embedding: Sequence[float]) -> np.ndarray:
        try:
            vec = np.asarray(embedding, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"embedding must be a sequence of floats ({exc})") from None
        full = int(self.index.manifest["encoder"]["full_dim"])
        if vec.ndim != 1 or len(vec) not in (self.index.dim, full):
            raise DimensionMismatch(f"a query vector of shape {vec.shape}; the index holds "
                                    f"{self.index.dim}-d vectors")  # fmt: skip
        norm = float(np.linalg.norm(vec)) if np.all(np.isfinite(vec)) else 0.0
        if not norm > 0:
            raise InvalidInput("a query vector must be finite and not all zeros")
        return (vec / norm).astype(np.float32)

    def _vector_handle(self) -> tuple[Index, QueryVectors]:
        """The read-only handle whose encoder serves query vectors (opened once)."""
        if self._by_vector is None:
            served = QueryVectors(self.index.encoder)
            where = getattr(self.index, "uri", None) or self.index.path
            handle = Index.open(where, encoder=served, readonly=True)
            self._by_vector = (handle, served)
        return self._by_vector

    # --- construction ----------------------------------------------------------------------

    @classmethod
    def from_texts(
        cls,
        texts: list[str],
        embedding: Embeddings,
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        path: str | os.PathLike[str] | None = None,
        **index_options: Any,
    ) -> EmbedstackVectorStore:
        """Open the index at ``path`` (creating it when there is none) and add ``texts``.

        Args:
            texts, metadatas, ids: as :meth:`add_texts`.
            embedding: the model: an :class:`EmbedstackEmbeddings` stores its encoder's
                vectors; any other LangChain ``Embeddings`` is wrapped as a
                :class:`~embedstack.integrations.langchain.LangChainEncoder`.
            path: the index's folder or URI (required).
            **index_options: keywords of :meth:`Index.create` (``precision``, ``ann``, ...).

        Raises:
            InvalidInput: no ``path``, or invalid texts or options.
            ModelMismatch: an existing index built with another model.
        """
        if path is None:
            raise InvalidInput("from_texts needs path=: the index's folder (or URI)")
        encoder = as_text_encoder(embedding)
        try:
            index = Index.open(path, encoder=encoder)
        except IndexNotFound:
            index = Index.create(path, encoder=encoder, **index_options)
        store = cls(index, embedding)
        try:
            store.add_texts(texts, metadatas, ids=ids)
        except BaseException:
            index.close()
            raise
        return store


def _document(hit: Hit) -> Document:
    return Document(id=hit.doc_id, page_content=hit.text, metadata=dict(hit.metadata))
