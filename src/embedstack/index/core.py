"""The :class:`Index`: documents in SQLite plus a list of retriever fields, in one directory.

Layout::

    manifest.json   encoder (name, model_id, dims), precision, BM25 and chunking parameters
    docs.sqlite     documents, chunks, segment registry — the source of truth
    dense/          seg-NNNNNN*.npy vector segments, one per add batch
    sparse/         seg-NNNNNN.*.npy SPLADE postings of the same chunks (indexes created
                    with ``sparse=``; see :mod:`embedstack.index.sparse`)
    colbert/        seg-NNNNNN.*.npy ColBERT token vectors of the same chunks (indexes
                    created with ``colbert=``; see :mod:`embedstack.index.late`)
    lexical/        a LexicalIndex (BM25) keyed by the documents' SQLite keys
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
from embedstack.errors import IndexNotFound, InvalidInput
from embedstack.index import _maintenance, _writes, late_model, manifest
from embedstack.index import sparse as sparse_index
from embedstack.index._embedding import Chunker
from embedstack.index._setup import check_create, new_manifest, open_encoders
from embedstack.index._state import chunk_args, load_snapshot, lock, resolve_encoder, version
from embedstack.index._types import AddResult, BM25Params, Hit, IndexStats
from embedstack.index._validate import check_ids, validate_docs
from embedstack.index.docstore import DocStore
from embedstack.index.fields.base import Field, Rescorer, Retriever, Snapshot
from embedstack.index.fields.local import create_fields, open_fields
from embedstack.index.protocols import SearchOptions, SearchPlan
from embedstack.index.rescoring import best_per_document, candidate_rows, check_request
from embedstack.index.search import active_retrievers, check_queries, search_many

__all__ = ["Index"]

_NOT_STORED = {"sparse": sparse_index.no_store, "colbert": late_model.no_store}


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
                 store: DocStore, fields: list[Field], lock_fd: int | None) -> None:  # fmt: skip
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
        self._chunker = Chunker(encoder, ChunkingParams(**chunk_args(meta)))
        # the recorded window wins: every batch of an index is chunked alike
        self._chunker.window = int(meta["chunking"]["effective_max_tokens"])
        self._chunker.overlap = int(meta["chunking"]["effective_overlap"])
        self._known_keys: set[str] = set()
        self._closed = False
        self._snap = Snapshot(np.zeros(0, np.int64), [])
        self._reload()

    # --- lifecycle ---------------------------------------------------------------------------

    @classmethod
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
            sparse: also store SPLADE postings of every chunk, for ``mode="sparse"`` and
                sparse hybrid retrievers: a sparse model name (``"splade-tiny"``), a
                masked-LM folder, or a :class:`~embedstack.encoders.splade.SparseEncoder`.
            sparse_options: keyword options for the SparseEncoder, recorded like
                ``encoder_options``.
            colbert: also store ColBERT token vectors of every chunk, for
                :meth:`colbert_scores` (late-interaction reranking with only the query
                encoded): a model name or folder, or a
                :class:`~embedstack.encoders.colbert.LateInteractionEncoder` (whose settings
                are recorded as its options).
            colbert_options: keyword options for the LateInteractionEncoder, recorded like
                ``encoder_options``.
            colbert_precision: stored precision of the token vectors: ``"float16"``
                (default; the same SciFact nDCG@10 as float32 at half the bytes),
                ``"float32"`` or ``"int8"`` (per-token scale).

        Raises:
            InvalidInput: ``path`` is not empty, or an argument is invalid.
            DimensionMismatch: ``dim`` larger than the encoder's.
        """
        path = Path(path)
        check_create(path, precision, ann, bm25, chunking)
        cenc, colbert_record = late_model.prepare(colbert, colbert_options, colbert_precision)
        enc = resolve_encoder(encoder, encoder_options)
        senc = None if sparse is None else sparse_index.resolve_encoder(sparse, sparse_options)
        chunker = Chunker(enc, chunking)
        meta = new_manifest(
            enc, dim, precision=precision, bm25=bm25, chunking=chunking, chunker=chunker,
            ann=ann, encoder_options=encoder_options, sparse=senc,
            sparse_options=sparse_options, colbert_record=colbert_record,
        )  # fmt: skip
        path.mkdir(parents=True, exist_ok=True)
        fd = lock(path)
        try:
            store = DocStore(path, create=True)
            fields = create_fields(path, meta, enc, senc, cenc)
            try:
                manifest.write_manifest(path, meta)
            except TypeError as exc:
                (path / manifest.FILE).unlink(missing_ok=True)
                raise InvalidInput(f"encoder_options must be JSON-serialisable: {exc}") from exc
            return cls(path, meta, enc, store, fields, fd)
        except BaseException:
            os.close(fd)
            raise

    @classmethod
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
            sparse: for an index with sparse postings: None loads the recorded sparse model
                when first needed; a name or SparseEncoder must have the recorded model_id.
            colbert: for an index with ColBERT token vectors: None loads the recorded model
                (with its recorded options) when first needed; a name or
                LateInteractionEncoder must have the recorded model_id, dimension and
                document settings.

        Raises:
            IndexCorrupt: not an index, or unreadable parts.
            IndexLocked: another writer holds the lock (only when not ``readonly``).
            DimensionMismatch: the encoder's dimension differs from the recorded one.
            ModelMismatch: the encoder's (or the sparse or ColBERT model's) model_id differs
                from the recorded one.
        """
        path = Path(path)
        if not path.is_dir():
            raise IndexNotFound(
                f"no index at {path}: create one with Index.create()", location=str(path)
            )
        meta = manifest.read_manifest(path)
        enc, senc, cenc = open_encoders(path, meta, encoder, sparse, colbert)
        fd = None if readonly else lock(path)
        try:
            store = DocStore(path, readonly=readonly)
            fields = open_fields(path, meta, enc, readonly=readonly, sparse=senc, colbert=cenc)
            index = cls(path, meta, enc, store, fields, fd)
            if not readonly:
                _maintenance.recover(path, fields, index._snap)
                index._reload()
        except BaseException:
            if fd is not None:
                os.close(fd)
            raise
        return index

    def close(self) -> None:
        """Release the write lock and the database connection (idempotent)."""
        if self._closed:
            return
        self._closed = True
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

        Raises:
            InvalidInput: the index has no such field.
        """
        for f in self._fields:
            if f.name == name:
                return f
        if name in _NOT_STORED:
            raise _NOT_STORED[name](self.path)
        raise InvalidInput(f"{self.path} has no {name!r} field")

    def _use(self, snap: Snapshot) -> None:
        for f in self._fields:
            f.refresh(snap)
        snap.version = version(self._store, self._fields)
        self._snap = snap
        self._known_keys.clear()

    def _reload(self) -> None:
        self._use(load_snapshot(self._store, self._fields))

    def _refresh(self) -> None:
        """Readers: reload when another process committed since the last call."""
        if self._closed:
            raise InvalidInput(f"the index at {self.path} is closed")
        if self.readonly and version(self._store, self._fields) != self._snap.version:
            self._reload()

    def _writable(self) -> None:
        if self._closed:
            raise InvalidInput(f"the index at {self.path} is closed")
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
        batch = validate_docs(docs)
        existing = self._store.existing([d.id for d in batch])
        for doc in batch:
            if doc.id in existing:
                raise InvalidInput(
                    f"document {doc.position}: id {doc.id!r} is already in the index; use "
                    "upsert() to replace it"
                )
        n_chunks = self._write(batch, [])
        return AddResult(added=len(batch), chunks=n_chunks)

    def upsert(self, docs: Iterable[dict[str, Any]]) -> AddResult:
        """Add new documents and replace changed ones, as one atomic batch.

        A document whose content hash (sha256 of title, text and metadata) equals the
        stored one is skipped and not re-embedded.

        Raises:
            InvalidInput: as :meth:`add`, except that existing ids are allowed.
        """
        self._writable()
        batch = validate_docs(docs)
        existing = self._store.existing([d.id for d in batch])
        changed = [d for d in batch if existing.get(d.id, (0, ""))[1] != d.content_hash]
        replaced = [existing[d.id][0] for d in changed if d.id in existing]
        n_chunks = self._write(changed, replaced)
        return AddResult(added=len(changed) - len(replaced), updated=len(replaced),
                         unchanged=len(batch) - len(changed), chunks=n_chunks)  # fmt: skip

    def _write(self, batch: Sequence[Any], replaced: list[int]) -> int:
        if not batch:
            return 0
        try:
            n_chunks, snap = _writes.write_batch(
                self._store, self._fields, self._chunker, self._snap, batch, replaced
            )
        except BaseException:
            self._known_keys.clear()
            raise
        self._use(snap)
        return n_chunks

    def delete(self, ids: Iterable[str]) -> int:
        """Delete documents by id; returns how many were deleted.

        Raises:
            InvalidInput: an id not in the index (all are named, up to 5); nothing changes.
        """
        self._writable()
        wanted = check_ids(ids)
        existing = self._store.existing(wanted)
        missing = [i for i in wanted if i not in existing]
        if missing:
            raise InvalidInput(f"ids not in the index: {missing[:5]}; nothing was deleted")
        if not wanted:
            return 0
        keys = [existing[i][0] for i in wanted]
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

        Raises:
            InvalidInput: as :meth:`search_many`, or a ``pipeline`` that is not built (a
                name, string, dict or path).
        """
        if not isinstance(query, str):
            raise InvalidInput(f"a query must be str, got {type(query).__name__}")
        opts = SearchOptions.build(options, **kwargs)
        if pipeline is None:
            return self.search_many([query], opts)[0]
        if not isinstance(pipeline, SearchPlan):
            raise InvalidInput(
                f"pipeline must be a built pipeline, got {type(pipeline).__name__}: build it "
                "with embedstack.pipeline.Pipeline(spec, index=index)"
            )
        return pipeline.run(self, query, opts.k, filter=opts.filter or None)

    def search_many(
        self, queries: Sequence[str], options: SearchOptions | None = None, **kwargs: Any
    ) -> list[list[Hit]]:
        """Search several queries at once (query encoding is batched).

        Args:
            queries: non-blank query strings.
            mode: ``"dense"`` (cosine over chunk vectors, max per document), ``"bm25"``,
                ``"sparse"`` (SPLADE dot product over chunk postings, max per document; indexes
                created with ``sparse=``), or ``"hybrid"`` (``retrievers``, fused).
            k: results per query, ``>= 1``.
            filter: a metadata filter (see :mod:`embedstack.index.filters`), applied before
                top-k so ``k`` results come back whenever ``k`` documents match. A key no
                document has is an error.
            fusion: ``"rrf"`` (Cormack et al. 2009) or ``"weighted"`` (Bruch et al. 2023).
            alpha: weighted fusion: weight of the dense scores (BM25 gets ``1 - alpha``).
            rrf_k: RRF's constant (60, as in the paper).
            candidates: hybrid: documents taken from each retriever before fusion (at least
                ``k``); see :mod:`embedstack.index.search` for why 100.
            normalization: weighted fusion: ``"minmax"`` or ``"zscore"``.
            retrievers: hybrid: which of ``"bm25"``, ``"dense"``, ``"sparse"`` to fuse
                (default ``("bm25", "dense")``); with weighted fusion and three retrievers
                ``alpha`` is not used and each gets weight 1/3.

        Returns:
            One list of at most ``k`` :class:`Hit` per query, best first.

        Raises:
            InvalidInput: an empty query, ``k <= 0``, an unknown mode, fusion, retriever or
                normalization, a bad filter or a filter on a key no document has, or
                ``"sparse"`` on an index without sparse postings.
        """
        opts = SearchOptions.build(options, **kwargs)
        qs = check_queries(queries)
        retrievers: dict[str, Retriever] = {}
        for name in active_retrievers(opts):
            found = self.field(name)
            if not isinstance(found, Retriever):
                raise InvalidInput(f"the {name!r} field of {self.path} cannot rank documents")
            retrievers[name] = found
        self._refresh()
        return search_many(self._store, self._snap, retrievers, self._known_keys, qs, opts)

    def _rescore(self, name: str, query: str, ids: list[str], first_only: bool) -> FloatArray:
        scorer = self.field(name)
        if not isinstance(scorer, Rescorer):
            raise InvalidInput(f"the {name!r} field of {self.path} cannot rescore documents")
        keys, rows = candidate_rows(self._store, self._snap, ids, first_only)
        return best_per_document(ids, keys, scorer.score_rows(query, self._snap, rows))

    def dense_scores(self, query: str, doc_ids: Sequence[str]) -> np.ndarray:
        """Score given documents against ``query`` with their stored chunk vectors.

        Only the query is encoded; each document scores the maximum over its chunks, as in
        dense search (see :mod:`embedstack.index.rescoring`).

        Args:
            query: a non-blank query.
            doc_ids: document ids, any order, repeats allowed.

        Returns:
            ``(len(doc_ids),)`` float32, ``-inf`` for an id the index does not hold.

        Raises:
            InvalidInput: an empty query or a non-str id.
        """
        self._refresh()
        ids = check_request(query, doc_ids)
        if not ids:
            return np.zeros(0, dtype=np.float32)
        return self._rescore("dense", query, ids, first_only=False)

    @property
    def colbert_model(self) -> str | None:
        """The model_id of the stored ColBERT token vectors, or None when the index stores
        none (it was created without ``colbert=``)."""
        record = self.manifest.get("colbert")
        return str(record["model_id"]) if record else None

    def colbert_scores(
        self, query: str, doc_ids: Sequence[str], *, chunks: Literal["all", "first"] = "all"
    ) -> np.ndarray:
        """Score given documents against ``query`` by ColBERT MaxSim over their stored token
        vectors (Khattab & Zaharia 2020).

        Only the query is encoded (``encode_queries`` of the index's ColBERT encoder); only
        the candidates' token rows are read. Each document scores the maximum over its
        chunks, as in dense search (see :mod:`embedstack.index.late`). An index created with
        a split cross-encoder (:class:`~embedstack.rerank.SplitCrossEncoder`) stores its
        document states instead, and the score is that model's, from its layers above the
        split.

        Args:
            query: a non-blank query.
            doc_ids: document ids, any order, repeats allowed.
            chunks: ``"all"`` (max over a document's chunks) or ``"first"`` (its first
                chunk only: title and the start of the text, the passage a cross-encoder
                reads at query time, at a fraction of the cost for long documents).

        Returns:
            ``(len(doc_ids),)`` float32, ``-inf`` for an id the index does not hold.

        Raises:
            InvalidInput: an empty query, a non-str id, or an index created without
                ``colbert=``.

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
        sizes, deleted = _maintenance.sizes(self.path, self._fields)
        enc = self.manifest["encoder"]
        return IndexStats(
            n_docs=len(self._snap.live),
            n_chunks=int(sum(int(m.sum()) for m in self._snap.masks())),
            n_deleted=deleted,
            bytes=sizes,
            segments=len(self._snap.segments),
            model=enc["name"],
            model_id=enc["model_id"],
            dim=self.dim,
            precision=self.precision,
        )

    def check(self) -> None:
        """Verify the whole index; raises :class:`IndexCorrupt` naming what is wrong."""
        if self._closed:
            raise InvalidInput(f"the index at {self.path} is closed")
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
