"""The :class:`Index`: documents in SQLite plus a list of retriever fields, in one directory.

Layout::

    manifest.json   encoder (name, model_id, dims), precision, BM25 and chunking parameters
    docs.sqlite     documents, chunks, segment registry — the source of truth
    dense/          seg-NNNNNN*.npy vector segments, one per add batch; hnsw-*.faiss graph
    sparse/         SPLADE postings of the same chunks (``sparse=``; :mod:`.sparse`)
    colbert/        ColBERT token vectors of the same chunks (``colbert=``; :mod:`.late`)
    lexical/        a LexicalIndex (BM25) keyed by SQLite keys, segments merged in tiers
    write.lock      held (flock) by the one writer, who writes its pid and command line
                    into it; readers take no lock

Each of ``dense/``, ``sparse/``, ``colbert/`` and ``lexical/`` is one *field*
(:mod:`embedstack.index.fields`); the index composes them through the field protocol and
never reads their internals, so the steps below are written once, over the list.

Commit protocol (a crash at any point leaves the last committed state):

* **add / upsert**: validate the whole batch; every field encodes it (prepare); reserve keys
  and a segment number in SQLite; every field writes it uncommitted (dense, sparse, ColBERT
  segment files, fsynced and unregistered; BM25 last, its own atomic manifest flip); then
  ONE SQLite transaction inserts the documents and chunks, registers the segment and
  removes replaced documents — the commit point. A failure before it discards the batch
  from every field. Replaced documents are removed from the fields (BM25 tombstones)
  afterwards.
* **delete**: the SQLite transaction first (commit point), the fields' removals after.
* **recovery**: a writer opening the index has every field delete what SQLite does not
  register (BM25 documents SQLite does not have, unregistered segment files). Readers mask
  every result by the keys SQLite has, so they never see uncommitted data.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from embedstack._typing import FloatArray, Precision
from embedstack.chunking import ChunkingParams
from embedstack.encoders import TextEncoder
from embedstack.encoders.multivector import TokenPrecision
from embedstack.encoders.splade import SparseTextEncoder
from embedstack.errors import InvalidInput
from embedstack.index import _maintenance, _writes, late_model, readahead
from embedstack.index._setup import Parts, create_parts, open_parts, recorded_chunker
from embedstack.index._state import load_snapshot, reload, version
from embedstack.index._types import AddResult, BM25Params, Hit, IndexStats
from embedstack.index.backends import routed
from embedstack.index.docstore import DocStore
from embedstack.index.fields.base import Field, Snapshot
from embedstack.index.fields.local import not_stored
from embedstack.index.protocols import SearchOptions, SearchPlan
from embedstack.index.rescoring import check_request, rescore
from embedstack.index.search import check_plan, check_queries, search_many

__all__ = ["Index"]


class Index:
    """A hybrid (dense + BM25) retrieval index in a directory; see the module docstring.

    Build one with :meth:`create`, reopen it with :meth:`open`. One writer at a time (a
    second one gets :class:`IndexLocked`); any number of ``readonly`` readers, which see
    each committed write on their next call. Not thread-safe: use one object per thread.
    It implements :class:`~embedstack.index.protocols.Searchable`.

    Example:
        >>> idx = Index.create(tmp / "idx", encoder="all-MiniLM-L6-v2")      # doctest: +SKIP
        >>> idx.add([{"id": "d1", "text": "Cats purr.", "metadata": {"year": 2021}}])
        AddResult(added=1, updated=0, unchanged=0, chunks=1)                  # doctest: +SKIP
        >>> idx.search("kitten", mode="hybrid", k=1)[0].doc_id               # doctest: +SKIP
        'd1'
    """

    def __init__(self, path: Path, meta: dict[str, Any], encoder: TextEncoder,
                 store: DocStore, fields: list[Field], snap: Snapshot | None,
                 lock_fd: int | None) -> None:  # fmt: skip
        self.path = path
        self.manifest = meta
        self.encoder = encoder
        self.readonly = lock_fd is None
        self.precision: str = meta["precision"]
        self.dim: int = int(meta["encoder"]["dim"])
        self.ann: str | None = meta["ann"]
        self._store = store
        self._fields = fields
        self._lock_fd = lock_fd
        self._chunker = recorded_chunker(encoder, meta)
        self._known_keys: set[str] = set()
        self._closed = False
        self._use(load_snapshot(store, fields) if snap is None else snap)  # sets self._snap

    # --- lifecycle ---------------------------------------------------------------------------

    @classmethod
    @routed  # a URI (postgresql://…) goes to its engine, see embedstack.index.backends
    def create(
        cls,
        path: str | os.PathLike[str],
        *,
        encoder: str | TextEncoder = "all-MiniLM-L6-v2",
        dim: int | None = None,
        precision: Precision = "float32",
        bm25: BM25Params = BM25Params(),  # noqa: B008 - frozen dataclass
        chunking: ChunkingParams = ChunkingParams(),  # noqa: B008 - frozen dataclass
        ann: Literal["hnsw"] | None = None,
        encoder_options: dict[str, Any] | None = None,
        sparse: str | SparseTextEncoder | None = None,
        sparse_options: dict[str, Any] | None = None,
        colbert: str | os.PathLike[str] | late_model.LateEncoder | None = None,
        colbert_options: dict[str, Any] | None = None,
        colbert_precision: TokenPrecision = "float16",
    ) -> Index:
        """Create an empty index in ``path`` (a new or empty directory).

        Args:
            path: the index directory.
            encoder: a registry name (loaded with ``encoder_options``) or a TextEncoder.
            dim: store vectors truncated to this Matryoshka dimension (Kusupati et al.
                2022), ``1 <= dim <= encoder.dim``; None keeps the full dimension.
            precision: ``"float32"``, ``"int8"`` or ``"binary"`` (with int8 rescoring).
            bm25: BM25 parameters.
            chunking: chunk window; the effective window (capped by the encoder's
                ``max_length`` minus special tokens, see
                :func:`~embedstack.chunking.effective_window`) is recorded in the manifest.
            ann: None for exact dense search, ``"hnsw"`` for a faiss HNSW graph.
            encoder_options: keyword options for :func:`load_encoder`, recorded so that
                :meth:`open` loads the same encoder.
            sparse: also store SPLADE postings of every chunk (``mode="sparse"``): a sparse
                model name (``"splade-tiny"``), a masked-LM folder, or a SparseEncoder.
            sparse_options: its keyword options, recorded like ``encoder_options``.
            colbert: also store ColBERT token vectors of every chunk (:meth:`colbert_scores`):
                a model name or folder, or a LateInteractionEncoder (its settings recorded).
            colbert_options: its keyword options, recorded like ``encoder_options``.
            colbert_precision: ``"float16"`` (default; the SciFact nDCG@10 of float32 at
                half the bytes), ``"float32"`` or ``"int8"`` (per-token scale).

        Raises:
            InvalidInput: ``path`` is not empty, or an argument is invalid.
            DimensionMismatch: ``dim`` larger than the encoder's.
        """
        return cls._assemble(create_parts(
            Path(path), encoder=encoder, dim=dim, precision=precision, bm25=bm25,
            chunking=chunking, ann=ann, encoder_options=encoder_options, sparse=sparse,
            sparse_options=sparse_options, colbert=colbert, colbert_options=colbert_options,
            colbert_precision=colbert_precision,
        ))  # fmt: skip

    @classmethod
    @routed
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        encoder: str | TextEncoder | None = None,
        readonly: bool = False,
        sparse: str | SparseTextEncoder | None = None,
        colbert: str | os.PathLike[str] | late_model.LateEncoder | None = None,
    ) -> Index:
        """Open an existing index.

        Args:
            path: the index directory.
            encoder: None loads the recorded encoder by name (with its recorded options);
                a name or TextEncoder must have the recorded model_id and dimension.
            readonly: search only, without taking the write lock.
            sparse, colbert: None loads the recorded model when first needed; a name or
                encoder must have the recorded model_id (ColBERT: dimension, settings too).

        Raises:
            IndexNotFound: no directory at ``path``.
            IndexCorrupt: not an index, or unreadable parts.
            IndexLocked: another writer holds the lock (only when not ``readonly``).
            DimensionMismatch: the encoder's dimension differs from the recorded one.
            ModelMismatch: the encoder's (or the sparse or ColBERT model's) model_id differs
                from the recorded one.
        """
        with readahead.deferred():  # mapped files are asked for once opening has read its own
            return cls._assemble(open_parts(Path(path), encoder, readonly, sparse, colbert))

    @classmethod
    def _assemble(cls, parts: Parts) -> Index:
        try:
            return cls(*parts)
        except BaseException:
            if parts[-1] is not None:  # the write lock
                os.close(parts[-1])
            raise

    def close(self) -> None:
        """Release the write lock and the database connection (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for f in self._fields if self._lock_fd is not None else ():  # writers flush caches
            f.close()
        self._store.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        self._refresh()
        return len(self._snap.live)

    # --- fields and state --------------------------------------------------------------------

    @property
    def fields(self) -> tuple[Field, ...]:
        """The index's retriever fields (dense first, BM25 last)."""
        return tuple(self._fields)

    def field(self, name: str) -> Field:
        """The field named ``name`` (``"dense"``, ``"bm25"``, ``"sparse"``, ``"colbert"``).
        Raises InvalidInput (saying how to store it) when the index has no such field.
        """
        found = next((f for f in self._fields if f.name == name), None)
        if found is None:
            raise not_stored(self.path, name)
        return found

    def _use(self, snap: Snapshot) -> None:
        for f in self._fields:
            f.refresh(snap)
        snap.version = version(self._store, self._fields)
        self._snap = snap
        self._known_keys.clear()

    def _reload(self) -> None:
        reload(self._store, self._fields, self._use)  # retried past a writer's merge

    def _check_open(self) -> None:
        if self._closed:
            raise InvalidInput(f"the index at {self.path} is closed")

    def _refresh(self) -> None:
        """Readers: reload when another process committed since the last call."""
        self._check_open()
        if self.readonly and version(self._store, self._fields) != self._snap.version:
            self._reload()

    def _writable(self) -> None:
        self._check_open()
        if self.readonly:
            raise InvalidInput(f"{self.path} was opened readonly; open it without readonly")

    # --- writes ------------------------------------------------------------------------------

    def add(self, docs: Iterable[dict[str, Any]]) -> AddResult:
        """Add new documents as one atomic batch.

        Args:
            docs: ``{"id": str, "text": str, "title"?: str, "metadata"?: dict}`` items.

        Returns:
            :class:`AddResult` with ``added`` and ``chunks``.

        Raises:
            InvalidInput: a bad item (named by position), an id repeated in the batch, or an
                id already in the index (use :meth:`upsert`). Nothing is written.
        """
        self._writable()
        return self._write([_writes.plan(self._store, docs, replace=False)])[0]

    def upsert(self, docs: Iterable[dict[str, Any]]) -> AddResult:
        """Add new documents and replace changed ones, as one atomic batch.

        A document whose content hash (sha256 of title, text and metadata) equals the
        stored one is skipped and not re-embedded.

        Raises:
            InvalidInput: as :meth:`add`, except that existing ids are allowed.
        """
        self._writable()
        return self._write([_writes.plan(self._store, docs, replace=True)])[0]

    def upsert_many(self, batches: Sequence[Iterable[dict[str, Any]]]) -> list[AddResult]:
        """Upsert several batches as ONE atomic write (the server's group commit); each
        batch's result is what :meth:`upsert` returns with the batches upserted in turn.
        Raises InvalidInput for a bad batch (``batch 2: ...``) or an id in two batches."""
        self._writable()
        return self._write(_writes.plan_many(self._store, batches))

    def _write(self, plans: list[_writes.Plan]) -> list[AddResult]:
        snap = self._snap
        return _writes.commit(self._store, self._fields, self._chunker, snap, self._use, plans)

    def delete(self, ids: Iterable[str]) -> int:
        """Delete documents by id; returns how many were deleted.

        Raises:
            InvalidInput: an id not in the index (all are named, up to 5); nothing changes.
        """
        self._writable()
        keys = _writes.keys_of(self._store, ids)
        if not keys:
            return 0
        self._use(_writes.delete_batch(self._store, self._fields, self._snap, keys))
        return len(keys)

    # --- reads -------------------------------------------------------------------------------

    def get(self, doc_id: str) -> dict[str, Any] | None:
        """The stored document ``{"id", "title", "text", "metadata"}``, or None."""
        self._refresh()
        if not isinstance(doc_id, str):
            raise InvalidInput(f"doc_id must be str, got {type(doc_id).__name__}")
        return self._store.get(doc_id)

    def search(
        self,
        query: str,
        options: SearchOptions | None = None,
        *,
        pipeline: SearchPlan | None = None,
        **kwargs: Any,
    ) -> list[Hit]:
        """Search for one query; see :meth:`search_many` for ``options`` and keywords.

        ``pipeline`` runs a built retrieval pipeline instead of ``mode`` (any
        :class:`~embedstack.index.protocols.SearchPlan`, such as
        ``embedstack.pipeline.Pipeline(spec, index=index)``): ``k`` (10 unless given,
        whatever the pipeline's own ``k``) and ``filter`` apply, the other options do not.

        Raises InvalidInput as :meth:`search_many`, or for a ``pipeline`` not built (a name,
        string, dict or path).
        """
        if not isinstance(query, str):
            raise InvalidInput(f"a query must be str, got {type(query).__name__}")
        opts = SearchOptions.build(options, **kwargs)
        if pipeline is None:
            return self.search_many([query], opts)[0]
        return check_plan(pipeline).run(self, query, opts.k, filter=opts.filter or None)

    def search_many(
        self, queries: Sequence[str], options: SearchOptions | None = None, **kwargs: Any
    ) -> list[list[Hit]]:
        """Search several queries at once (query encoding is batched).

        Args:
            queries: non-blank query strings.
            options: a :class:`~embedstack.index.protocols.SearchOptions` (mode, k, filter,
                fusion, ...; each documented there); None takes its defaults (``mode``
                :data:`~embedstack.index.protocols.DEFAULT_MODE`, ``k=10``).
            **kwargs: the same fields as keywords, applied over ``options``
                (``search_many(qs, mode="dense", k=5)``).

        Returns:
            One list of at most ``k`` :class:`Hit` per query, best first.

        Raises:
            InvalidInput: an empty query, an invalid option or filter, a filter on a key no
                document has, or a retriever the index does not store.
        """
        opts = SearchOptions.build(options, **kwargs)
        qs = check_queries(queries)
        self._refresh()
        return search_many(self._store, self._snap, self.field, self._known_keys, qs, opts)

    def _rescore(self, name: str, query: str, ids: list[str], first_only: bool) -> FloatArray:
        return rescore(self._store, self._snap, self.field(name), query, ids, first_only)

    def dense_scores(self, query: str, doc_ids: Sequence[str]) -> np.ndarray:
        """Score given documents (ids, any order, repeats allowed) against a non-blank
        ``query`` with their stored chunk vectors: only the query is encoded; each document
        scores the maximum over its chunks, as in dense search (see
        :mod:`embedstack.index.rescoring`). Returns ``(len(doc_ids),)`` float32, ``-inf``
        for an id the index does not hold; raises InvalidInput for an empty query or a
        non-str id."""
        self._refresh()
        ids = check_request(query, doc_ids)
        if not ids:
            return np.zeros(0, dtype=np.float32)
        return self._rescore("dense", query, ids, first_only=False)

    @property
    def colbert_model(self) -> str | None:
        """The model_id of the stored ColBERT token vectors (None: created without)."""
        record = self.manifest.get("colbert")
        return str(record["model_id"]) if record else None

    def colbert_scores(
        self, query: str, doc_ids: Sequence[str], *, chunks: Literal["all", "first"] = "all"
    ) -> np.ndarray:
        """Score given documents against ``query`` by ColBERT MaxSim over their stored token
        vectors (Khattab & Zaharia 2020).

        Only the query is encoded and only the candidates' token rows are read; each
        document scores the maximum over its chunks (see :mod:`embedstack.index.late`). An
        index created with a split cross-encoder (:class:`~embedstack.rerank.SplitCrossEncoder`)
        stores its document states instead, and the score is that model's upper layers'.
        ``doc_ids`` and the result are as in :meth:`dense_scores`; ``chunks="first"``
        scores each document's first chunk only (title and the start of the text, the
        passage a cross-encoder reads), at a fraction of the cost for long documents.

        Raises:
            InvalidInput: as :meth:`dense_scores`, or an index created without ``colbert=``.

        Example:
            >>> idx.colbert_scores("do cats purr?", ["d1", "d2", "nope"])  # doctest: +SKIP
            array([21.3, 14.9, -inf], dtype=float32)
        """
        self._refresh()
        ids = check_request(query, doc_ids)
        if chunks not in ("all", "first"):
            raise InvalidInput(f"chunks must be 'all' or 'first', got {chunks!r}")
        self.field("colbert")
        if not ids:
            return np.full(0, -np.inf, dtype=np.float32)
        return self._rescore("colbert", query, ids, first_only=chunks == "first")

    # --- maintenance ---------------------------------------------------------------------------

    def stats(self) -> IndexStats:
        """Documents, chunks, pending deletions, bytes by component, segments, model."""
        self._refresh()
        return _maintenance.stats(self.path, self.manifest, self._fields, self._snap)

    def check(self) -> None:
        """Verify the whole index; raises :class:`IndexCorrupt` naming what is wrong."""
        self._check_open()
        fresh = load_snapshot(self._store, self._fields)
        _maintenance.check(self.path, self.manifest, self._store, fresh, self._fields)

    def compact(self) -> None:
        """Rewrite segments without dead rows in every field, merge BM25 segments and VACUUM
        SQLite, reclaiming the space of deleted and replaced documents."""
        self._writable()
        try:
            _maintenance.compact(self._store, self._fields, self._snap)
        finally:
            self._reload()

    def set_ann(self, ann: Literal["hnsw"] | None) -> None:
        """Switch dense search to an HNSW graph (``"hnsw"``: built once from the stored vectors
        and saved, nothing re-encoded) or to exact search (None: the graph's files go). Errors
        (a readonly index is InvalidInput): :func:`~embedstack.index._maintenance.set_ann`."""
        self._writable()
        self.manifest = _maintenance.set_ann(self.path, self.manifest, self.field("dense"), ann)
        self.ann = self.manifest["ann"]
