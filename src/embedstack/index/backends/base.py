"""The engine seam: what a storage engine implements to hold an embedstack index.

Design note (PostgreSQL + pgvector, Milvus, and whatever comes next)
--------------------------------------------------------------------

An index in an engine is the same object to its users as a local one: ``Index.create(uri,
…)`` / ``Index.open(uri)`` return a :class:`~embedstack.index.backends.remote.RemoteIndex`,
a subclass of :class:`~embedstack.index.Index` with the same public methods (add, upsert,
delete, get, search, search_many, dense_scores, stats, check, compact, close), so
pipelines, the CLI and the server run on it unchanged. The work splits in two:

* **RemoteIndex (written once, engine-independent)** does everything that must be
  *identical* across engines: argument and document validation (``_validate``), the
  manifest (``_setup.new_manifest``: model id, dims, chunking, BM25 parameters) and the
  encoder check on open (``ModelMismatch`` / ``DimensionMismatch``), unchanged-content
  detection by content hash, chunking (``_embedding.Chunker`` with the recorded window),
  encoding (float32, L2-normalized, Matryoshka truncation as the local dense field), BM25
  analysis (``tokenize.Analyzer``: the same stems for documents and queries), filter
  validation (``filters.compile_filter``: same errors for the same bad filters), hybrid
  fusion (``embedstack.fusion`` over each retriever's list, ties by doc id) and building
  :class:`~embedstack.index.Hit` objects.
* **A Store (one per engine, this module's ABC)** keeps and searches what RemoteIndex hands
  it: documents with metadata, chunks with their vectors, and each document's BM25 term
  frequencies. It owns durability, atomicity (one ``write`` or ``delete`` call is all or
  nothing), concurrency between processes, the filter language's evaluation (a filter dict
  already validated; a key no live document has raises ``InvalidInput``), and the exact
  ranking contract below.

Ranking contract (what makes scores comparable to the local index):

* ``search_dense``: each document scores the MAX over its chunks of ``query · vector``
  (vectors are L2-normalized, so this is the cosine); the ``k`` best documents, sorted by
  score descending then doc id ascending (code-point order); filters apply BEFORE top-k, so
  ``min(k, matching docs)`` come back even with an approximate (HNSW) index.
* ``search_bm25``: Lucene BM25 (see :mod:`embedstack.index.lexical_scoring`) with ``N``,
  ``df`` and ``avgdl`` from the LIVE documents at query time; a query term repeated ``c``
  times counts ``c`` times; only documents sharing a term with the query score. Same sort
  and filter rules. A store that cannot do this exactly documents the difference and the
  contract suite (``tests/contract``) marks it by name.
* ``search_sparse`` (stores with ``supports_sparse``; the index's manifest has a
  ``sparse`` record): each chunk scores the SPLADE dot product ``sum over shared terms of
  query weight × chunk weight`` (float64 sums of the float32 weights, as
  :mod:`embedstack.index.sparse`), each document the MAX over its chunks; only documents
  sharing a term with the query score. Same sort and filter rules as dense search.

A new engine: subclass :class:`Store`, add one line to
:data:`embedstack.index.backends.SCHEMES`, one entry to ``BACKENDS`` (and its documented
differences to ``DIFFERENCES``) in ``tests/contract/_backends.py``, and the fixture making
fresh targets to ``tests/contract/conftest.py``. Import the engine's client inside the
store module only (``import embedstack`` stays light) and raise
:class:`~embedstack.errors.MissingDependency` naming the extra when it is missing. The URI
is the store's: PostgreSQL takes the index name from ``?index=NAME`` (one schema per
index); choose what fits the engine and document it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from embedstack._typing import FloatArray
from embedstack.encoders.sparse_vectors import SparseVectors
from embedstack.errors import InvalidInput

__all__ = ["Ranked", "Store", "StoredChunk", "StoredDoc", "StoreStats"]


@dataclass(frozen=True)
class StoredDoc:
    """One document to store.

    Attributes:
        id, title, text: as given (validated).
        metadata_json: the metadata as canonical JSON (``sort_keys``), ``"{}"`` when none.
        content_hash: sha256 of title, text and metadata (unchanged upserts are skipped).
        terms: BM25 stems of ``title + " " + text`` → term frequency.
        length: BM25 document length (``sum(terms.values())``).
    """

    id: str
    title: str
    text: str
    metadata_json: str
    content_hash: str
    terms: dict[str, int]
    length: int


@dataclass(frozen=True)
class StoredChunk:
    """One chunk: ``text[start:end]`` of ``docs[doc]``; its vector is the row of the same
    position in the batch's vectors."""

    doc: int
    chunk_no: int
    start: int
    end: int


@dataclass(frozen=True)
class Ranked:
    """One document a store ranked: its id and score, and for dense search the best chunk
    (its number and character span in the text), else None."""

    doc_id: str
    score: float
    chunk: tuple[int, int, int] | None = None


@dataclass(frozen=True)
class StoreStats:
    """What :meth:`Store.stats` reports (see :class:`~embedstack.index.IndexStats`)."""

    n_docs: int
    n_chunks: int
    n_deleted: int
    bytes: dict[str, int]
    segments: int


class Store(ABC):
    """An engine holding one index; see the module docstring for the contract.

    Attributes:
        manifest: the index's manifest (as ``Index.manifest``), read at open.
        location: where it is, for messages (a URI without its password).
        readonly: opened for search only (writes raise ``InvalidInput``).
    """

    manifest: dict[str, Any]
    location: str
    readonly: bool
    #: whether the engine stores learned-sparse (SPLADE) chunk vectors: ``write`` takes
    #: ``sparse=`` and :meth:`search_sparse` answers when the manifest has a sparse record.
    supports_sparse: ClassVar[bool] = False
    #: whether several processes may write the index at once (each write still atomic):
    #: Ray ingestion then writes from its actors in parallel.
    concurrent_writers: ClassVar[bool] = False

    @classmethod
    @abstractmethod
    def create(cls, uri: str, manifest: dict[str, Any]) -> Store:
        """Create an empty index at ``uri`` recording ``manifest``.

        Raises:
            InvalidInput: an index already exists there, or a bad URI.
            MissingDependency: the engine's client is not installed.
        """

    @classmethod
    @abstractmethod
    def open(cls, uri: str, readonly: bool) -> Store:
        """Open the index at ``uri``.

        Raises:
            IndexNotFound: no index there.
            IndexCorrupt: the stored manifest is unreadable.
        """

    @abstractmethod
    def existing(self, ids: Sequence[str]) -> dict[str, str]:
        """``{id: content_hash}`` of the ``ids`` the index holds."""

    @abstractmethod
    def write(self, docs: Sequence[StoredDoc], chunks: Sequence[StoredChunk],
              vectors: FloatArray, *, replace: bool,
              sparse: SparseVectors | None = None) -> None:  # fmt: skip
        """Store a batch atomically; ``vectors`` is ``(len(chunks), dim)`` float32,
        L2-normalized. ``replace``: documents with the same ids are replaced in the same
        transaction; otherwise an existing id raises InvalidInput and nothing is written.
        ``sparse``: the chunks' SPLADE vectors (row ``i`` = chunk ``i``), given exactly when
        the manifest has a sparse record."""

    @abstractmethod
    def delete(self, ids: Sequence[str]) -> int:
        """Delete documents atomically; an id not held raises InvalidInput (nothing
        deleted)."""

    @abstractmethod
    def docs(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """``{id: {"id", "title", "text", "metadata"}}`` of the ``ids`` held."""

    @abstractmethod
    def search_dense(self, queries: FloatArray, k: int,
                     flt: dict[str, Any] | None) -> list[list[Ranked]]:  # fmt: skip
        """Per query (``(nq, dim)`` float32, L2-normalized), the ``k`` best documents."""

    @abstractmethod
    def search_bm25(self, queries: Sequence[Sequence[str]], k: int,
                    flt: dict[str, Any] | None) -> list[list[Ranked]]:  # fmt: skip
        """Per query (its analysed stems, repeats kept), the ``k`` best documents."""

    def search_sparse(self, queries: SparseVectors, k: int,
                      flt: dict[str, Any] | None) -> list[list[Ranked]]:  # fmt: skip
        """Per query (SPLADE weights, one row each), the ``k`` best documents by max chunk
        dot product (stores with ``supports_sparse``; the default refuses)."""
        raise InvalidInput(f"{self.location}: this engine stores no sparse vectors")

    @abstractmethod
    def dense_scores(self, query: FloatArray, ids: Sequence[str]) -> dict[str, float]:
        """``{id: max over its chunks of query · vector}`` for the ``ids`` held."""

    @abstractmethod
    def count(self) -> int:
        """Live documents."""

    @abstractmethod
    def stats(self) -> StoreStats:
        """Sizes of the stored index."""

    @abstractmethod
    def check(self) -> None:
        """Verify the stored index; raises IndexCorrupt naming what is wrong."""

    @abstractmethod
    def compact(self) -> None:
        """Reclaim the space of deleted and replaced documents."""

    @abstractmethod
    def close(self) -> None:
        """Release connections (idempotent)."""
